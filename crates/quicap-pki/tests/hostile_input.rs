//! Certificates, CRLs and CSRs from a peer or a file an attacker controls: every parser
//! returns an error instead of panicking, and no change to a signed document gets past
//! its signature check with different contents.
//!
//! Node certificates reach `NodeCert::from_der` from the network (the TLS handshake and
//! flooded node information); CRLs, CA certificates and CSRs come from files.

use std::sync::OnceLock;

use ipnet::IpNet;
use proptest::prelude::*;
use quicap_pki::cert::CaCert;
use quicap_pki::{Authorization, Ca, Crl, NodeCert, NodeRequest, ParsedCsr, SignRequest};
use rand::SeedableRng;
use time::{Duration, OffsetDateTime};

fn now() -> OffsetDateTime {
    time::macros::datetime!(2026-06-01 12:00 UTC)
}

/// Valid documents, made once: the CA, a node certificate it signed, a CRL revoking
/// another node's certificate, and a node's CSR.
struct Fixture {
    ca: CaCert,
    node: NodeCert,
    crl: Crl,
    csr: ParsedCsr,
    csr_der: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let files = Ca::create("testnet", now(), 3650, &mut rng).expect("CA");
        let ca = Ca::load(&files.cert_pem, &files.key_pem).expect("CA loads");
        let sign = |name: &str, rng: &mut rand::rngs::StdRng| {
            let req = NodeRequest::generate(name).expect("key");
            let csr = ParsedCsr::from_pem(&req.csr_pem).expect("CSR");
            let authorization = Authorization {
                addresses: vec!["10.10.0.1/24".parse::<IpNet>().expect("net")],
                subnets: vec!["192.168.5.0/24".parse::<IpNet>().expect("net")],
                egress: false,
            };
            let sign =
                SignRequest::from_csr(&csr, None, authorization, now(), now() + Duration::days(30))
                    .expect("sign request");
            let cert = NodeCert::from_pem(&ca.sign(&sign, rng).expect("signed")).expect("cert");
            (req, csr, cert)
        };
        let (req, csr, node) = sign("node-a", &mut rng);
        let (_, _, revoked) = sign("node-x", &mut rng);
        let crl = Crl::from_pem(
            &ca.issue_crl(None, std::slice::from_ref(&revoked.serial), now())
                .expect("CRL"),
        )
        .expect("CRL parses");
        let csr_der = pem::parse(&req.csr_pem).expect("CSR PEM").into_contents();
        Fixture {
            ca: ca.cert().clone(),
            node,
            crl,
            csr,
            csr_der,
        }
    })
}

/// A change to a document: bytes overwritten, and optionally cut short or grown.
#[derive(Debug, Clone)]
struct Mutation {
    writes: Vec<(prop::sample::Index, u8)>,
    truncate: Option<prop::sample::Index>,
    insert: Option<(prop::sample::Index, Vec<u8>)>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
        prop::option::weighted(
            0.2,
            (
                any::<prop::sample::Index>(),
                prop::collection::vec(any::<u8>(), 1..8),
            ),
        ),
    )
        .prop_map(|(writes, truncate, insert)| Mutation {
            writes,
            truncate,
            insert,
        })
}

