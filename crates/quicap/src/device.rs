//! Tunnel interfaces: TUN (Layer 3) and TAP (Layer 2) devices created with tun-rs and
//! configured over rtnetlink (addresses, MTU, routes, bridge, link and carrier state).
//! Linux only for now; other systems get their own file behind `cfg` when supported.

use std::net::IpAddr;
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};
use tracing::warn;
use tun_rs::{AsyncDevice, DeviceBuilder, Layer};

use crate::packet_io::Writer;

/// Which kind of interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Layer 3: IP packets.
    Tun,
    /// Layer 2: Ethernet frames.
    Tap,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tun => "tun",
            Kind::Tap => "tap",
        }
    }
}

/// What an interface should look like.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: Kind,
    pub name: String,
    pub mtu: u16,
    pub addresses: Vec<IpNet>,
    pub routes: Vec<IpNet>,
    /// A Linux bridge to enslave the interface to (TAP only).
    pub bridge: Option<String>,
    /// Ask for virtio-net offloads (TUN only): TSO reads, GRO-coalesced writes.
    pub offload: bool,
}

/// A configured interface. Dropping it closes the device, which removes the interface
/// together with its addresses and routes.
pub struct Interface {
    pub device: AsyncDevice,
    pub index: u32,
    pub spec: Spec,
    /// The interface's one batch writer, shared by every task that writes to it.
    writer: Mutex<Writer>,
}

impl Interface {
    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stages a packet (or frame) for the next [`Interface::flush`].
    pub fn stage(&self, packet: &[u8]) {
        self.writer().stage(&self.device, packet);
    }

    /// Writes what is staged.
    pub fn flush(&self) {
        self.writer().flush(&self.device);
    }

    /// Writes one packet (or frame) now.
    pub fn write_one(&self, packet: &[u8]) {
        let mut writer = self.writer();
        writer.stage(&self.device, packet);
        writer.flush(&self.device);
    }
}

impl std::fmt::Debug for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interface")
            .field("spec", &self.spec)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// An rtnetlink connection, kept for the life of the node.
#[derive(Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Netlink {
    pub fn open() -> Result<Netlink> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a netlink socket")?;
        Ok(Netlink {
            handle,
            task: tokio::spawn(connection),
        })
    }

    /// Creates the interface, assigns addresses and routes, enslaves it to its bridge
    /// and brings it up, with the carrier off if `carrier` is false.
    pub async fn create(&self, spec: &Spec, carrier: bool) -> Result<Interface> {
        let layer = match spec.kind {
            Kind::Tun => Layer::L3,
            Kind::Tap => Layer::L2,
        };
        let build = |offload: bool| {
            DeviceBuilder::new()
                .name(&spec.name)
                .layer(layer)
                .mtu(spec.mtu)
                .offload(offload)
                .enable(false)
                .build_async()
        };
        let offload = spec.offload && spec.kind == Kind::Tun;
        // A failure with offloads may be the kernel refusing them, or anything else
        // (the name in use, no permission): only when the device comes up without them
        // was it the offloads, and worth a warning; otherwise the second error is the
        // one to report.
        let built = match build(offload) {
            Err(e) if offload && e.kind() != std::io::ErrorKind::PermissionDenied => {
                build(false).inspect(|_| {
                    warn!(error = %e, interface = %spec.name, "TUN offloads unavailable; reading and writing one packet at a time");
                })
            }
            other => other,
        };
        let device = built.map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (needs root or CAP_NET_ADMIN)"
            } else if e.raw_os_error() == Some(libc::EBUSY) {
                " (is another quicap using this interface name?)"
            } else {
                ""
            };
            anyhow!(
                "creating {} interface {}: {e}{hint}",
                spec.kind.as_str().to_uppercase(),
                spec.name
            )
        })?;
        let index = self.configure(spec, carrier).await?;
        let writer = Mutex::new(Writer::new(&device));
        Ok(Interface {
            device,
            index,
            spec: spec.clone(),
            writer,
        })
    }

    async fn index_of(&self, name: &str) -> Result<u32> {
        let link = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await
            .with_context(|| format!("looking up interface {name}"))?
            .ok_or_else(|| anyhow!("no interface named {name}"))?;
        Ok(link.header.index)
    }

    async fn configure(&self, spec: &Spec, carrier: bool) -> Result<u32> {
        let name = &spec.name;
        let index = self.index_of(name).await?;
        for addr in &spec.addresses {
            self.handle
                .address()
                .add(index, addr.addr(), addr.prefix_len())
                .execute()
                .await
                .with_context(|| format!("adding address {addr} to {name}"))?;
        }
        if let Some(bridge) = &spec.bridge {
            let bridge_index = self
                .index_of(bridge)
                .await
                .with_context(|| format!("tap.bridge {bridge}"))?;
            self.handle
                .link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .controller(bridge_index)
                        .build(),
                )
                .execute()
                .await
                .with_context(|| format!("adding {name} to bridge {bridge}"))?;
        }
        self.set_carrier(index, carrier)
            .await
            .with_context(|| format!("setting the carrier of {name}"))?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .with_context(|| format!("bringing {name} up"))?;
        for route in &spec.routes {
            let msg = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(route.addr(), route.prefix_len())
                .map_err(|e| anyhow!("route {route}: {e}"))?
                .output_interface(index)
                .build();
            self.handle
                .route()
                .add(msg)
                .execute()
                .await
                .with_context(|| format!("adding route {route} via {name}"))?;
        }
        Ok(index)
    }

    /// Turns the carrier on or off: with it off the interface shows NO-CARRIER and the
    /// kernel treats it as down for routing.
    pub async fn set_carrier(&self, index: u32, on: bool) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).carrier(on).build())
            .execute()
            .await
            .map_err(|e| anyhow!("netlink: {e}"))
    }
}
