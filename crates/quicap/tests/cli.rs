//! The `quicap` command line: PKI commands interoperate with OpenSSL, and every kind of
//! bad input ends in one clear line on stderr and a non-zero exit, never a panic.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn quicap_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(quicap());
    c.args(args);
    c
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a failed run with exactly one stderr line, starting "error:" and containing
/// every needle; returns that line.
fn assert_one_line_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing from: {err}");
    }
    lines[0].to_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn ca_init_protects_its_key_and_never_overwrites_it() {
    let pki = Pki::new("net");
    let ca = pki.ca_dir();
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    let before = std::fs::read(ca.join("ca.key")).expect("key");
    let out = quicap_cmd(&["ca", "init", "--name", "net", "--out"])
        .arg(&ca)
        .output()
        .expect("run");
    assert_one_line_error(&out, &["ca.key", "already exists"]);
    assert_eq!(std::fs::read(ca.join("ca.key")).expect("key"), before);
}

#[test]
fn cert_request_keeps_the_key_private_and_never_overwrites_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(quicap_cmd(&["cert", "request", "--name", "node-x", "--out"]).arg(dir.path()));
    assert_eq!(mode(&dir.path().join("node-x.key")), 0o600);
    let csr = std::fs::read_to_string(dir.path().join("node-x.csr")).expect("csr");
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    let out = quicap_cmd(&["cert", "request", "--name", "node-x", "--out"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_one_line_error(&out, &["node-x.key", "already exists"]);
    let out = quicap_cmd(&["cert", "request", "--name", "Bad_Name", "--out"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_one_line_error(&out, &["invalid node name"]);
}

#[test]
fn openssl_verifies_certificates_and_reads_the_crl() {
    let pki = Pki::new("net");
    let dir = pki.issue(
        "node-a",
        &["10.1.0.1/24", "fd01::1/64"],
        &["--subnet", "192.168.7.0/24"],
    );
    let crt = dir.join("node-a.crt");
    let ca = pki.ca_dir().join("ca.crt");
    let out = run(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca)
        .arg(&crt));
    assert!(stdout(&out).contains(": OK"));

    let show = stdout(&run(quicap_cmd(&["cert", "show"]).arg(&crt)));
    for needle in [
        "name:       node-a",
        "address:    10.1.0.1/24",
        "address:    fd01::1/64",
        "subnet:     192.168.7.0/24",
        "status:     valid",
    ] {
        assert!(show.contains(needle), "{needle:?} missing from:\n{show}");
    }

    run(quicap_cmd(&["ca", "revoke", "--ca"])
        .arg(pki.ca_dir())
        .arg(&crt));
    let crl = pki.ca_dir().join("crl.pem");
    let text = stdout(&run(Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(&crl)));
    let serial = show
        .lines()
        .find_map(|l| l.trim().strip_prefix("serial:"))
        .expect("serial line")
        .trim()
        .replace(':', "")
        .to_uppercase();
    assert!(
        text.contains(&serial),
        "serial {serial} not in CRL:\n{text}"
    );
    assert!(text.contains("X509v3 CRL Number"));
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-crl_check")
        .arg("-CAfile")
        .arg(&ca)
        .arg("-CRLfile")
        .arg(&crl)
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(
        !out.status.success(),
        "openssl accepted a revoked certificate"
    );
    let show_crl = stdout(&run(quicap_cmd(&["cert", "show"]).arg(&crl)));
    assert!(
        show_crl.contains("revoked:     1") && show_crl.contains("number:      2"),
        "{show_crl}"
    );
}

#[test]
fn openssl_csr_is_signed_but_its_ca_request_is_overridden() {
    let pki = Pki::new("net");
    let dir = pki.dir.path();
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(dir.join("o.key")));
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-subj",
            "/CN=sneaky",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=keyCertSign,cRLSign",
            "-key",
        ])
        .arg(dir.join("o.key"))
        .arg("-out")
        .arg(dir.join("o.csr")));
    let crt = dir.join("o.crt");
    let sign = |out: &Path| {
        run(quicap_cmd(&["ca", "sign", "--ip", "10.1.0.9/24", "--ca"])
            .arg(pki.ca_dir())
            .arg("--csr")
            .arg(dir.join("o.csr"))
            .arg("--out")
            .arg(out))
    };
    sign(&crt);
    let text = stdout(&run(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&crt)));
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(!text.contains("Certificate Sign"), "{text}");
    assert!(text.contains("TLS Web Server Authentication, TLS Web Client Authentication"));
    assert!(text.contains("DNS:sneaky"));

    // Signing the same CSR again gives a new serial.
    let crt2 = dir.join("o2.crt");
    sign(&crt2);
    let serial = |p: &PathBuf| {
        stdout(&run(Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(p)))
    };
    assert_ne!(serial(&crt), serial(&crt2));

    // And an existing certificate is not overwritten without --force.
    let out = quicap_cmd(&["ca", "sign", "--ip", "10.1.0.9/24", "--ca"])
        .arg(pki.ca_dir())
        .arg("--csr")
        .arg(dir.join("o.csr"))
        .arg("--out")
        .arg(&crt)
        .output()
        .expect("run");
    assert_one_line_error(&out, &["already exists"]);
}

