//! File handling for the PKI commands (`quicap ca ...`, `quicap cert ...`).
//!
//! Secrets are written 0600, and nothing is ever overwritten that would lose a key:
//! existing key files make the command fail instead.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use quicap_pki::{Authorization, Ca, Crl, NodeCert, NodeRequest, ParsedCsr, SignRequest};
use time::{Duration, OffsetDateTime};

use crate::daemon::identity::read;

/// File names inside a CA directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const CA_CRL: &str = "crl.pem";

/// How far back a new certificate's validity starts, to tolerate clock skew.
const SKEW: Duration = Duration::minutes(5);

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow!(
                    "{} already exists; refusing to overwrite it",
                    path.display()
                )
            } else {
                anyhow!("writing {}: {e}", path.display())
            }
        })?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Replaces `path` atomically (write to a temporary file, then rename).
fn replace(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, contents, mode)?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))
}

/// `quicap ca init`
pub fn ca_init(name: &str, out: &Path, days: u32) -> Result<()> {
    ensure_dir(out)?;
    let key_path = out.join(CA_KEY);
    if key_path.exists() {
        bail!(
            "{} already exists; refusing to overwrite a CA key",
            key_path.display()
        );
    }
    let files = Ca::create(name, OffsetDateTime::now_utc(), days, &mut rand::rng())?;
    write_new(&key_path, &files.key_pem, 0o600)?;
    write_new(&out.join(CA_CERT), &files.cert_pem, 0o644)?;
    write_new(&out.join(CA_CRL), &files.crl_pem, 0o644)?;
    println!(
        "created CA {name:?} in {}: {CA_CERT} (give to every node), {CA_KEY} (keep secret), {CA_CRL}",
        out.display()
    );
    Ok(())
}

/// `quicap cert request`
pub fn cert_request(name: &str, out: &Path) -> Result<()> {
    ensure_dir(out)?;
    let key_path = out.join(format!("{name}.key"));
    let csr_path = out.join(format!("{name}.csr"));
    let req = NodeRequest::generate(name)?;
    write_new(&key_path, &req.key_pem, 0o600)?;
    write_new(&csr_path, &req.csr_pem, 0o644)?;
    println!(
        "wrote {} (keep it on this node) and {} (send it to the CA)",
        key_path.display(),
        csr_path.display()
    );
    Ok(())
}

fn load_ca(dir: &Path) -> Result<Ca> {
    let cert = read(&dir.join(CA_CERT), "CA certificate")?;
    let key = read(&dir.join(CA_KEY), "CA key")?;
    Ca::load(&cert, &key).with_context(|| format!("loading the CA in {}", dir.display()))
}

/// Options of `quicap ca sign`.
#[derive(Debug)]
pub struct SignOptions {
    pub ca: PathBuf,
    pub csr: PathBuf,
    pub name: Option<String>,
    pub addresses: Vec<IpNet>,
    pub subnets: Vec<IpNet>,
    pub egress: bool,
    pub days: u32,
    pub valid_from: Option<OffsetDateTime>,
    pub valid_until: Option<OffsetDateTime>,
    pub out: PathBuf,
    pub force: bool,
}

/// `quicap ca sign`
pub fn ca_sign(o: &SignOptions) -> Result<()> {
    let ca = load_ca(&o.ca)?;
    let csr_text = read(&o.csr, "CSR")?;
    let csr = ParsedCsr::from_pem(&csr_text).with_context(|| format!("CSR {}", o.csr.display()))?;
    let now = OffsetDateTime::now_utc();
    let not_before = o.valid_from.unwrap_or(now - SKEW);
    let not_after = o
        .valid_until
        .unwrap_or(now + Duration::days(i64::from(o.days)));
    let req = SignRequest::from_csr(
        &csr,
        o.name.as_deref(),
        Authorization {
            addresses: o.addresses.clone(),
            subnets: o.subnets.clone(),
            egress: o.egress,
        },
        not_before,
        not_after,
    )?;
    let pem = ca.sign(&req, &mut rand::rng())?;
    if o.force {
        replace(&o.out, &pem, 0o644)?;
    } else {
        write_new(&o.out, &pem, 0o644)?;
    }
    let cert = NodeCert::from_pem(&pem)?;
    println!(
        "issued {} for {} (serial {}, valid until {})",
        o.out.display(),
        cert.name,
        cert.serial_hex(),
        quicap_pki::fmt_time(&cert.not_after)
    );
    Ok(())
}

/// `quicap ca revoke`
pub fn ca_revoke(dir: &Path, cert_path: &Path) -> Result<()> {
    let ca = load_ca(dir)?;
    let cert = NodeCert::from_pem(&read(cert_path, "certificate")?)
        .with_context(|| format!("certificate {}", cert_path.display()))?;
    cert.check_issuer(ca.cert())
        .with_context(|| format!("certificate {}", cert_path.display()))?;
    let crl_path = dir.join(CA_CRL);
    let previous = if crl_path.exists() {
        Some(
            Crl::from_pem(&read(&crl_path, "CRL")?)
                .with_context(|| format!("CRL {}", crl_path.display()))?,
        )
    } else {
        None
    };
    if previous
        .as_ref()
        .is_some_and(|p| p.is_revoked(&cert.serial))
    {
        println!(
            "{} (serial {}) is already revoked",
            cert.name,
            cert.serial_hex()
        );
        return Ok(());
    }
    let pem = ca.issue_crl(
        previous.as_ref(),
        std::slice::from_ref(&cert.serial),
        OffsetDateTime::now_utc(),
    )?;
    replace(&crl_path, &pem, 0o644)?;
    println!(
        "revoked {} (serial {}); distribute {} to the nodes",
        cert.name,
        cert.serial_hex(),
        crl_path.display()
    );
    Ok(())
}

/// `quicap cert show`
pub fn cert_show(path: &Path) -> Result<()> {
    let text = read(path, "file")?;
    let out = quicap_pki::show::describe(&text, OffsetDateTime::now_utc())
        .with_context(|| path.display().to_string())?;
    print!("{out}");
    Ok(())
}
