//! The `[[proxy]]` listeners and the `[egress]` policy of a node's config.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use ipnet::IpNet;
use serde::Deserialize;

use super::{invalid, ConfigError};

/// A proxy listener: applications connect to it, their flows leave the mesh at an
/// egress node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyListener {
    pub listen: SocketAddr,
    pub protocol: ProxyProtocol,
    /// Egress nodes by name, in order of preference; empty: the node that advertises
    /// the destination's prefix.
    pub egress: Vec<String>,
    /// Username and password a client must give; `None`: none asked for.
    pub credentials: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// SOCKS5 (RFC 1928): CONNECT and UDP ASSOCIATE.
    Socks5,
    /// HTTP: CONNECT and requests with an absolute URI.
    Http,
}

impl ProxyProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyProtocol::Socks5 => "socks5",
            ProxyProtocol::Http => "http",
        }
    }
}

/// Where proxied flows of other nodes may go when they leave the mesh at this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSection {
    /// Destination prefixes allowed.
    pub allow: Vec<IpNet>,
    /// Destination ports allowed.
    pub ports: Vec<RangeInclusive<u16>>,
}

impl EgressSection {
    /// Whether a flow may go to `addr`. Loopback destinations (this machine's own
    /// services) need a prefix inside loopback in `allow`: `0.0.0.0/0` alone does not
    /// reach them.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        if !self.ports.iter().any(|p| p.contains(&addr.port())) {
            return false;
        }
        self.allow
            .iter()
            .filter(|net| !ip.is_loopback() || net.network().is_loopback())
            .any(|net| net.contains(&ip))
    }
}