#[test]
fn pki_commands_reject_bad_input_in_one_line() {
    let pki = Pki::new("net");
    let dir = pki.dir.path();
    std::fs::write(dir.join("garbage.csr"), "hello").expect("write");
    let out = quicap_cmd(&["ca", "sign", "--ip", "10.0.0.1/24", "--ca"])
        .arg(pki.ca_dir())
        .arg("--csr")
        .arg(dir.join("garbage.csr"))
        .arg("--out")
        .arg(dir.join("x.crt"))
        .output()
        .expect("run");
    assert_one_line_error(&out, &["garbage.csr", "not a PEM file"]);

    let out = quicap_cmd(&["cert", "show"])
        .arg(pki.ca_dir().join("ca.key"))
        .output()
        .expect("run");
    assert_one_line_error(&out, &["ca.key"]);
    let out = quicap_cmd(&["cert", "show"])
        .arg(dir.join("missing.crt"))
        .output()
        .expect("run");
    assert_one_line_error(&out, &["missing.crt", "No such file"]);
    let out = quicap_cmd(&[
        "ca",
        "sign",
        "--ip",
        "10.0.0.1/24",
        "--csr",
        "x",
        "--out",
        "y",
        "--ca",
    ])
    .arg(dir.join("no-ca"))
    .output()
    .expect("run");
    assert_one_line_error(&out, &["no-ca", "No such file"]);
}

/// A node directory with a valid config, ready to be broken in one way per test.
struct Setup {
    pki: Pki,
    dir: PathBuf,
    ns: Netns,
}

impl Setup {
    fn new(sign_extra: &[&str]) -> Setup {
        require_root();
        let pki = Pki::new("net");
        let dir = pki.issue("node-a", A_ADDRS, sign_extra);
        write_config(
            &pki,
            &dir,
            &NodeSpec::new("node-a", A_ADDRS, "0.0.0.0:4433"),
        );
        Setup {
            pki,
            dir,
            ns: Netns::new(),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.join("node.toml")
    }

    fn edit(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config()).expect("config");
        assert!(text.contains(from), "{from:?} not in config");
        std::fs::write(self.config(), text.replace(from, to)).expect("config");
    }

    /// Runs `quicap up` inside the namespace, with an optional wrapper command.
    fn up(&self, wrapper: &[&str]) -> Output {
        let mut args: Vec<&str> = wrapper.to_vec();
        args.push(quicap());
        args.extend(["up", "--config"]);
        let out = self.ns.cmd(&args).arg(self.config()).output().expect("run");
        assert!(
            !self.ns.interface_exists("quicap0"),
            "interface left behind"
        );
        out
    }
}