impl Mutation {
    fn apply(&self, original: &[u8]) -> Vec<u8> {
        let mut out = original.to_vec();
        for (at, byte) in &self.writes {
            let i = at.index(out.len());
            out[i] = *byte;
        }
        if let Some((at, bytes)) = &self.insert {
            let i = at.index(out.len());
            out.splice(i..i, bytes.iter().copied());
        }
        if let Some(at) = &self.truncate {
            out.truncate(at.index(out.len()));
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_are_refused_without_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(NodeCert::from_der(&bytes).is_err());
        prop_assert!(CaCert::from_der(&bytes).is_err());
        prop_assert!(Crl::from_der(&bytes).is_err());
        prop_assert!(ParsedCsr::from_der(&bytes).is_err());
    }

    #[test]
    fn arbitrary_text_is_refused_without_a_panic(text in "(-----BEGIN [A-Z ]{0,20}-----\n)?[A-Za-z0-9+/=\n]{0,200}(-----END [A-Z ]{0,20}-----\n)?") {
        prop_assert!(NodeCert::from_pem(&text).is_err());
        prop_assert!(CaCert::from_pem(&text).is_err());
        prop_assert!(Crl::from_pem(&text).is_err());
        prop_assert!(ParsedCsr::from_pem(&text).is_err());
    }

    /// A node certificate changed in any way either fails to parse or fails
    /// verification, or says exactly what the CA signed.
    #[test]
    fn a_changed_node_certificate_never_claims_more(m in mutation()) {
        let f = fixture();
        let der = m.apply(&f.node.der);
        // The same bytes read as a CA certificate: refused, no panic.
        let _ = CaCert::from_der(&der);
        let Ok(cert) = NodeCert::from_der(&der) else { return Ok(()) };
        let Ok(verified) = cert.verify(&f.ca, Some(&f.crl), now()) else { return Ok(()) };
        let cert = verified.cert();
        prop_assert_eq!(&cert.name, &f.node.name);
        prop_assert_eq!(&cert.authorization, &f.node.authorization);
        prop_assert_eq!(&cert.serial, &f.node.serial);
        prop_assert_eq!(cert.not_before, f.node.not_before);
        prop_assert_eq!(cert.not_after, f.node.not_after);
        prop_assert_eq!(&cert.spki_der, &f.node.spki_der);
    }

    /// A changed CRL either fails to parse or fails its issuer check, or revokes
    /// exactly what the CA revoked.
    #[test]
    fn a_changed_crl_never_revokes_something_else(m in mutation()) {
        let f = fixture();
        let Ok(crl) = Crl::from_der(&m.apply(&f.crl.der)) else { return Ok(()) };
        if crl.check_issuer(&f.ca).is_ok() {
            prop_assert_eq!(&crl.revoked, &f.crl.revoked);
            prop_assert_eq!(crl.number, f.crl.number);
        }
    }

    /// A changed CSR fails its self-signature, or asks for the same key and name.
    #[test]
    fn a_changed_csr_never_passes_with_another_key(m in mutation()) {
        let f = fixture();
        let Ok(csr) = ParsedCsr::from_der(&m.apply(&f.csr_der)) else { return Ok(()) };
        prop_assert_eq!(&csr.spki_der, &f.csr.spki_der);
        prop_assert_eq!(&csr.common_name, &f.csr.common_name);
    }

    /// A changed CA certificate that still vouches for the node certificate carries
    /// the same public key. (Its SubjectPublicKeyInfo may differ elsewhere: the parser
    /// accepts a wrong tag on the key's algorithm identifier, and the signature check
    /// uses the key bits alone. Harmless, as the CA certificate is the operator's own
    /// file and the key is the same.)
    #[test]
    fn a_changed_ca_certificate_never_vouches_with_another_key(m in mutation()) {
        let f = fixture();
        let Ok(ca) = CaCert::from_der(&m.apply(&f.ca.der)) else { return Ok(()) };
        if f.node.clone().verify(&ca, None, now()).is_ok() {
            prop_assert_eq!(ec_point(&ca.spki_der), ec_point(&f.ca.spki_der));
        }
    }
}

/// The P-256 public key point at the end of a SubjectPublicKeyInfo.
fn ec_point(spki: &[u8]) -> &[u8] {
    &spki[spki.len().saturating_sub(65)..]
}

#[test]
fn the_fixture_verifies_unchanged() {
    // Without this, every property above could pass because nothing ever verified.
    let f = fixture();
    let verified = f
        .node
        .clone()
        .verify(&f.ca, Some(&f.crl), now())
        .expect("verifies");
    assert_eq!(verified.name(), "node-a");
    f.crl.check_issuer(&f.ca).expect("CRL verifies");
    assert_eq!(f.crl.revoked.len(), 1);
    assert!(ParsedCsr::from_der(&f.csr_der).is_ok());
    // The CA's key is an uncompressed P-256 point, the last 65 bytes of its SPKI.
    assert_eq!(f.ca.spki_der.len(), 91);
    assert_eq!(ec_point(&f.ca.spki_der)[0], 4);
}
