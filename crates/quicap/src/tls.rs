//! TLS 1.3 configuration for node-to-node QUIC: mutual authentication where the network
//! CA is the only trust anchor, the CRL is enforced, and every refusal is logged with
//! its reason.
//!
//! rustls (ring provider) and webpki do the verification; QUICAP wraps their verifiers
//! only to log why a peer was refused. The same configs will serve the TLS/TCP
//! fallback transport.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
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
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .with_crls(self.crls())
            .build()
            .context("building the client certificate verifier")?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("selecting TLS 1.3")?
            .with_client_cert_verifier(Arc::new(LoggingClientVerifier(verifier)))
            .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())
            .context("loading this node's certificate and key")?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// TLS client config: the server must present a certificate for the dialed name.
    pub fn client_config(&self, identity: &Identity) -> Result<rustls::ClientConfig> {
        let provider = provider();
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots()?, provider.clone())
            .with_crls(self.crls())
            .build()
            .context("building the server certificate verifier")?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("selecting TLS 1.3")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LoggingServerVerifier(verifier)))
            .with_client_auth_cert(vec![identity.cert.clone()], identity.key.clone_key())
            .context("loading this node's certificate and key")?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
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

fn presented_name(cert: &CertificateDer<'_>) -> String {
    quicap_pki::NodeCert::from_der(cert)
        .map(|c| c.name)
        .unwrap_or_else(|_| "<not a node certificate>".into())
}

#[derive(Debug)]
struct LoggingClientVerifier(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for LoggingClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                tracing::warn!(
                    peer = %presented_name(end_entity),
                    reason = %refusal_reason(e),
                    "refused incoming peer"
                );
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct LoggingServerVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for LoggingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| {
                tracing::warn!(
                    peer = %server_name.to_str(),
                    presented = %presented_name(end_entity),
                    reason = %refusal_reason(e),
                    "refused peer we dialed"
                );
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
