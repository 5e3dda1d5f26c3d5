//! Log lines about certificates this node refused, written so that a stranger cannot
//! forge them: the remote address is always there, what the network's CA vouches for is
//! told apart from what the certificate merely claims (labelled `unverified`), every
//! string from the certificate is escaped, and each source gets lines at powers of two
//! of its attempts only ([`LogLimit`]).

use std::net::SocketAddr;

use quicap_pki::NodeCert;
use quicap_wire::{Escaped, Quoted};
use tracing::warn;

use super::limit::{address_source, LogLimit};
use super::TrustState;
use crate::tls::Refusal;

/// What a refused certificate says about its holder.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// The CA signed it (it was refused for its validity or revocation): its name and
    /// serial are facts.
    Signed { name: String, serial: String },
    /// Not signed by the CA: its name is a claim.
    Claimed { name: String },
    /// Not a node certificate at all.
    Unreadable,
}

impl Presented {
    pub fn of(der: &[u8], trust: &TrustState) -> Presented {
        let Ok(cert) = NodeCert::from_der(der) else {
            return Presented::Unreadable;
        };
        match cert.check_issuer(&trust.ca) {
            Ok(()) => Presented::Signed {
                serial: cert.serial_hex(),
                name: cert.name,
            },
            Err(_) => Presented::Claimed { name: cert.name },
        }
    }
}

impl std::fmt::Display for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presented::Signed { name, serial } => {
                write!(f, "certificate of {} (serial {serial})", Escaped(name))
            }
            Presented::Claimed { name } => {
                write!(f, "certificate naming {} (unverified)", Quoted(name))
            }
            Presented::Unreadable => f.write_str("no readable node certificate"),
        }
    }
}

/// Refusals logged per source address (an IPv6 /64 counts as one).
#[derive(Debug, Default)]
pub struct Refusals(LogLimit<std::net::IpAddr>);

impl Refusals {
    /// Logs that an incoming connection from `remote` presented a certificate this
    /// node refused, if this source's count is due a line.
    pub fn incoming(&self, remote: SocketAddr, refusal: &Refusal, trust: &TrustState) {
        let Some(refused) = self.0.hit(address_source(remote.ip())) else {
            return;
        };
        match Presented::of(&refusal.certificate, trust) {
            Presented::Signed { name, serial } => warn!(
                %remote,
                reason = %refusal.reason,
                peer = %Escaped(&name),
                %serial,
                refused,
                "refused incoming peer"
            ),
            Presented::Claimed { name } => warn!(
                %remote,
                reason = %refusal.reason,
                claimed_name_unverified = %Quoted(&name),
                refused,
                "refused incoming peer"
            ),
            Presented::Unreadable => warn!(
                %remote,
                reason = %refusal.reason,
                refused,
                "refused incoming peer: no readable node certificate"
            ),
        }
    }

    /// Whether a refusal of a connection from `remote` after its handshake (a member
    /// that broke the hello) is due a log line; returns the count if so.
    pub fn after_handshake(&self, remote: SocketAddr) -> Option<u64> {
        self.0.hit(address_source(remote.ip()))
    }
}

/// A dial's error when this node refused the certificate the dialed node presented.
pub fn dial_error(refusal: &Refusal, trust: &TrustState) -> String {
    format!(
        "refused its {}: {}",
        Presented::of(&refusal.certificate, trust),
        refusal.reason
    )
}
