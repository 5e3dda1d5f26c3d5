//! The `[masque]` section of a node's config: who may use the HTTP/3 front as a MASQUE
//! proxy (CONNECT-UDP, CONNECT-IP), where its traffic leaves the mesh, and the
//! addresses CONNECT-IP clients get.

use ipnet::IpNet;
use serde::Deserialize;

use super::{invalid, ConfigError};

/// The MASQUE proxy of the HTTP/3 front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqueSection {
    /// Bearer tokens a client may give (`Authorization: Bearer <token>`).
    pub tokens: Vec<String>,
    /// Usernames and passwords a client may give (`Authorization: Basic`).
    pub users: Vec<(String, String)>,
    /// Whether a Concealed proof of a node certificate of this network (RFC 9729)
    /// admits a client.
    pub nodes: bool,
    /// Egress nodes of CONNECT-UDP by name, in order of preference; empty: this node
    /// when its certificate and `[egress]` let it, otherwise the node that advertises
    /// the destination's prefix.
    pub egress: Vec<String>,
    /// CONNECT-IP: the prefixes clients get addresses from, one address of each family
    /// per session. Empty: CONNECT-IP is not served.
    pub addresses: Vec<IpNet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawMasque {
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    nodes: bool,
    #[serde(default)]
    egress: Vec<String>,
    #[serde(default)]
    addresses: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawUser {
    username: String,
    password: String,
}

/// The shortest token taken: a guessable one would open the proxy to anyone.
const MIN_TOKEN: usize = 16;

pub(super) fn masque(raw: RawMasque) -> Result<MasqueSection, ConfigError> {
    for (i, t) in raw.tokens.iter().enumerate() {
        // RFC 6750's token68 characters, so that the header compares byte for byte.
        let token68 = t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
        if t.len() < MIN_TOKEN || !token68 {
            return Err(invalid(
                format!("masque.tokens[{i}]"),
                format!("needs {MIN_TOKEN} or more of the characters A-Z a-z 0-9 - . _ ~ + / ="),
            ));
        }
    }
    let mut users = Vec::new();
    for (i, u) in raw.users.into_iter().enumerate() {
        if u.username.is_empty() || u.username.contains(':') || u.password.is_empty() {
            return Err(invalid(
                format!("masque.users[{i}]"),
                "needs a username without ':' and a password, neither empty",
            ));
        }
        users.push((u.username, u.password));
    }
    if raw.tokens.is_empty() && users.is_empty() && !raw.nodes {
        return Err(invalid(
            "masque",
            "admits nobody: give tokens, users, or nodes = true",
        ));
    }
    for name in &raw.egress {
        if quicap_pki::validate_node_name(name).is_err() {
            return Err(invalid(
                "masque.egress",
                format!("{name:?} is not a node name"),
            ));
        }
    }
    let mut addresses: Vec<IpNet> = Vec::new();
    for a in &raw.addresses {
        let net: IpNet = a
            .parse()
            .map_err(|_| invalid("masque.addresses", format!("{a:?} is not a prefix")))?;
        let net = net.trunc();
        if addresses
            .iter()
            .any(|o| o.addr().is_ipv4() == net.addr().is_ipv4())
        {
            return Err(invalid(
                "masque.addresses",
                "give at most one prefix of each address family",
            ));
        }
        let host_bits = net.max_prefix_len() - net.prefix_len();
        if host_bits < 2 {
            return Err(invalid(
                "masque.addresses",
                format!("{net} leaves no room for clients: give a shorter prefix"),
            ));
        }
        addresses.push(net);
    }
    Ok(MasqueSection {
        tokens: raw.tokens,
        users,
        nodes: raw.nodes,
        egress: raw.egress,
        addresses,
    })
}
