//! The dialing side of camouflage: a node dials a camouflaged peer as a web client
//! would, checks the peer's web certificate (against roots or a public key pin) before
//! it sends anything of its own, and offers no client certificate.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::ALPN_H3;
use crate::config::PeerWeb;

/// Where the system's roots are read from when neither `web-pin` nor `web-roots` is
/// given (`SSL_CERT_FILE` first, as OpenSSL and curl do).
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// How this node dials one camouflaged peer.
#[derive(Debug)]
pub struct WebDial {
    /// The name asked for (SNI) and checked in the web certificate.
    pub server_name: ServerName<'static>,
    /// The host part of the requests' authority.
    pub host: String,
    /// TLS of the QUIC dials: ALPN `h3`.
    pub quic: Arc<rustls::ClientConfig>,
    /// TLS of the TCP dials: ALPN `http/1.1`, for the upgrade (see [`super::upgrade`]).
    pub tcp: Arc<rustls::ClientConfig>,
}

impl WebDial {
    /// The dial of a peer whose endpoint is `endpoint` (`host:port`).
    pub fn new(web: &PeerWeb, endpoint: &str) -> Result<WebDial> {
        let host = match &web.server_name {
            Some(name) => name.clone(),
            None => endpoint_host(endpoint).to_owned(),
        };
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| anyhow!("{host:?} is not a DNS name or an IP address"))?;
        let provider = crate::tls::provider();
        let verifier: Arc<dyn ServerCertVerifier> = match (&web.pin, &web.roots) {
            (Some(pin), _) => Arc::new(PinVerifier {
                pin: *pin,
                provider: provider.clone(),
            }),
            (None, Some(roots)) => roots_verifier(&read_roots("web-roots", roots)?, &provider)?,
            (None, None) => roots_verifier(
                &system_roots(
                    "the peer's web certificate",
                    "give the peer web-pin or web-roots",
                )?,
                &provider,
            )?,
        };
        // TLS 1.3 only: a node's proof is bound to the session by its exporter.
        let config = |alpn: &[u8]| {
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| anyhow!("web client TLS: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            config.enable_early_data = false;
            anyhow::Ok(Arc::new(config))
        };
        Ok(WebDial {
            server_name,
            host,
            quic: config(ALPN_H3)?,
            tcp: config(super::ALPN_HTTP1)?,
        })
    }

    /// The authority of requests to the peer at `port`.
    pub fn authority(&self, port: u16) -> String {
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

/// The host of `host:port` (brackets of an IPv6 literal removed).
fn endpoint_host(endpoint: &str) -> &str {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn roots_verifier(
    roots: &RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>> {
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
            .build()
            .map_err(|e| anyhow!("web roots: {e}"))?;
    Ok(verifier)
}

/// The roots in the PEM file at `path`, which the config names `key`.
fn read_roots(key: &str, path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).with_context(|| format!("{key} {}", path.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("{key} {}", path.display()))?;
        // A bundle may hold certificates webpki cannot use as anchors; skip them, as
        // TLS clients loading the system's bundle do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        bail!("{key} {}: no usable root certificate in it", path.display());
    }
    Ok(roots)
}

/// The roots of `path`, or the system's: for an upstream site's certificate.
pub(super) fn upstream_roots(path: Option<&Path>) -> Result<RootCertStore> {
    match path {
        Some(path) => read_roots("web.upstream-roots", path),
        None => system_roots("web.upstream's certificate", "give web.upstream-roots"),
    }
}

/// The system's roots, to check `what` with; `instead` says what to configure when
/// there are none.
fn system_roots(what: &str, instead: &str) -> Result<RootCertStore> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let path = from_env
        .into_iter()
        .chain(SYSTEM_ROOTS.iter().map(std::path::PathBuf::from))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "no system roots to check {what} with (none of {}; install ca-certificates, or {instead})",
                SYSTEM_ROOTS.join(", ")
            )
        })?;
    read_roots("system roots", &path)
}

/// Trusts the one certificate whose public key hashes to `pin`, whatever issued it,
/// and checks that the server holds its key (the handshake signature).
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hash = quicap_pki::cert::spki_sha256(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if hash != self.pin {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_hosts_lose_port_and_brackets() {
        assert_eq!(endpoint_host("www.example.com:443"), "www.example.com");
        assert_eq!(endpoint_host("10.0.0.1:4433"), "10.0.0.1");
        assert_eq!(endpoint_host("[fd00::1]:4433"), "fd00::1");
    }

    #[test]
    fn authorities_bracket_ipv6_hosts() {
        let dial = |host: &str| {
            WebDial::new(
                &PeerWeb {
                    server_name: Some(host.into()),
                    pin: Some([0; 32]),
                    roots: None,
                },
                "x:1",
            )
            .unwrap()
        };
        assert_eq!(
            dial("www.example.com").authority(443),
            "www.example.com:443"
        );
        assert_eq!(dial("fd00::1").authority(4433), "[fd00::1]:4433");
    }

    #[test]
    fn missing_roots_are_one_clear_error() {
        let e = read_roots("web-roots", Path::new("/nonexistent/roots.pem")).unwrap_err();
        assert!(
            format!("{e:#}").contains("web-roots /nonexistent/roots.pem"),
            "{e:#}"
        );
    }
}