impl EgressSection {
    /// Whether a packet to `ip` may leave the mesh here: with a port (TCP, UDP) as a
    /// flow to that port may; without one (ICMP and the rest), by address alone.
    pub fn allows_packet(&self, ip: IpAddr, port: Option<u16>) -> bool {
        match port {
            Some(port) => self.allows(SocketAddr::new(ip, port)),
            None => {
                let ip = canonical(ip);
                self.allow
                    .iter()
                    .filter(|net| !ip.is_loopback() || net.network().is_loopback())
                    .any(|net| net.contains(&ip))
            }
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawProxy {
    listen: String,
    protocol: String,
    #[serde(default)]
    egress: Vec<String>,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawEgress {
    allow: Vec<String>,
    ports: Option<Vec<RawPort>>,
}

/// A port (`443`) or a range (`"8000-8100"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPort {
    One(u16),
    Text(String),
}

pub(super) fn proxies(raw: Vec<RawProxy>) -> Result<Vec<ProxyListener>, ConfigError> {
    let mut out: Vec<ProxyListener> = Vec::new();
    for (i, p) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("proxy[{i}].{k}");
        let listen: SocketAddr = p.listen.parse().map_err(|_| {
            invalid(
                key("listen"),
                format!("{:?} is not an address:port", p.listen),
            )
        })?;
        if out.iter().any(|o| o.listen == listen) {
            return Err(invalid(key("listen"), format!("{listen} is used twice")));
        }
        let protocol = match p.protocol.as_str() {
            "socks5" => ProxyProtocol::Socks5,
            "http" => ProxyProtocol::Http,
            other => {
                return Err(invalid(
                    key("protocol"),
                    format!("{other:?} is not \"socks5\" or \"http\""),
                ))
            }
        };
        for name in &p.egress {
            if quicap_pki::validate_node_name(name).is_err() {
                return Err(invalid(
                    key("egress"),
                    format!("{name:?} is not a node name"),
                ));
            }
        }
        let credentials = match (p.username, p.password) {
            (None, None) => None,
            (Some(u), Some(pw)) => {
                // RFC 1929 carries each in at most 255 bytes.
                if u.is_empty() || u.len() > 255 || pw.is_empty() || pw.len() > 255 {
                    return Err(invalid(
                        key("username"),
                        "username and password: 1-255 bytes each",
                    ));
                }
                Some((u, pw))
            }
            _ => {
                return Err(invalid(
                    key("username"),
                    "give both username and password, or neither",
                ))
            }
        };
        if credentials.is_none() && !listen.ip().is_loopback() {
            return Err(invalid(
                key("listen"),
                format!("{listen} is reachable from other machines: give a username and password, or listen on loopback"),
            ));
        }
        out.push(ProxyListener {
            listen,
            protocol,
            egress: p.egress,
            credentials,
        });
    }
    Ok(out)
}

pub(super) fn egress(raw: RawEgress) -> Result<EgressSection, ConfigError> {
    let mut allow = Vec::new();
    for a in raw.allow {
        let net: IpNet = a
            .parse()
            .or_else(|_| a.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| invalid("egress.allow", format!("{a:?} is not a prefix or address")))?;
        allow.push(net.trunc());
    }
    if allow.is_empty() {
        return Err(invalid(
            "egress.allow",
            "name the destinations flows may reach (e.g. [\"0.0.0.0/0\", \"::/0\"])",
        ));
    }
    let ports = match raw.ports {
        None => vec![1..=u16::MAX],
        Some(list) => {
            let mut ports = Vec::new();
            for p in list {
                let range = match p {
                    RawPort::One(n) => n..=n,
                    RawPort::Text(t) => port_range(&t).ok_or_else(|| {
                        invalid(
                            "egress.ports",
                            format!("{t:?} is not a port or a range such as \"8000-8100\""),
                        )
                    })?,
                };
                if *range.start() == 0 {
                    return Err(invalid("egress.ports", "port 0 is no destination"));
                }
                ports.push(range);
            }
            if ports.is_empty() {
                return Err(invalid("egress.ports", "allows no port"));
            }
            ports
        }
    };
    Ok(EgressSection { allow, ports })
}

fn port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let n = text.trim().parse().ok()?;
            (n, n)
        }
    };
    (a <= b).then_some(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], ports: Option<Vec<RawPort>>) -> EgressSection {
        egress(RawEgress {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ports,
        })
        .unwrap()
    }

    #[test]
    fn the_policy_allows_prefixes_and_ports_and_loopback_only_by_name() {
        let p = policy(
            &["0.0.0.0/0", "::/0"],
            Some(vec![RawPort::One(443), RawPort::Text("8000-8100".into())]),
        );
        let ok = |a: &str| p.allows(a.parse().unwrap());
        assert!(ok("192.0.2.1:443"));
        assert!(ok("[2001:db8::1]:8050"));
        assert!(!ok("192.0.2.1:80"));
        assert!(!ok("127.0.0.1:443"));
        assert!(!ok("[::1]:443"));
        assert!(!ok("[::ffff:127.0.0.1]:443"));
        let local = policy(&["127.0.0.1"], None);
        assert!(local.allows("127.0.0.1:22".parse().unwrap()));
        assert!(!local.allows("127.0.0.2:22".parse().unwrap()));
        let lan = policy(&["10.1.0.0/16"], None);
        assert!(lan.allows("[::ffff:10.1.2.3]:80".parse().unwrap()));
        assert!(!lan.allows("10.2.0.1:80".parse().unwrap()));
    }

    #[test]
    fn bad_policies_are_named() {
        let e = |allow: &[&str], ports: Option<Vec<RawPort>>| {
            egress(RawEgress {
                allow: allow.iter().map(|s| s.to_string()).collect(),
                ports,
            })
            .unwrap_err()
            .to_string()
        };
        assert!(e(&[], None).starts_with("egress.allow:"));
        assert!(e(&["nowhere"], None).starts_with("egress.allow:"));
        assert!(e(&["::/0"], Some(vec![RawPort::Text("9-1".into())])).starts_with("egress.ports:"));
        assert!(e(&["::/0"], Some(vec![RawPort::One(0)])).starts_with("egress.ports:"));
        assert!(e(&["::/0"], Some(vec![])).starts_with("egress.ports:"));
    }
}
