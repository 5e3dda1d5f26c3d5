//! The tunnel interface: a TUN device created with tun-rs and configured (addresses,
//! MTU, routes, link state) over rtnetlink. Linux only for now; other systems get their
//! own file behind `cfg` when they are supported.

use std::net::IpAddr;

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};
use tun_rs::{AsyncDevice, DeviceBuilder, Layer};

/// A configured TUN interface. Dropping it closes the device, which removes the
/// interface together with its addresses and routes.
pub struct Tun {
    pub device: AsyncDevice,
    pub name: String,
    pub index: u32,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("index", &self.index)
            .finish()
    }
}

/// What the interface should look like.
#[derive(Debug, Clone)]
pub struct TunSpec {
    pub name: String,
    pub mtu: u16,
    pub addresses: Vec<IpNet>,
    pub routes: Vec<IpNet>,
}

impl Tun {
    /// Creates the interface, assigns addresses and routes and brings it up.
    pub async fn create(spec: &TunSpec) -> Result<Tun> {
        let device = DeviceBuilder::new()
            .name(&spec.name)
            .layer(Layer::L3)
            .mtu(spec.mtu)
            .enable(false)
            .build_async()
            .map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (needs root or CAP_NET_ADMIN)"
                } else if e.raw_os_error() == Some(libc::EBUSY) {
                    " (is another quicap using this interface name?)"
                } else {
                    ""
                };
                anyhow!("creating TUN interface {}: {e}{hint}", spec.name)
            })?;
        let name = device.name().unwrap_or_else(|_| spec.name.clone());

        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a netlink socket")?;
        let netlink = tokio::spawn(connection);
        let result = configure(&handle, &name, spec).await;
        netlink.abort();
        let index = result?;
        Ok(Tun {
            device,
            name,
            index,
        })
    }
}

async fn configure(handle: &rtnetlink::Handle, name: &str, spec: &TunSpec) -> Result<u32> {
    let link = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .with_context(|| format!("looking up interface {name}"))?
        .ok_or_else(|| anyhow!("interface {name} vanished after creation"))?;
    let index = link.header.index;
    for addr in &spec.addresses {
        handle
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .execute()
            .await
            .with_context(|| format!("adding address {addr} to {name}"))?;
    }
    handle
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
        handle
            .route()
            .add(msg)
            .execute()
            .await
            .with_context(|| format!("adding route {route} via {name}"))?;
    }
    Ok(index)
}
