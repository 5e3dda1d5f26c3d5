//! Node key generation and certificate signing requests (PKCS #10).

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use x509_parser::prelude::FromDer;

use crate::{pem_block, validate_node_name, PkiError};

/// A fresh node key and the CSR that asks the CA to certify it.
#[derive(Debug)]
pub struct NodeRequest {
    /// PKCS #8 private key (ECDSA P-256); secret, stays on the node.
    pub key_pem: String,
    pub csr_pem: String,
}

impl NodeRequest {
    /// Generates an ECDSA P-256 key and a CSR whose subject CN is `name`.
    pub fn generate(name: &str) -> Result<Self, PkiError> {
        validate_node_name(name)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key)?;
        Ok(NodeRequest {
            key_pem: key.serialize_pem(),
            csr_pem: csr.pem()?,
        })
    }
}

/// A CSR whose signature has been checked: it proves possession of the key.
///
/// Only the subject common name and the public key are taken from the request;
/// everything else a certificate contains is decided by the CA.
#[derive(Debug, Clone)]
pub struct ParsedCsr {
    /// Subject common name, if the request has one.
    pub common_name: Option<String>,
    /// DER SubjectPublicKeyInfo of the requested key.
    pub spki_der: Vec<u8>,
    /// Names of the extensions the request asked for (shown, never honoured).
    pub requested_extensions: Vec<String>,
}

impl ParsedCsr {
    pub fn from_pem(text: &str) -> Result<Self, PkiError> {
        let der = pem_block(text, "CERTIFICATE REQUEST")
            .or_else(|_| pem_block(text, "NEW CERTIFICATE REQUEST"))?;
        Self::from_der(&der)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
            .map_err(|e| PkiError::Malformed {
                what: "certificate signing request",
                detail: e.to_string(),
            })?;
        csr.verify_signature()
            .map_err(|_| PkiError::BadCsrSignature)?;
        let info = &csr.certification_request_info;
        let common_name = info
            .subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let requested_extensions = csr
            .requested_extensions()
            .map(|exts| exts.map(|e| format!("{e:?}")).collect())
            .unwrap_or_default();
        Ok(ParsedCsr {
            common_name,
            spki_der: info.subject_pki.raw.to_vec(),
            requested_extensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_parses_with_its_name() {
        let req = NodeRequest::generate("node-a").unwrap();
        assert!(req.key_pem.contains("PRIVATE KEY"));
        let csr = ParsedCsr::from_pem(&req.csr_pem).unwrap();
        assert_eq!(csr.common_name.as_deref(), Some("node-a"));
        let key = KeyPair::from_pem(&req.key_pem).unwrap();
        assert_eq!(
            csr.spki_der,
            rcgen::PublicKeyData::subject_public_key_info(&key)
        );
    }

    #[test]
    fn tampered_request_is_refused() {
        let req = NodeRequest::generate("node-a").unwrap();
        let mut der = pem_block(&req.csr_pem, "CERTIFICATE REQUEST").unwrap();
        // Flip a bit inside the subject name.
        let pos = der.windows(6).position(|w| w == b"node-a").unwrap();
        der[pos] ^= 1;
        assert!(matches!(
            ParsedCsr::from_der(&der),
            Err(PkiError::BadCsrSignature)
        ));
    }

    #[test]
    fn invalid_names_are_refused() {
        assert!(matches!(
            NodeRequest::generate("Bad Name"),
            Err(PkiError::InvalidName(_))
        ));
    }

    #[test]
    fn non_pem_input_is_refused() {
        assert!(ParsedCsr::from_pem("hello").is_err());
        assert!(ParsedCsr::from_der(&[0x30, 0x00]).is_err());
    }
}
