//! Loading and checking this node's identity at startup: every file is read, parsed and
//! cross-checked before anything touches the network, so a mistake ends in one clear
//! line instead of a node that cannot talk to anyone.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use quicap_pki::cert::CaCert;
use quicap_pki::{Crl, NodeCert, NodeKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::config::Config;
use crate::tls::{Identity, Trust};

/// This node's verified identity and trust anchors.
#[derive(Debug)]
pub struct Loaded {
    pub identity: Identity,
    pub cert: NodeCert,
    /// The certificate's key, for what the node signs itself (its node information).
    pub key: NodeKey,
    pub ca: CaCert,
    pub crl: Option<Crl>,
}

impl Loaded {
    pub fn trust(&self) -> Trust {
        trust_of(&self.ca, self.crl.as_ref())
    }
}

pub fn trust_of(ca: &CaCert, crl: Option<&Crl>) -> Trust {
    Trust {
        ca: CertificateDer::from(ca.der.clone()),
        crl: crl.map(|c| CertificateRevocationListDer::from(c.der.clone())),
    }
}

/// Reads a PEM file, naming it in the error; a binary file (DER, say) is named as such.
pub fn read(path: &Path, what: &str) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{what} {}: {e}", path.display()))?;
    match String::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => Ok(text),
        _ => bail!(
            "{what} {}: a binary file, expected PEM text (-----BEGIN ...); a DER file converts with openssl (e.g. openssl x509 -inform der -in FILE -out FILE.pem)",
            path.display()
        ),
    }
}

/// Reads and verifies a CRL file against the CA.
pub fn load_crl(path: &Path, ca: &CaCert) -> Result<Crl> {
    let crl = Crl::from_pem(&read(path, "node.crl")?)
        .with_context(|| format!("node.crl {}", path.display()))?;
    if crl.check_issuer(ca).is_err() {
        bail!(
            "node.crl {}: the CRL was issued by {}, not by the CA in node.ca ({}); use the crl.pem of the CA directory that holds node.ca",
            path.display(),
            quicap_wire::Quoted(&crl.issuer),
            quicap_wire::Quoted(&ca.name)
        );
    }
    Ok(crl)
}

/// Loads and cross-checks the node's certificate, key, CA and CRL.
pub fn load(config: &Config, now: OffsetDateTime) -> Result<Loaded> {
    let n = &config.node;
    let ca_pem = read(&n.ca, "node.ca")?;
    let ca = CaCert::from_pem(&ca_pem).with_context(|| format!("node.ca {}", n.ca.display()))?;
    ca.not_after.ge(&now).then_some(()).ok_or_else(|| {
        anyhow!(
            "node.ca {}: CA certificate expired on {}",
            n.ca.display(),
            quicap_pki::fmt_time(&ca.not_after)
        )
    })?;
    let crl = n.crl.as_ref().map(|path| load_crl(path, &ca)).transpose()?;
    let (cert, identity, key) = load_own(config, &ca, crl.as_ref(), now)?;
    Ok(Loaded {
        identity,
        cert,
        key,
        ca,
        crl,
    })
}

/// Loads the node's certificate and key and checks them against the CA, the CRL and
/// the configuration: at startup, and again when the files change while the node runs.
pub fn load_own(
    config: &Config,
    ca: &CaCert,
    crl: Option<&Crl>,
    now: OffsetDateTime,
) -> Result<(NodeCert, Identity, NodeKey)> {
    let n = &config.node;
    let cert_pem = read(&n.cert, "node.cert")?;
    let cert_ctx = || format!("node.cert {}", n.cert.display());
    let cert = NodeCert::from_pem(&cert_pem).with_context(cert_ctx)?;
    let key_pem = read(&n.key, "node.key")?;
    cert.check_key(&key_pem).map_err(|e| match e {
        quicap_pki::PkiError::KeyMismatch => anyhow!(
            "node.key {}: does not belong to {} (use the key made with its CSR)",
            n.key.display(),
            n.cert.display()
        ),
        other => anyhow!("node.key {}: {other}", n.key.display()),
    })?;
    cert.check_issuer(ca)
        .with_context(|| format!("{}: trusted CA is {:?}", cert_ctx(), ca.name))?;
    cert.check_time(now)
        .map_err(|e| anyhow!("{}: {e} (renew it with quicap ca sign)", cert_ctx()))?;
    if let Some(crl) = crl {
        if crl.is_revoked(&cert.serial) {
            bail!(
                "{}: certificate is revoked by {} (serial {})",
                cert_ctx(),
                n.crl.as_deref().unwrap_or(Path::new("the CRL")).display(),
                cert.serial_hex()
            );
        }
    }
    if let Some(name) = &n.name {
        if *name != cert.name {
            bail!(
                "node.name: {name:?} does not match the certificate's name {:?} in {}",
                cert.name,
                n.cert.display()
            );
        }
    }
    for addr in &config.addresses() {
        if !cert.authorization.permits_address(addr) {
            let allowed: Vec<String> = cert
                .authorization
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect();
            bail!(
                "{}.addresses: {addr} is not authorized by {} (it authorizes {})",
                if config
                    .tun
                    .as_ref()
                    .is_some_and(|t| t.addresses.contains(addr))
                {
                    "tun"
                } else {
                    "tap"
                },
                n.cert.display(),
                allowed.join(", ")
            );
        }
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| anyhow!("node.key {}: {e}", n.key.display()))?;
    let signer =
        NodeKey::from_pem(&key_pem).map_err(|e| anyhow!("node.key {}: {e}", n.key.display()))?;
    let identity = Identity {
        cert: CertificateDer::from(cert.der.clone()),
        key,
    };
    Ok((cert, identity, signer))
}
