//! What a certificate lets a node claim on the overlay: its own addresses and the
//! subnets it may route for.
//!
//! Carried in a non-critical X.509 extension (non-critical so that generic verifiers such
//! as webpki and OpenSSL accept the certificate; QUICAP itself always reads it):
//!
//! ```text
//! id-quicap-authorization OBJECT IDENTIFIER ::= { 1 3 6 1 4 1 61439 1 1 }
//!
//! QuicapAuthorization ::= SEQUENCE {
//!     addresses  SEQUENCE OF IPPrefix,   -- the node's own overlay addresses
//!     subnets    SEQUENCE OF IPPrefix }  -- networks the node may route for
//!
//! IPPrefix ::= SEQUENCE {
//!     address       OCTET STRING (SIZE (4 | 16)),
//!     prefixLength  INTEGER (0..128) }
//!
//! id-quicap-egress OBJECT IDENTIFIER ::= { 1 3 6 1 4 1 61439 1 2 }
//! QuicapEgress ::= NULL   -- present: the node may be the egress of proxied flows
//! ```
//!
//! The egress right is an extension of its own, so that a node that does not know it
//! still reads the certificate.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::PkiError;

/// Object identifier of the authorization extension (provisional private arc).
pub const OID: &[u64] = &[1, 3, 6, 1, 4, 1, 61439, 1, 1];

/// Object identifier of the egress extension.
pub const EGRESS_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 61439, 1, 2];

/// The egress extension's value: DER of NULL.
pub const EGRESS_VALUE: &[u8] = &[0x05, 0x00];

/// Overlay addresses and routable subnets bound into a node certificate.
///
/// `addresses` keep their prefix length (`10.10.0.1/24`): the address is what the node
/// may use as a source, the prefix is the overlay network it configures on its interface.
/// `subnets` are networks (host bits zero) the node may originate traffic from and
/// receive traffic for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorization {
    pub addresses: Vec<IpNet>,
    pub subnets: Vec<IpNet>,
    /// The node may be where proxied flows of other nodes leave the mesh (`quicap ca
    /// sign --egress`); which destinations it serves is its own config's choice.
    pub egress: bool,
}

impl Authorization {
    /// True if the node may send packets with `source` as their source address.
    pub fn permits_source(&self, source: IpAddr) -> bool {
        self.addresses.iter().any(|a| a.addr() == source)
            || self.subnets.iter().any(|s| s.contains(&source))
    }

    /// True if the node may announce `prefix` as reachable through it: inside one of
    /// its subnets, or one of its own addresses (whatever the prefix length).
    pub fn permits_prefix(&self, prefix: &IpNet) -> bool {
        let net = prefix.trunc();
        self.subnets.iter().any(|s| s.contains(&net))
            || self.addresses.iter().any(|a| a.addr() == prefix.addr())
    }

    /// True if `address` (with its prefix) is one of the node's authorized addresses.
    pub fn permits_address(&self, address: &IpNet) -> bool {
        self.addresses.contains(address)
    }

    /// DER encoding of the extension value.
    pub fn to_der(&self) -> Vec<u8> {
        let write_list = |w: yasna::DERWriter<'_>, list: &[IpNet]| {
            w.write_sequence_of(|w| {
                for net in list {
                    w.next().write_sequence(|w| {
                        match net.addr() {
                            IpAddr::V4(a) => w.next().write_bytes(&a.octets()),
                            IpAddr::V6(a) => w.next().write_bytes(&a.octets()),
                        }
                        w.next().write_u8(net.prefix_len());
                    });
                }
            });
        };
        yasna::construct_der(|w| {
            w.write_sequence(|w| {
                write_list(w.next(), &self.addresses);
                write_list(w.next(), &self.subnets);
            });
        })
    }

    /// Parses the extension value; refuses anything that is not exactly the format above.
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let read_list = |r: yasna::BERReader<'_, '_>| -> yasna::ASN1Result<Vec<IpNet>> {
            let mut out = Vec::new();
            r.read_sequence_of(|r| {
                let net = r.read_sequence(|r| {
                    let bytes = r.next().read_bytes()?;
                    let prefix = r.next().read_u8()?;
                    let addr = match bytes.len() {
                        4 => {
                            let mut b = [0u8; 4];
                            b.copy_from_slice(&bytes);
                            IpAddr::from(b)
                        }
                        16 => {
                            let mut b = [0u8; 16];
                            b.copy_from_slice(&bytes);
                            IpAddr::from(b)
                        }
                        _ => return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid)),
                    };
                    IpNet::new(addr, prefix)
                        .map_err(|_| yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid))
                })?;
                out.push(net);
                Ok(())
            })?;
            Ok(out)
        };
        yasna::parse_der(der, |r| {
            r.read_sequence(|r| {
                let addresses = read_list(r.next())?;
                let subnets = read_list(r.next())?;
                Ok(Authorization {
                    addresses,
                    subnets,
                    egress: false,
                })
            })
        })
        .map_err(|e| PkiError::Malformed {
            what: "overlay authorization extension",
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefixes_are_permitted_inside_subnets_or_as_own_addresses() {
        let auth = Authorization {
            addresses: vec!["10.77.0.1/24".parse().unwrap()],
            subnets: vec!["192.168.50.0/24".parse().unwrap()],
            egress: false,
        };
        let ok = |p: &str| auth.permits_prefix(&p.parse().unwrap());
        assert!(ok("192.168.50.0/24"));
        assert!(ok("192.168.50.128/25"));
        assert!(ok("192.168.50.9/24"));
        assert!(ok("10.77.0.1/32"));
        assert!(!ok("192.168.0.0/16"));
        assert!(!ok("192.168.60.0/24"));
        assert!(!ok("10.77.0.0/24"));
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn source_check_uses_exact_address_or_subnet() {
        let auth = Authorization {
            addresses: vec![net("10.10.0.1/24"), net("fd00::1/64")],
            subnets: vec![net("192.168.5.0/24")],
            egress: false,
        };
        assert!(auth.permits_source("10.10.0.1".parse().unwrap()));
        assert!(auth.permits_source("fd00::1".parse().unwrap()));
        assert!(auth.permits_source("192.168.5.77".parse().unwrap()));
        assert!(!auth.permits_source("10.10.0.2".parse().unwrap()));
        assert!(!auth.permits_source("192.168.6.1".parse().unwrap()));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Authorization::from_der(&[]).is_err());
        assert!(Authorization::from_der(&[0x30, 0x03, 0x30, 0x01]).is_err());
        let bad_len = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_sequence_of(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_bytes(&[1, 2, 3]);
                        w.next().write_u8(8);
                    })
                });
                w.next().write_sequence_of(|_| {});
            })
        });
        assert!(Authorization::from_der(&bad_len).is_err());
    }

    proptest! {
        #[test]
        fn from_der_inverts_to_der(
            v4 in proptest::collection::vec((any::<[u8; 4]>(), 0u8..=32), 0..4),
            v6 in proptest::collection::vec((any::<[u8; 16]>(), 0u8..=128), 0..4),
        ) {
            let addresses: Vec<IpNet> = v4.iter().map(|(a, p)| IpNet::new(IpAddr::from(*a), *p).unwrap()).collect();
            let subnets: Vec<IpNet> = v6.iter().map(|(a, p)| IpNet::new(IpAddr::from(*a), *p).unwrap().trunc()).collect();
            let auth = Authorization {
                addresses,
                subnets,
                egress: false,
            };
            prop_assert_eq!(Authorization::from_der(&auth.to_der()).unwrap(), auth);
        }

        #[test]
        fn from_der_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Authorization::from_der(&bytes);
        }
    }
}