#[test]
fn up_check_reports_what_the_node_would_run_with_and_starts_nothing() {
    let s = Setup::new(&[]);
    let check = |s: &Setup| {
        let out =
            s.ns.cmd(&[quicap(), "up", "--check", "--config"])
                .arg(s.config())
                .output()
                .expect("run");
        assert!(
            !s.ns.interface_exists("quicap0"),
            "--check made an interface"
        );
        out
    };
    let out = check(&s);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "node.toml: OK",
        "node node-a: certificate serial ",
        "valid until ",
        "issued by \"net\"",
        "tun quicap0 (mtu 1400): 10.77.0.1/24",
        "listen 0.0.0.0:4433",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    assert!(!text.contains("warning"), "{text}");
    // A prefix to advertise that the certificate does not authorize: a warning.
    s.edit("[node]\n", "[node]\nadvertise = [\"192.168.60.0/24\"]\n");
    let out = check(&s);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "warning: node.advertise 192.168.60.0/24 is not in the certificate's subnets"
        ),
        "{text}"
    );
    // What would stop `up` stops the check, in the same words.
    run(quicap_cmd(&["ca", "revoke", "--ca"])
        .arg(s.pki.ca_dir())
        .arg(s.dir.join("node-a.crt")));
    assert_one_line_error(&check(&s), &["node-a.crt", "revoked"]);
}

#[test]
fn up_rejects_malformed_config() {
    let s = Setup::new(&[]);
    s.edit("[tun]", "[tun\n");
    assert_one_line_error(&s.up(&[]), &["node.toml", "line "]);
}

#[test]
fn up_names_unknown_keys() {
    let s = Setup::new(&[]);
    s.edit("[tun]", "[tun]\nmut = 1400");
    assert_one_line_error(&s.up(&[]), &["unknown field `mut`", "line "]);
}

#[test]
fn up_names_invalid_values() {
    let s = Setup::new(&[]);
    s.edit("listen = [\"0.0.0.0:4433\"]", "listen = [\"0.0.0.0\"]");
    assert_one_line_error(&s.up(&[]), &["node.listen"]);
}

#[test]
fn up_reports_missing_config_and_certificate() {
    let s = Setup::new(&[]);
    let out =
        s.ns.cmd(&[quicap(), "up", "--config", "/nonexistent/quicap.toml"])
            .output()
            .expect("run");
    assert_one_line_error(&out, &["/nonexistent/quicap.toml", "No such file"]);
    std::fs::remove_file(s.dir.join("node-a.crt")).expect("rm");
    assert_one_line_error(&s.up(&[]), &["node.cert", "node-a.crt", "No such file"]);
}

