//! The network CA: creation, node certificate issuance and revocation.

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, PublicKeyData, RevokedCertParams, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use time::{Duration, OffsetDateTime};

use crate::authorization::{self, Authorization};
use crate::cert::CaCert;
use crate::crl::Crl;
use crate::csr::ParsedCsr;
use crate::{validate_node_name, PkiError};

/// How long a new CRL claims to be current. Nodes do not enforce it by default (see
/// `docs/pki.md`); it is there for tools such as `openssl crl` that expect one.
pub const CRL_VALIDITY: Duration = Duration::days(365);

/// The files a new CA consists of.
#[derive(Debug)]
pub struct NewCa {
    pub cert_pem: String,
    /// Secret: the CA's signing key.
    pub key_pem: String,
    /// An empty CRL, so nodes can point at it from the start.
    pub crl_pem: String,
}

/// A loaded CA: its certificate and the matching signing key.
pub struct Ca {
    cert: CaCert,
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// What the CA is asked to certify; every field is the CA's decision, not the CSR's.
#[derive(Debug, Clone)]
pub struct SignRequest {
    pub name: String,
    /// DER SubjectPublicKeyInfo of the node's key, from its verified CSR.
    pub spki_der: Vec<u8>,
    pub authorization: Authorization,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl SignRequest {
    /// Builds a request from a verified CSR; the name defaults to the CSR's common name.
    pub fn from_csr(
        csr: &ParsedCsr,
        name: Option<&str>,
        authorization: Authorization,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Self, PkiError> {
        let name = match (name, csr.common_name.as_deref()) {
            (Some(n), _) | (None, Some(n)) => n.to_owned(),
            (None, None) => {
                return Err(PkiError::Malformed {
                    what: "certificate signing request",
                    detail: "no subject common name: pass --name".into(),
                })
            }
        };
        Ok(SignRequest {
            name,
            spki_der: csr.spki_der.clone(),
            authorization,
            not_before,
            not_after,
        })
    }
}

fn random_serial(rng: &mut impl RngCore) -> SerialNumber {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    // Positive and exactly 16 bytes long when DER-encoded.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

impl Ca {
    /// Creates a CA named `name`, valid from `now` for `days` days.
    pub fn create(
        name: &str,
        now: OffsetDateTime,
        days: u32,
        rng: &mut impl RngCore,
    ) -> Result<NewCa, PkiError> {
        if name.trim().is_empty() {
            return Err(PkiError::InvalidName(name.to_owned()));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "QUICAP network");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(i64::from(days));
        params.serial_number = Some(random_serial(rng));
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let ca = Ca::load(&cert_pem, &key.serialize_pem())?;
        let crl_pem = ca.issue_crl(None, &[], now)?;
        Ok(NewCa {
            cert_pem,
            key_pem: key.serialize_pem(),
            crl_pem,
        })
    }

    /// Loads a CA from its certificate and key; errors if they do not belong together.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let cert = CaCert::from_pem(cert_pem)?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::BadKey(e.to_string()))?;
        if key.subject_public_key_info() != cert.spki_der {
            return Err(PkiError::KeyMismatch);
        }
        Ok(Ca {
            cert,
            cert_pem: cert_pem.to_owned(),
            key,
        })
    }

    pub fn cert(&self) -> &CaCert {
        &self.cert
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?)
    }

    /// Issues a node certificate; returns it in PEM.
    ///
    /// The certificate is never a CA, carries digitalSignature and both TLS usages, the
    /// node name as CN and DNS SAN, the addresses as IP SANs, the authorization
    /// extension, and a fresh random 128-bit serial.
    pub fn sign(&self, req: &SignRequest, rng: &mut impl RngCore) -> Result<String, PkiError> {
        validate_node_name(&req.name)?;
        if req.authorization.addresses.is_empty() {
            return Err(PkiError::NoAddresses);
        }
        if req.not_before >= req.not_after {
            return Err(PkiError::EmptyValidity {
                not_before: req.not_before,
                not_after: req.not_after,
            });
        }
        if req.not_after > self.cert.not_after {
            return Err(PkiError::Signing(format!(
                "certificate would outlive the CA, which expires on {}",
                crate::fmt_time(&self.cert.not_after)
            )));
        }
        let authorization = Authorization {
            addresses: req.authorization.addresses.clone(),
            subnets: req
                .authorization
                .subnets
                .iter()
                .map(|s| s.trunc())
                .collect(),
            egress: req.authorization.egress,
        };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, req.name.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = std::iter::once(
            req.name
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| PkiError::InvalidName(req.name.clone())),
        )
        .chain(
            authorization
                .addresses
                .iter()
                .map(|a| Ok(SanType::IpAddress(a.addr()))),
        )
        .collect::<Result<_, PkiError>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = req.not_before;
        params.not_after = req.not_after;
        params.serial_number = Some(random_serial(rng));
        params.use_authority_key_identifier_extension = true;
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            authorization::OID,
            authorization.to_der(),
        )];
        if authorization.egress {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    authorization::EGRESS_OID,
                    authorization::EGRESS_VALUE.to_vec(),
                ));
        }
        let public_key = SubjectPublicKeyInfo::from_der(&req.spki_der)?;
        let cert = params.signed_by(&public_key, &self.issuer()?)?;
        Ok(cert.pem())
    }

    /// Issues a new CRL holding everything `previous` revoked plus `serials`, with the
    /// next CRL number; returns it in PEM.
    pub fn issue_crl(
        &self,
        previous: Option<&Crl>,
        serials: &[Vec<u8>],
        now: OffsetDateTime,
    ) -> Result<String, PkiError> {
        if let Some(prev) = previous {
            prev.check_issuer(&self.cert)?;
        }
        let mut revoked = previous.map(|p| p.revoked.clone()).unwrap_or_default();
        for serial in serials {
            revoked.entry(serial.clone()).or_insert(now);
        }
        let number = previous.map_or(1, |p| p.number + 1);
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .into_iter()
                .map(|(serial, when)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: when,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer()?)?.pem()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::NodeCert;
    use crate::csr::NodeRequest;
    use ipnet::IpNet;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-06-01 12:00 UTC)
    }

    fn auth(addrs: &[&str], subnets: &[&str]) -> Authorization {
        Authorization {
            addresses: addrs.iter().map(|a| a.parse::<IpNet>().unwrap()).collect(),
            subnets: subnets
                .iter()
                .map(|a| a.parse::<IpNet>().unwrap())
                .collect(),
            egress: false,
        }
    }

    fn issue(ca: &Ca, name: &str, rng: &mut impl RngCore) -> (NodeRequest, NodeCert) {
        let req = NodeRequest::generate(name).unwrap();
        let csr = ParsedCsr::from_pem(&req.csr_pem).unwrap();
        let sign = SignRequest::from_csr(
            &csr,
            None,
            auth(&["10.10.0.1/24", "fd00::1/64"], &["192.168.5.9/24"]),
            now(),
            now() + Duration::days(30),
        )
        .unwrap();
        let pem = ca.sign(&sign, rng).unwrap();
        (req, NodeCert::from_pem(&pem).unwrap())
    }

    fn new_ca(rng: &mut impl RngCore) -> Ca {
        let files = Ca::create("testnet", now(), 3650, rng).unwrap();
        Ca::load(&files.cert_pem, &files.key_pem).unwrap()
    }

    #[test]
    fn issued_certificate_carries_name_authorization_and_verifies() {
        let mut rng = rng();
        let ca = new_ca(&mut rng);
        let (req, cert) = issue(&ca, "node-a", &mut rng);
        assert_eq!(cert.name, "node-a");
        assert_eq!(cert.issuer, "testnet");
        assert_eq!(
            cert.authorization,
            auth(&["10.10.0.1/24", "fd00::1/64"], &["192.168.5.0/24"])
        );
        cert.check_key(&req.key_pem).unwrap();
        let verified = cert.verify(ca.cert(), None, now()).unwrap();
        assert_eq!(verified.name(), "node-a");
    }

    #[test]
    fn the_egress_right_is_carried_only_when_granted() {
        let mut rng = rng();
        let ca = new_ca(&mut rng);
        let (_, plain) = issue(&ca, "node-a", &mut rng);
        assert!(!plain.authorization.egress);
        let req = NodeRequest::generate("node-e").unwrap();
        let csr = ParsedCsr::from_pem(&req.csr_pem).unwrap();
        let mut granted = auth(&["10.10.0.5/24"], &[]);
        granted.egress = true;
        let sign =
            SignRequest::from_csr(&csr, None, granted, now(), now() + Duration::days(1)).unwrap();
        let cert = NodeCert::from_pem(&ca.sign(&sign, &mut rng).unwrap()).unwrap();
        assert!(cert.authorization.egress);
        assert!(
            cert.verify(ca.cert(), None, now())
                .unwrap()
                .authorization()
                .egress
        );
    }

    #[test]
    fn serials_are_unique_even_for_the_same_key() {
        let mut rng = rng();
        let ca = new_ca(&mut rng);
        let req = NodeRequest::generate("node-a").unwrap();
        let csr = ParsedCsr::from_pem(&req.csr_pem).unwrap();
        let sign = SignRequest::from_csr(
            &csr,
            None,
            auth(&["10.0.0.1/32"], &[]),
            now(),
            now() + Duration::days(1),
        )
        .unwrap();
        let a = NodeCert::from_pem(&ca.sign(&sign, &mut rng).unwrap()).unwrap();
        let b = NodeCert::from_pem(&ca.sign(&sign, &mut rng).unwrap()).unwrap();
        assert_ne!(a.serial, b.serial);
        assert_eq!(a.serial.len(), 16);
    }

    #[test]
    fn validity_is_enforced_at_both_ends() {
        let mut rng = rng();
        let ca = new_ca(&mut rng);
        let (_, cert) = issue(&ca, "node-a", &mut rng);
        assert!(matches!(
            cert.check_time(now() - Duration::seconds(1)),
            Err(PkiError::NotYetValid(_))
        ));
        assert!(matches!(
            cert.check_time(now() + Duration::days(31)),
            Err(PkiError::Expired(_))
        ));
        cert.check_time(now() + Duration::days(29)).unwrap();
    }

    #[test]
    fn certificate_from_another_ca_is_unknown_issuer() {
        let mut rng = rng();
        let ca = new_ca(&mut rng);
        let other = new_ca(&mut rng);
        let (_, cert) = issue(&other, "node-x", &mut rng);
        assert!(matches!(
            cert.verify(ca.cert(), None, now()),
            Err(PkiError::UnknownIssuer(_))
        ));
    }

    #[test]
    fn revocation_accumulates_and_numbers_increase() {
        let mut rng = rng();
        let ca = new_ca(&mut rng);
        let (_, a) = issue(&ca, "node-a", &mut rng);
        let (_, b) = issue(&ca, "node-b", &mut rng);
        let first = Crl::from_pem(
            &ca.issue_crl(None, std::slice::from_ref(&a.serial), now())
                .unwrap(),
        )
        .unwrap();
        let second = Crl::from_pem(
            &ca.issue_crl(Some(&first), std::slice::from_ref(&b.serial), now())
                .unwrap(),
        )
        .unwrap();
        second.check_issuer(ca.cert()).unwrap();
        assert_eq!((first.number, second.number), (1, 2));
        assert!(second.is_revoked(&a.serial) && second.is_revoked(&b.serial));
        assert!(matches!(
            a.verify(ca.cert(), Some(&second), now()),
            Err(PkiError::Revoked(_))
        ));
    }

    #[test]
    fn crl_from_another_ca_is_refused() {
        let mut rng = rng();
        let ca = new_ca(&mut rng);
        let other = new_ca(&mut rng);
        let crl = Crl::from_pem(&other.issue_crl(None, &[], now()).unwrap()).unwrap();
        assert!(crl.check_issuer(ca.cert()).is_err());
    }

    #[test]
    fn wrong_key_is_detected() {
        let mut rng = rng();
        let ca = new_ca(&mut rng);
        let (_, cert) = issue(&ca, "node-a", &mut rng);
        let other = NodeRequest::generate("node-a").unwrap();
        assert!(matches!(
            cert.check_key(&other.key_pem),
            Err(PkiError::KeyMismatch)
        ));
    }

    #[test]
    fn sign_refuses_empty_validity_and_no_addresses() {
        let mut rng = rng();
        let ca = new_ca(&mut rng);
        let req = NodeRequest::generate("node-a").unwrap();
        let csr = ParsedCsr::from_pem(&req.csr_pem).unwrap();
        let empty =
            SignRequest::from_csr(&csr, None, auth(&[], &[]), now(), now() + Duration::days(1))
                .unwrap();
        assert!(matches!(
            ca.sign(&empty, &mut rng),
            Err(PkiError::NoAddresses)
        ));
        let backwards =
            SignRequest::from_csr(&csr, None, auth(&["10.0.0.1/24"], &[]), now(), now()).unwrap();
        assert!(matches!(
            ca.sign(&backwards, &mut rng),
            Err(PkiError::EmptyValidity { .. })
        ));
    }

    #[test]
    fn ca_key_must_match_ca_cert() {
        let mut rng = rng();
        let a = Ca::create("a", now(), 10, &mut rng).unwrap();
        let b = Ca::create("b", now(), 10, &mut rng).unwrap();
        assert!(matches!(
            Ca::load(&a.cert_pem, &b.key_pem),
            Err(PkiError::KeyMismatch)
        ));
    }
}
