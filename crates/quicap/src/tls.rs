//! TLS 1.3 configuration for node-to-node QUIC: mutual authentication where the network
//! CA is the only trust anchor, the CRL is enforced, and every refusal is reported with
//! its reason.
//!
//! rustls (ring provider) and webpki do the verification; QUICAP wraps their verifiers
//! only to record why a peer was refused, in the [`RefusalSlot`] of the connection, so
//! that the accept or dial path, which knows the remote address, can log it. [`Tls`]
//! holds what every connection's config shares (verifiers, certified key), built once
//! per change of trust or identity; a config per connection then costs a few
//! allocations. The same configs will serve the TLS/TCP fallback transport.

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};

/// ALPN protocol identifier of QUICAP's node-to-node protocol.
pub const ALPN: &[u8] = b"quicap/1";

/// This node's certificate and key, in the forms rustls takes.
#[derive(Debug)]
pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// What this node trusts: the CA, and the CA's newest CRL if one is configured.
#[derive(Debug, Clone)]
pub struct Trust {
    pub ca: CertificateDer<'static>,
    pub crl: Option<CertificateRevocationListDer<'static>>,
}

/// The ring provider with AES-128-GCM preferred: the cheapest AEAD on x86-64 and
/// aarch64 with AES instructions.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// The ring provider as web servers use it: TLS 1.3 suites first, then the TLS 1.2
/// ECDHE suites with AEADs that browsers and curl offer (the camouflage TCP front
/// speaks TLS 1.2 too, as web servers do; node proofs need TLS 1.3).
pub fn web_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as suite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

impl Trust {
    fn roots(&self) -> Result<Arc<RootCertStore>> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| anyhow!("CA certificate is not usable as a trust anchor: {e}"))?;
        Ok(Arc::new(roots))
    }

    fn crls(&self) -> Vec<CertificateRevocationListDer<'static>> {
        self.crl.iter().cloned().collect()
    }

    /// TLS server config: client certificates are mandatory and verified.
    pub fn server_config(&self, identity: &Identity) -> Result<rustls::ServerConfig> {
        Ok(Tls::new(self, identity)?.server(RefusalSlot::default()))
    }

    /// TLS client config: the server must present a certificate for the dialed name.
    pub fn client_config(&self, identity: &Identity) -> Result<rustls::ClientConfig> {
        Ok(Tls::new(self, identity)?.client(RefusalSlot::default()))
    }
}

/// What the TLS configs of all of a node's connections share: the verifiers of its CA
/// and CRL and its certified key.
#[derive(Debug)]
pub struct Tls {
    provider: Arc<CryptoProvider>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<WebPkiServerVerifier>,
    key: Arc<CertifiedKey>,
}

impl Tls {
    pub fn new(trust: &Trust, identity: &Identity) -> Result<Tls> {
        let provider = provider();
        let roots = trust.roots()?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .with_crls(trust.crls())
                .build()
                .context("building the client certificate verifier")?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .with_crls(trust.crls())
            .build()
            .context("building the server certificate verifier")?;
        let key = CertifiedKey::from_der(
            vec![identity.cert.clone()],
            identity.key.clone_key(),
            &provider,
        )
        .context("loading this node's certificate and key")?;
        Ok(Tls {
            provider,
            client_verifier,
            server_verifier,
            key: Arc::new(key),
        })
    }

    /// The server config of one incoming connection; a refused client certificate is
    /// recorded in `refusal`.
    pub fn server(&self, refusal: RefusalSlot) -> rustls::ServerConfig {
        let verifier = LoggingClientVerifier {
            inner: self.client_verifier.clone(),
            refusal,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3")
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(self.key.clone())));
        config.alpn_protocols = vec![ALPN.to_vec()];
        config
    }

    /// The client config of one dial; a refused server certificate is recorded in
    /// `refusal`.
    pub fn client(&self, refusal: RefusalSlot) -> rustls::ClientConfig {
        let verifier = LoggingServerVerifier {
            inner: self.server_verifier.clone(),
            refusal,
        };
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(self.key.clone())));
        config.alpn_protocols = vec![ALPN.to_vec()];
        config
    }
}

/// A certificate the verifier refused: the reason, and the certificate as presented
/// (nothing in it is verified unless the caller checks it).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: String,
    pub certificate: Vec<u8>,
}

/// Where the verifier of one connection records a refusal.
#[derive(Debug, Clone, Default)]
pub struct RefusalSlot(Arc<Mutex<Option<Refusal>>>);

impl RefusalSlot {
    /// The refusal recorded, if any.
    pub fn take(&self) -> Option<Refusal> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn record(&self, err: &rustls::Error, cert: &CertificateDer<'_>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Refusal {
            reason: refusal_reason(err),
            certificate: cert.to_vec(),
        });
    }
}

/// A short, operator-facing reason for a certificate verification failure.
pub fn refusal_reason(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::UnknownIssuer => {
                "unknown issuer (not signed by this network's CA)".into()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not yet valid".into()
            }
            CertificateError::Revoked => "certificate revoked".into(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate is for another node name".into()
            }
            other => format!("invalid certificate: {other:?}"),
        },
        other => other.to_string(),
    }
}

#[derive(Debug)]
struct LoggingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    refusal: RefusalSlot,
}

impl ClientCertVerifier for LoggingClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| self.refusal.record(e, end_entity))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct LoggingServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    refusal: RefusalSlot,
}

impl ServerCertVerifier for LoggingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| self.refusal.record(e, end_entity))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
