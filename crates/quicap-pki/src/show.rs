//! Human-readable descriptions of certificates, CSRs and CRLs (`quicap cert show`).
//!
//! Whoever made the file chose its names: each is shown escaped ([`Escaped`]), so a
//! file cannot write control sequences to the terminal of the CA's operator.

use std::fmt::Write;

use time::OffsetDateTime;

use crate::cert::{CaCert, NodeCert};
use crate::crl::Crl;
use crate::csr::ParsedCsr;
use crate::{fmt_time, format_serial, PkiError};
use quicap_wire::Escaped;

/// Describes the first PEM object in `text`, whatever kind it is.
///
/// `now` is used to say whether a certificate is currently valid.
pub fn describe(text: &str, now: OffsetDateTime) -> Result<String, PkiError> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(text.as_bytes()).map_err(|_| PkiError::NotPem {
            expected: "CERTIFICATE, CERTIFICATE REQUEST or X509 CRL",
        })?;
    let mut out = String::new();
    match pem.label.as_str() {
        "CERTIFICATE" => match NodeCert::from_der(&pem.contents) {
            Ok(cert) => describe_node(&mut out, &cert, now),
            Err(PkiError::NotANodeCertificate) => {
                describe_ca(&mut out, &CaCert::from_der(&pem.contents)?, now)
            }
            Err(e) => return Err(e),
        },
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => {
            let csr = ParsedCsr::from_der(&pem.contents)?;
            let _ = writeln!(out, "Certificate signing request (signature valid)");
            let _ = writeln!(
                out,
                "  name:       {}",
                Escaped(csr.common_name.as_deref().unwrap_or("(none)"))
            );
            if !csr.requested_extensions.is_empty() {
                let _ = writeln!(
                    out,
                    "  requested extensions (ignored by the CA): {}",
                    csr.requested_extensions.len()
                );
            }
        }
        "X509 CRL" => describe_crl(&mut out, &Crl::from_der(&pem.contents)?),
        other => {
            return Err(PkiError::WrongPemLabel {
                found: other.to_owned(),
                expected: "CERTIFICATE, CERTIFICATE REQUEST or X509 CRL",
            })
        }
    }
    Ok(out)
}

fn status(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> &'static str {
    if now < not_before {
        "not yet valid"
    } else if now > not_after {
        "EXPIRED"
    } else {
        "valid"
    }
}

fn describe_node(out: &mut String, cert: &NodeCert, now: OffsetDateTime) {
    let _ = writeln!(out, "Node certificate");
    let _ = writeln!(out, "  name:       {}", Escaped(&cert.name));
    let _ = writeln!(out, "  issuer:     {}", Escaped(&cert.issuer));
    let _ = writeln!(out, "  serial:     {}", cert.serial_hex());
    let _ = writeln!(out, "  not before: {}", fmt_time(&cert.not_before));
    let _ = writeln!(out, "  not after:  {}", fmt_time(&cert.not_after));
    let _ = writeln!(
        out,
        "  status:     {}",
        status(cert.not_before, cert.not_after, now)
    );
    for a in &cert.authorization.addresses {
        let _ = writeln!(out, "  address:    {a}");
    }
    for s in &cert.authorization.subnets {
        let _ = writeln!(out, "  subnet:     {s}");
    }
    if cert.authorization.egress {
        let _ = writeln!(
            out,
            "  egress:     yes (proxied flows may leave the mesh here)"
        );
    }
}

fn describe_ca(out: &mut String, ca: &CaCert, now: OffsetDateTime) {
    let _ = writeln!(out, "CA certificate");
    let _ = writeln!(out, "  name:       {}", Escaped(&ca.name));
    let _ = writeln!(out, "  not before: {}", fmt_time(&ca.not_before));
    let _ = writeln!(out, "  not after:  {}", fmt_time(&ca.not_after));
    let _ = writeln!(
        out,
        "  status:     {}",
        status(ca.not_before, ca.not_after, now)
    );
}

fn describe_crl(out: &mut String, crl: &Crl) {
    let _ = writeln!(out, "Certificate revocation list");
    let _ = writeln!(out, "  issuer:      {}", Escaped(&crl.issuer));
    let _ = writeln!(out, "  number:      {}", crl.number);
    let _ = writeln!(out, "  this update: {}", fmt_time(&crl.this_update));
    if let Some(next) = crl.next_update {
        let _ = writeln!(out, "  next update: {}", fmt_time(&next));
    }
    let _ = writeln!(out, "  revoked:     {}", crl.revoked.len());
    for (serial, when) in &crl.revoked {
        let _ = writeln!(
            out,
            "    {} (since {})",
            format_serial(serial),
            fmt_time(when)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authorization, Ca, SignRequest};
    use rand::SeedableRng;

    #[test]
    fn describes_all_three_kinds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let now = time::macros::datetime!(2026-06-01 12:00 UTC);
        let files = Ca::create("net", now, 100, &mut rng).unwrap();
        let ca = Ca::load(&files.cert_pem, &files.key_pem).unwrap();
        let req = crate::NodeRequest::generate("node-a").unwrap();
        let csr = ParsedCsr::from_pem(&req.csr_pem).unwrap();
        let sign = SignRequest::from_csr(
            &csr,
            None,
            Authorization {
                addresses: vec!["10.1.0.1/24".parse().unwrap()],
                subnets: vec!["192.168.9.0/24".parse().unwrap()],
                egress: false,
            },
            now,
            now + time::Duration::days(1),
        )
        .unwrap();
        let cert = ca.sign(&sign, &mut rng).unwrap();

        let text = describe(&cert, now).unwrap();
        assert!(text.contains("name:       node-a"), "{text}");
        assert!(text.contains("address:    10.1.0.1/24"), "{text}");
        assert!(text.contains("subnet:     192.168.9.0/24"), "{text}");
        assert!(text.contains("status:     valid"), "{text}");
        assert!(describe(&files.cert_pem, now)
            .unwrap()
            .contains("CA certificate"));
        assert!(describe(&req.csr_pem, now)
            .unwrap()
            .contains("name:       node-a"));
        assert!(describe(&files.crl_pem, now)
            .unwrap()
            .contains("revoked:     0"));
        assert!(describe(&req.key_pem, now).is_err());
    }

    #[test]
    fn names_from_a_file_reach_the_terminal_escaped() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "evil\n  status:     valid\u{1b}[2J",
        );
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let text = describe(&csr, time::OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            text,
            "Certificate signing request (signature valid)\n  name:       evil\\u{a}  status:     valid\\u{1b}[2J\n"
        );
    }
}
