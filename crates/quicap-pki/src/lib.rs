//! QUICAP's public-key infrastructure, with no IO and no clock reads.
//!
//! ```text
//!   quicap ca init         quicap cert request          quicap ca sign
//!  +---------------+      +------------------+      +-------------------------+
//!  | CA key + cert | ---> | node key + CSR   | ---> | node cert: name,        |
//!  | empty CRL     |      | (key stays here) |      | overlay addresses,      |
//!  +---------------+      +------------------+      | routable subnets        |
//!          |                                        +-------------------------+
//!          +--- quicap ca revoke ---> CRL (serials of revoked node certificates)
//! ```
//!
//! Everything is standard X.509 in PEM: OpenSSL verifies node certificates against the
//! CA and reads the CRL. What a node may claim on the overlay travels in one private,
//! non-critical extension ([`authorization`]), mirrored in the subject alternative names
//! so generic tools show the addresses too.
//!
//! Every function that depends on time takes `now`; every function that needs
//! randomness for anything but key generation and signing takes an RNG.

pub mod authorization;
pub mod ca;
pub mod cert;
pub mod concealed;
pub mod crl;
pub mod csr;
pub mod show;
pub mod signature;

pub use authorization::Authorization;
pub use ca::{Ca, NewCa, SignRequest};
pub use cert::NodeCert;
pub use crl::Crl;
pub use csr::{NodeRequest, ParsedCsr};
pub use signature::NodeKey;

pub use quicap_wire::NodeId;
use thiserror::Error;
use time::OffsetDateTime;

/// Everything that can go wrong in this crate, one variant per outcome a caller acts on.
#[derive(Debug, Error)]
pub enum PkiError {
    #[error("not a PEM file (expected {expected})")]
    NotPem { expected: &'static str },
    #[error("PEM block is {found}, expected {expected}{}", pem_hint(found))]
    WrongPemLabel {
        found: String,
        expected: &'static str,
    },
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("certificate signing request has an invalid signature")]
    BadCsrSignature,
    #[error("invalid node name {0:?}: use 1-63 lowercase letters, digits and '-' per label, dot-separated")]
    InvalidName(String),
    #[error("invalid private key: {0}")]
    BadKey(String),
    #[error("certificate expired on {}", fmt_time(.0))]
    Expired(OffsetDateTime),
    #[error("certificate is not valid before {}", fmt_time(.0))]
    NotYetValid(OffsetDateTime),
    #[error("certificate was not issued by this CA ({0})")]
    UnknownIssuer(String),
    #[error("certificate is revoked (serial {0})")]
    Revoked(String),
    #[error("signature does not verify with the certificate's key")]
    BadSignature,
    #[error("private key does not match the certificate")]
    KeyMismatch,
    #[error(
        "validity period is empty: {} is not before {}",
        fmt_time(not_before),
        fmt_time(not_after)
    )]
    EmptyValidity {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    #[error("certificate must authorize at least one overlay address")]
    NoAddresses,
    #[error("certificate is a CA certificate, not a node certificate")]
    NotANodeCertificate,
    #[error("signing failed: {0}")]
    Signing(String),
}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError::Signing(e.to_string())
    }
}

/// What a file of the wrong kind probably is, and where it belongs.
fn pem_hint(found: &str) -> &'static str {
    match found {
        "X509 CRL" => " (a CRL: it belongs in node.crl)",
        "CERTIFICATE" => " (a certificate: node.ca takes the CA's ca.crt, node.cert the node's)",
        "PRIVATE KEY" | "EC PRIVATE KEY" => " (a private key: it belongs in node.key)",
        "CERTIFICATE REQUEST" => " (a CSR: sign it with quicap ca sign)",
        _ => "",
    }
}

/// Checks that `name` is usable as a node name: it goes into a DNS subject alternative
/// name, which TLS peers verify, so it follows DNS hostname rules (lowercase only).
pub fn validate_node_name(name: &str) -> Result<(), PkiError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(PkiError::InvalidName(name.to_owned()))
    }
}

/// Formats a time for people: `2026-01-02 03:04:05 UTC`.
pub fn fmt_time(t: &OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Formats a serial number as colon-separated hex, as OpenSSL does.
pub fn format_serial(serial: &[u8]) -> String {
    serial
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn pem_block(text: &str, expected: &'static str) -> Result<Vec<u8>, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|_| PkiError::NotPem { expected })?;
    if pem.label != expected {
        return Err(PkiError::WrongPemLabel {
            found: pem.label,
            expected,
        });
    }
    Ok(pem.contents)
}

pub(crate) fn to_pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The node id of a node name (the name its certificate carries): the first 8 bytes of
/// the name's SHA-256, big-endian.
pub fn node_id(name: &str) -> NodeId {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.as_ref()[..8]);
    NodeId::from_be_bytes(id)
}

pub(crate) fn asn1_time(t: x509_parser::time::ASN1Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_the_sha256_prefix_of_the_name() {
        // SHA-256("node-a") = 66570ff05a207404...
        assert_eq!(node_id("node-a"), NodeId(0x6657_0ff0_5a20_7404));
        assert_ne!(node_id("node-a"), node_id("node-b"));
    }

    #[test]
    fn node_names_follow_hostname_rules() {
        for ok in ["a", "node-1", "gw.site-2", &"x".repeat(63)] {
            assert!(validate_node_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Node",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(validate_node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pem_round_trips_through_parser() {
        for len in 0..70 {
            let der: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            let pem = to_pem("CERTIFICATE", &der);
            let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
            assert_eq!(parsed.contents, der);
        }
    }
}
