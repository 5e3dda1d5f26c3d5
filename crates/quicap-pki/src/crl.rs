//! Certificate revocation lists (RFC 5280 §5), as issued by `quicap ca revoke`.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::cert::CaCert;
use crate::{asn1_time, pem_block, PkiError};

/// A parsed CRL.
#[derive(Debug, Clone)]
pub struct Crl {
    pub issuer: String,
    pub issuer_der: Vec<u8>,
    pub this_update: OffsetDateTime,
    pub next_update: Option<OffsetDateTime>,
    /// The CRL number; each new CRL from `quicap ca revoke` has a higher one.
    pub number: u64,
    /// Revoked serial numbers and when they were revoked.
    pub revoked: BTreeMap<Vec<u8>, OffsetDateTime>,
    pub der: Vec<u8>,
}

impl Crl {
    pub fn from_pem(text: &str) -> Result<Self, PkiError> {
        Self::from_der(&pem_block(text, "X509 CRL")?)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let (_, crl) =
            CertificateRevocationList::from_der(der).map_err(|e| PkiError::Malformed {
                what: "CRL",
                detail: e.to_string(),
            })?;
        let number = match crl.crl_number() {
            None => 0,
            Some(n) => u64::try_from(n).map_err(|_| PkiError::Malformed {
                what: "CRL",
                detail: "CRL number does not fit 64 bits".into(),
            })?,
        };
        Ok(Crl {
            issuer: crate::cert::common_name(crl.issuer()),
            issuer_der: crl.issuer().as_raw().to_vec(),
            this_update: asn1_time(crl.last_update()),
            next_update: crl.next_update().map(asn1_time),
            number,
            revoked: crl
                .iter_revoked_certificates()
                .map(|r| (r.raw_serial().to_vec(), asn1_time(r.revocation_date)))
                .collect(),
            der: der.to_vec(),
        })
    }

    /// Errors unless `ca` issued and signed this CRL.
    pub fn check_issuer(&self, ca: &CaCert) -> Result<(), PkiError> {
        let unknown = || PkiError::UnknownIssuer(format!("CRL issued by {:?}", self.issuer));
        if self.issuer_der != ca.subject_der {
            return Err(unknown());
        }
        let (_, crl) = CertificateRevocationList::from_der(&self.der).map_err(|_| unknown())?;
        let (_, ca_x509) = X509Certificate::from_der(&ca.der).map_err(|_| unknown())?;
        crl.verify_signature(ca_x509.public_key())
            .map_err(|_| unknown())
    }

    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revoked.contains_key(serial)
    }

    pub fn pem(&self) -> String {
        crate::to_pem("X509 CRL", &self.der)
    }
}
