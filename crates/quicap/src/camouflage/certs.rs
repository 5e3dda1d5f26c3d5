//! The web identity of a node in camouflage mode: the operator's web certificates
//! (certbot's files, say), chosen by the SNI a client sends, re-read when they change.
//!
//! A client without a node identity sees only these certificates, never the network
//! CA's. A name no certificate covers, and a ClientHello without SNI, get the first
//! certificate configured, as a web server answers on its default site.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, bail, Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::daemon::identity::read;

/// The files of one web certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebCertFiles {
    /// PEM chain, leaf first (certbot's `fullchain.pem`).
    pub cert: PathBuf,
    /// PEM private key (`privkey.pem`).
    pub key: PathBuf,
}

/// One loaded web certificate and the names it covers.
#[derive(Debug)]
struct Site {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// The web certificates, by name; swapped whole when a file changes.
#[derive(Debug)]
pub struct WebCerts {
    files: Vec<WebCertFiles>,
    provider: Arc<CryptoProvider>,
    sites: RwLock<Arc<Vec<Site>>>,
}

impl WebCerts {
    /// Loads every certificate; any file missing, unreadable or not matching its key
    /// is an error that names it.
    pub fn load(files: Vec<WebCertFiles>, provider: Arc<CryptoProvider>) -> Result<WebCerts> {
        if files.is_empty() {
            bail!("camouflage needs at least one web certificate (web.certs)");
        }
        let sites = load_all(&files, &provider)?;
        Ok(WebCerts {
            files,
            provider,
            sites: RwLock::new(Arc::new(sites)),
        })
    }

    /// Every file the certificates come from, to watch for changes.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .flat_map(|f| [f.cert.clone(), f.key.clone()])
            .collect()
    }

    /// Reads the files again; on an error the certificates in use stay.
    pub fn reload(&self) -> Result<()> {
        let sites = load_all(&self.files, &self.provider)?;
        *self.sites.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(sites);
        Ok(())
    }

    /// Every name covered, in the order configured.
    pub fn names(&self) -> Vec<String> {
        self.current()
            .iter()
            .flat_map(|s| s.names.iter().cloned())
            .collect()
    }

    fn current(&self) -> Arc<Vec<Site>> {
        self.sites.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The certificate for a server name (`None`: no SNI).
    pub fn for_name(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let sites = self.current();
        let wanted = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let found = wanted.as_deref().and_then(|name| {
            sites
                .iter()
                .find(|s| s.names.iter().any(|n| n == name))
                .or_else(|| {
                    sites
                        .iter()
                        .find(|s| s.names.iter().any(|n| wildcard_matches(n, name)))
                })
        });
        found.or_else(|| sites.first()).map(|s| s.key.clone())
    }
}

impl ResolvesServerCert for WebCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.for_name(hello.server_name())
    }
}

/// `*.example.org` covers `www.example.org`, not `example.org` nor `a.b.example.org`.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    name.split_once('.')
        .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix)
}

fn load_all(files: &[WebCertFiles], provider: &Arc<CryptoProvider>) -> Result<Vec<Site>> {
    files.iter().map(|f| load_one(f, provider)).collect()
}

fn load_one(files: &WebCertFiles, provider: &Arc<CryptoProvider>) -> Result<Site> {
    let chain = CertificateDer::pem_slice_iter(read(&files.cert, "web certificate")?.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("web certificate {}: {e}", files.cert.display()))?;
    let leaf = chain.first().ok_or_else(|| {
        anyhow!(
            "web certificate {}: no certificate in it",
            files.cert.display()
        )
    })?;
    let names = quicap_pki::cert::dns_names(leaf)
        .with_context(|| format!("web certificate {}", files.cert.display()))?;
    if names.is_empty() {
        bail!(
            "web certificate {}: names no DNS name (no subject alternative name, no common name)",
            files.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_slice(read(&files.key, "web key")?.as_bytes())
        .map_err(|e| anyhow!("web key {}: {e}", files.key.display()))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        anyhow!(
            "web certificate {} with key {}: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    Ok(Site {
        names,
        key: Arc::new(certified),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write_cert(dir: &Path, stem: &str, names: &[&str]) -> WebCertFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = WebCertFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn leaf_names(key: &CertifiedKey) -> Vec<String> {
        quicap_pki::cert::dns_names(key.end_entity_cert().unwrap()).unwrap()
    }

    #[test]
    fn the_certificate_is_chosen_by_name_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let certs = WebCerts::load(
            vec![
                write_cert(dir.path(), "a", &["www.example.org", "example.org"]),
                write_cert(dir.path(), "b", &["*.example.net"]),
            ],
            crate::tls::provider(),
        )
        .unwrap();
        let pick = |sni: Option<&str>| leaf_names(&certs.for_name(sni).unwrap());
        assert_eq!(pick(Some("example.org"))[1], "example.org");
        assert_eq!(pick(Some("WWW.Example.ORG."))[0], "www.example.org");
        assert_eq!(pick(Some("cdn.example.net")), ["*.example.net"]);
        // Not covered: the default site's certificate.
        assert_eq!(pick(Some("a.b.example.net"))[0], "www.example.org");
        assert_eq!(pick(Some("example.net"))[0], "www.example.org");
        assert_eq!(pick(None)[0], "www.example.org");
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_cert(dir.path(), "a", &["old.example.org"]);
        let certs = WebCerts::load(vec![files.clone()], crate::tls::provider()).unwrap();
        write_cert(dir.path(), "a", &["new.example.org"]);
        certs.reload().unwrap();
        assert_eq!(certs.names(), ["new.example.org"]);
        std::fs::write(&files.key, "not a key").unwrap();
        let e = certs.reload().unwrap_err();
        assert!(format!("{e:#}").contains("a.key"), "{e:#}");
        assert_eq!(certs.names(), ["new.example.org"]);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_with_both_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_cert(dir.path(), "a", &["a.example.org"]);
        let b = write_cert(dir.path(), "b", &["b.example.org"]);
        let mixed = WebCertFiles {
            cert: a.cert,
            key: b.key,
        };
        let e = WebCerts::load(vec![mixed], crate::tls::provider()).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("a.crt") && text.contains("b.key"), "{text}");
        assert!(WebCerts::load(vec![], crate::tls::provider()).is_err());
    }
}