#[test]
fn up_reports_unreadable_key() {
    let s = Setup::new(&[]);
    let key = s.dir.join("node-a.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    // Root reads anything; drop the capabilities as an unprivileged service would run.
    let out = s.up(&["setpriv", "--inh-caps=-all", "--bounding-set=-all"]);
    assert_one_line_error(&out, &["node.key", "Permission denied"]);
}

#[test]
fn up_rejects_a_key_that_does_not_match_the_certificate() {
    let s = Setup::new(&[]);
    let other = s.pki.issue("node-z", &["10.77.0.9/24"], &[]);
    std::fs::copy(other.join("node-z.key"), s.dir.join("node-a.key")).expect("copy");
    assert_one_line_error(&s.up(&[]), &["node.key", "does not belong"]);
}

#[test]
fn up_rejects_an_expired_certificate() {
    let s = Setup::new(&[
        "--valid-from",
        "2020-01-01T00:00:00Z",
        "--valid-until",
        "2020-02-01T00:00:00Z",
    ]);
    assert_one_line_error(
        &s.up(&[]),
        &["node-a.crt", "expired on 2020-02-01", "renew"],
    );
}

#[test]
fn up_rejects_a_certificate_not_yet_valid() {
    let s = Setup::new(&[
        "--valid-from",
        "2030-01-01T00:00:00Z",
        "--valid-until",
        "2030-02-01T00:00:00Z",
    ]);
    assert_one_line_error(&s.up(&[]), &["node-a.crt", "not valid before 2030-01-01"]);
}

#[test]
fn up_rejects_a_revoked_certificate() {
    let s = Setup::new(&[]);
    run(quicap_cmd(&["ca", "revoke", "--ca"])
        .arg(s.pki.ca_dir())
        .arg(s.dir.join("node-a.crt")));
    assert_one_line_error(&s.up(&[]), &["node-a.crt", "revoked"]);
}

#[test]
fn up_rejects_addresses_outside_the_certificate() {
    let s = Setup::new(&[]);
    s.edit("\"10.77.0.1/24\"", "\"10.66.0.1/24\"");
    assert_one_line_error(
        &s.up(&[]),
        &[
            "tun.addresses",
            "10.66.0.1/24",
            "not authorized",
            "10.77.0.1/24",
        ],
    );
}

#[test]
fn up_rejects_a_node_name_that_differs_from_the_certificate() {
    let s = Setup::new(&[]);
    s.edit("name = \"node-a\"", "name = \"node-b\"");
    assert_one_line_error(&s.up(&[]), &["node.name", "node-b", "node-a"]);
}

#[test]
fn up_reports_a_port_in_use() {
    let s = Setup::new(&[]);
    let mut holder =
        s.ns.cmd(&["socat", "-u", "UDP-RECV:4433", "/dev/null"])
            .spawn()
            .expect("socat");
    wait_until(std::time::Duration::from_secs(5), || {
        s.ns.cmd(&["ss", "-uln", "sport = :4433"])
            .output()
            .map(|o| stdout(&o).contains("4433"))
            .unwrap_or(false)
    })
    .expect("port held");
    let out = s.up(&[]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_one_line_error(&out, &["0.0.0.0:4433", "in use"]);
}

#[test]
fn up_reports_a_tun_name_in_use_in_one_line() {
    let s = Setup::new(&[]);
    let mut cmd = s.ns.cmd(&[quicap(), "up", "--config"]);
    cmd.arg(s.config());
    let first = background(cmd);
    let up = wait_until(std::time::Duration::from_secs(10), || {
        s.ns.interface_exists("quicap0")
    });
    // The second node differs only in its port and control socket.
    s.edit("0.0.0.0:4433", "0.0.0.0:4434");
    s.edit("control.sock", "control-2.sock");
    let out =
        s.ns.cmd(&[quicap(), "up", "--config"])
            .arg(s.config())
            .output()
            .expect("second node");
    drop(first);
    assert!(up.is_some(), "the first node's TUN did not appear");
    assert_one_line_error(&out, &["TUN interface quicap0", "another quicap"]);
}

/// Each of the CA and CRL files swapped for the other, a DER file where PEM belongs,
/// and the CRL of another CA: one line naming the file at fault and what it is.
#[test]
fn up_names_the_file_at_fault_when_ca_and_crl_are_mixed_up() {
    let s = Setup::new(&[]);
    let (ca, crl) = (
        s.pki.ca_dir().join("ca.crt"),
        s.pki.ca_dir().join("crl.pem"),
    );
    let (ca, crl) = (ca.display().to_string(), crl.display().to_string());
    let config = std::fs::read_to_string(s.config()).expect("config");
    let with = |from: &str, to: &str| {
        std::fs::write(s.config(), config.replace(from, to)).expect("config");
        s.up(&[])
    };
    let swapped = config
        .replace(&ca, "@CA@")
        .replace(&crl, &ca)
        .replace("@CA@", &crl);
    std::fs::write(s.config(), &swapped).expect("config");
    assert_one_line_error(
        &s.up(&[]),
        &[
            "node.ca",
            &crl,
            "X509 CRL",
            "expected CERTIFICATE",
            "belongs in node.crl",
        ],
    );
    assert_one_line_error(
        &with(&crl, &ca),
        &["node.crl", &ca, "CERTIFICATE", "expected X509 CRL"],
    );
    let der = s.dir.join("ca.der");
    run(Command::new("openssl")
        .args(["x509", "-outform", "der", "-in", &ca, "-out"])
        .arg(&der));
    assert_one_line_error(
        &with(&ca, &der.display().to_string()),
        &["node.ca", "ca.der", "a binary file, expected PEM"],
    );
    let other = Pki::new("other");
    let other_crl = other.ca_dir().join("crl.pem").display().to_string();
    assert_one_line_error(
        &with(&crl, &other_crl),
        &[
            "node.crl",
            &other_crl,
            "issued by \"other\"",
            "not by the CA in node.ca (\"net\")",
        ],
    );
}

#[test]
fn up_reports_missing_permission_for_the_tun() {
    let s = Setup::new(&[]);
    let out = s.up(&["setpriv", "--inh-caps=-all", "--bounding-set=-all"]);
    assert_one_line_error(&out, &["TUN interface quicap0", "CAP_NET_ADMIN"]);
}
