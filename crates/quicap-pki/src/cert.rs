//! Parsed certificates: the CA's and the nodes'.

use rcgen::{KeyPair, PublicKeyData};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authorization::{self, Authorization};
use crate::crl::Crl;
use crate::{asn1_time, format_serial, pem_block, PkiError};

/// A CA certificate: the network's one trust anchor.
#[derive(Debug, Clone)]
pub struct CaCert {
    pub name: String,
    pub der: Vec<u8>,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// DER subject name; node certificates carry it as their issuer.
    pub subject_der: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// A node certificate, parsed but not yet checked against a CA.
#[derive(Debug, Clone)]
pub struct NodeCert {
    /// Node name: the subject common name, also a DNS subject alternative name.
    pub name: String,
    pub serial: Vec<u8>,
    pub issuer: String,
    pub issuer_der: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub authorization: Authorization,
    pub der: Vec<u8>,
    pub spki_der: Vec<u8>,
}

/// A node certificate that was issued by the trusted CA, is within its validity period
/// and is not revoked, as of the `now` given to [`NodeCert::verify`].
///
/// Only [`NodeCert::verify`] makes one, so code that takes a `VerifiedCert` knows the
/// checks ran, and that its name is a valid node name.
#[derive(Debug, Clone)]
pub struct VerifiedCert(NodeCert);

impl VerifiedCert {
    pub fn cert(&self) -> &NodeCert {
        &self.0
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn authorization(&self) -> &Authorization {
        &self.0.authorization
    }
}

/// SHA-256 of any X.509 certificate's SubjectPublicKeyInfo: the public key pin of a
/// web certificate (as curl's `--pinnedpubkey sha256//...` and HPKP compute it).
pub fn spki_sha256(der: &[u8]) -> Result<[u8; 32], PkiError> {
    let cert = parse_x509(der)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Ok(out)
}

fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Malformed {
        what: "certificate",
        detail: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(PkiError::Malformed {
            what: "certificate",
            detail: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(cert)
}

/// The DNS names a certificate of any issuer (a web site's, say) is valid for: its
/// DNS subject alternative names, lowercase, wildcards as written (`*.example.org`);
/// the subject common name if it has none.
pub fn dns_names(der: &[u8]) -> Result<Vec<String>, PkiError> {
    use x509_parser::extensions::GeneralName;
    let cert = parse_x509(der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Malformed {
            what: "certificate",
            detail: e.to_string(),
        })?;
    let mut names: Vec<String> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        let cn = common_name(cert.subject());
        if !cn.is_empty() {
            names.push(cn.to_ascii_lowercase());
        }
    }
    Ok(names)
}

pub(crate) fn common_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .unwrap_or_default()
}

impl CaCert {
    pub fn from_pem(text: &str) -> Result<Self, PkiError> {
        Self::from_der(&pem_block(text, "CERTIFICATE")?)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let cert = parse_x509(der)?;
        if !cert.is_ca() {
            return Err(PkiError::Malformed {
                what: "CA certificate",
                detail: "basic constraints do not say CA:TRUE".into(),
            });
        }
        Ok(CaCert {
            name: common_name(cert.subject()),
            der: der.to_vec(),
            spki_der: cert.public_key().raw.to_vec(),
            subject_der: cert.subject().as_raw().to_vec(),
            not_before: asn1_time(cert.validity().not_before),
            not_after: asn1_time(cert.validity().not_after),
        })
    }

    pub fn pem(&self) -> String {
        crate::to_pem("CERTIFICATE", &self.der)
    }
}

impl NodeCert {
    pub fn from_pem(text: &str) -> Result<Self, PkiError> {
        Self::from_der(&pem_block(text, "CERTIFICATE")?)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let cert = parse_x509(der)?;
        if cert.is_ca() {
            return Err(PkiError::NotANodeCertificate);
        }
        let oid = x509_parser::der_parser::oid::Oid::from(authorization::OID).map_err(|_| {
            PkiError::Malformed {
                what: "authorization OID",
                detail: "not encodable".into(),
            }
        })?;
        let ext = cert
            .get_extension_unique(&oid)
            .map_err(|e| PkiError::Malformed {
                what: "certificate extensions",
                detail: e.to_string(),
            })?
            .ok_or(PkiError::Malformed {
                what: "node certificate",
                detail: "no QUICAP authorization extension (not issued by quicap ca sign?)".into(),
            })?;
        let mut authorization = Authorization::from_der(ext.value)?;
        let egress_oid = x509_parser::der_parser::oid::Oid::from(authorization::EGRESS_OID)
            .map_err(|_| PkiError::Malformed {
                what: "egress OID",
                detail: "not encodable".into(),
            })?;
        let egress = cert
            .get_extension_unique(&egress_oid)
            .map_err(|e| PkiError::Malformed {
                what: "certificate extensions",
                detail: e.to_string(),
            })?;
        authorization.egress = match egress {
            None => false,
            Some(ext) if ext.value == authorization::EGRESS_VALUE => true,
            Some(_) => {
                return Err(PkiError::Malformed {
                    what: "egress extension",
                    detail: "not NULL".into(),
                })
            }
        };
        Ok(NodeCert {
            name: common_name(cert.subject()),
            serial: cert.raw_serial().to_vec(),
            issuer: common_name(cert.issuer()),
            issuer_der: cert.issuer().as_raw().to_vec(),
            not_before: asn1_time(cert.validity().not_before),
            not_after: asn1_time(cert.validity().not_after),
            authorization,
            der: der.to_vec(),
            spki_der: cert.public_key().raw.to_vec(),
        })
    }

    pub fn serial_hex(&self) -> String {
        format_serial(&self.serial)
    }

    /// Errors if `now` is outside the validity period.
    pub fn check_time(&self, now: OffsetDateTime) -> Result<(), PkiError> {
        if now < self.not_before {
            Err(PkiError::NotYetValid(self.not_before))
        } else if now > self.not_after {
            Err(PkiError::Expired(self.not_after))
        } else {
            Ok(())
        }
    }

    /// Errors unless `ca` signed this certificate.
    pub fn check_issuer(&self, ca: &CaCert) -> Result<(), PkiError> {
        let unknown = || PkiError::UnknownIssuer(format!("issued by {:?}", self.issuer));
        if self.issuer_der != ca.subject_der {
            return Err(unknown());
        }
        let cert = parse_x509(&self.der)?;
        let (_, ca_x509) = X509Certificate::from_der(&ca.der).map_err(|_| unknown())?;
        cert.verify_signature(Some(ca_x509.public_key()))
            .map_err(|_| unknown())
    }

    /// Errors unless `key_pem` is the private key of this certificate.
    pub fn check_key(&self, key_pem: &str) -> Result<(), PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::BadKey(e.to_string()))?;
        if key.subject_public_key_info() == self.spki_der {
            Ok(())
        } else {
            Err(PkiError::KeyMismatch)
        }
    }

    /// Runs every check a peer runs on this certificate. The name of a certificate that
    /// passes follows the node name rules ([`crate::validate_node_name`]), so it is safe
    /// to show anywhere.
    pub fn verify(
        self,
        ca: &CaCert,
        crl: Option<&Crl>,
        now: OffsetDateTime,
    ) -> Result<VerifiedCert, PkiError> {
        self.check_issuer(ca)?;
        crate::validate_node_name(&self.name)?;
        self.check_time(now)?;
        if let Some(crl) = crl {
            if crl.is_revoked(&self.serial) {
                return Err(PkiError::Revoked(self.serial_hex()));
            }
        }
        Ok(VerifiedCert(self))
    }
}
