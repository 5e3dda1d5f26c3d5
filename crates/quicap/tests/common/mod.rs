//! Test harness for end-to-end tests: real `quicap` processes in network namespaces
//! joined by veth pairs, driven with real `ping`, `socat` and `iperf3`.
//!
//! Every namespace and process is owned by a guard that removes it on drop, so a failing
//! test cleans up too; a node's log is printed when the test panics.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

pub fn quicap() -> &'static str {
    env!("CARGO_BIN_EXE_quicap")
}

/// Runs a command; panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn require_root() {
    let out = run(Command::new("id").arg("-u"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "end-to-end tests create network namespaces and TUN devices: run them as root"
    );
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns the time taken.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = unique("qt");
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        run(&mut ns.cmd(&["ip", "link", "set", "lo", "up"]));
        ns
    }

    /// A command run inside this namespace.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// One ping with a 1 s timeout; true if answered.
    pub fn ping(&self, addr: &str) -> bool {
        self.cmd(&["ping", "-c", "1", "-W", "1", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// One ping from a given source address.
    pub fn ping_from(&self, source: &str, addr: &str) -> bool {
        self.cmd(&["ping", "-c", "1", "-W", "1", "-I", source, addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Waits until `addr` answers pings.
    pub fn wait_ping(&self, addr: &str, timeout: Duration) -> Option<Duration> {
        wait_until(timeout, || self.ping(addr))
    }

    pub fn interface_exists(&self, name: &str) -> bool {
        self.cmd(&["ip", "link", "show", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside would keep the namespace's devices alive.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins two namespaces with a veth pair and gives each end an IPv4 address (/24).
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) {
    let va = unique("va");
    let vb = unique("vb");
    run(Command::new("ip").args([
        "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns", &b.name,
    ]));
    for (ns, dev, addr) in [(a, &va, a_addr), (b, &vb, b_addr)] {
        if addr.contains(':') {
            // No duplicate address detection: usable at once.
            let net = format!("{addr}/64");
            run(&mut ns.cmd(&["ip", "addr", "add", &net, "dev", dev, "nodad"]));
        } else {
            run(&mut ns.cmd(&["ip", "addr", "add", &format!("{addr}/24"), "dev", dev]));
        }
        run(&mut ns.cmd(&["ip", "link", "set", dev, "up"]));
    }
}

/// A CA made with the real CLI, in a temporary directory.
#[derive(Debug)]
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        run(Command::new(quicap())
            .args(["ca", "init", "--name", name, "--out"])
            .arg(dir.path().join("ca")));
        Pki { dir }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// Makes a key, a CSR and a certificate for `name` with `ips`; extra args go to
    /// `quicap ca sign`. Returns the node's directory.
    pub fn issue(&self, name: &str, ips: &[&str], extra: &[&str]) -> PathBuf {
        let dir = self.dir.path().join(name);
        run(Command::new(quicap())
            .args(["cert", "request", "--name", name, "--out"])
            .arg(&dir));
        let mut sign = Command::new(quicap());
        sign.args(["ca", "sign", "--ca"])
            .arg(self.ca_dir())
            .arg("--csr")
            .arg(dir.join(format!("{name}.csr")))
            .arg("--out")
            .arg(dir.join(format!("{name}.crt")));
        for ip in ips {
            sign.args(["--ip", ip]);
        }
        sign.args(extra);
        run(&mut sign);
        dir
    }

    /// Signs `name`'s CSR again for `ips`, valid for a day, and moves the certificate
    /// over its file, as a renewal would: a new file renamed over the old, never half
    /// written.
    pub fn renew(&self, name: &str, ips: &[&str]) {
        let dir = self.dir.path().join(name);
        let renewed = dir.join(format!("{name}.crt.new"));
        let mut sign = Command::new(quicap());
        sign.args(["ca", "sign", "--ca"])
            .arg(self.ca_dir())
            .arg("--csr")
            .arg(dir.join(format!("{name}.csr")))
            .args(["--days", "1", "--out"])
            .arg(&renewed);
        for ip in ips {
            sign.args(["--ip", ip]);
        }
        run(&mut sign);
        std::fs::rename(&renewed, dir.join(format!("{name}.crt"))).expect("rename");
    }
}

/// What to put into a node's config.
#[derive(Debug, Clone)]
pub struct NodeSpec<'a> {
    pub name: &'a str,
    /// Overlay addresses with prefix (must be in the certificate, unless testing that).
    pub addresses: &'a [&'a str],
    pub listen: &'a str,
    /// (peer name, optional endpoint)
    pub peers: &'a [(&'a str, Option<&'a str>)],
    pub crl: bool,
    /// Extra TOML lines appended to the [node] section.
    pub node_extra: &'a str,
    /// Extra TOML lines appended to the [tun] section.
    pub tun_extra: &'a str,
    /// Extra TOML appended at the end of the file (e.g. a [tap] section).
    pub extra: &'a str,
    /// Whether to write a [tun] section.
    pub tun: bool,
}

impl<'a> NodeSpec<'a> {
    pub fn new(name: &'a str, addresses: &'a [&'a str], listen: &'a str) -> Self {
        NodeSpec {
            name,
            addresses,
            listen,
            peers: &[],
            crl: true,
            node_extra: "",
            tun_extra: "",
            extra: "",
            tun: true,
        }
    }
}

/// Whether this run puts the nodes of private-mode tests into camouflage mode
/// (`QUICAP_TEST_MODE=camouflage`; `scripts/test.sh` runs the tunnel, TCP and mesh
/// tests once more so): each node gets `mode = "camouflage"` and a web certificate,
/// each dialed peer the web pin.
pub fn camouflage_run() -> bool {
    match std::env::var("QUICAP_TEST_MODE").as_deref() {
        Ok("camouflage") => true,
        Ok("private") | Err(_) => false,
        Ok(other) => panic!("QUICAP_TEST_MODE={other}: expected private or camouflage"),
    }
}

/// Turns the config `text` of a private-mode test into camouflage mode (see
/// [`camouflage_run`]); configs that choose a mode themselves stay as they are. All
/// nodes of a [`Pki`] share one web certificate.
fn camouflaged_config(pki: &Pki, text: String) -> String {
    if text.contains("mode = ") || text.contains("[web]") {
        return text;
    }
    let web = pki.dir.path().join("web");
    if !web.join("web.pin").exists() {
        std::fs::create_dir_all(&web).expect("test setup");
        web_cert(&web);
    }
    let pin = std::fs::read_to_string(web.join("web.pin")).expect("test setup");
    let mut out = String::with_capacity(text.len() + 512);
    for line in text.lines() {
        out += line;
        out += "\n";
        if line == "[node]" {
            out += "mode = \"camouflage\"\n";
        } else if line.starts_with("endpoint = ") {
            out += &format!("server-name = \"{WEB_SITE}\"\nweb-pin = \"{pin}\"\n");
        }
    }
    out += &format!(
        "\n[web]\ncerts = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        web.join("web.crt").display(),
        web.join("web.key").display()
    );
    out
}

/// Writes `dir/node.toml` for a node whose key and certificate are in `dir` and whose
/// CA is `pki` (in camouflage mode on a [`camouflage_run`]).
pub fn write_config(pki: &Pki, dir: &Path, spec: &NodeSpec<'_>) -> PathBuf {
    let mut text = format!(
        "[node]\nname = \"{name}\"\ncert = \"{name}.crt\"\nkey = \"{name}.key\"\nca = \"{ca}\"\nlisten = [\"{listen}\"]\ncontrol-socket = \"control.sock\"\n",
        name = spec.name,
        ca = pki.ca_dir().join("ca.crt").display(),
        listen = spec.listen,
    );
    if spec.crl {
        text += &format!("crl = \"{}\"\n", pki.ca_dir().join("crl.pem").display());
    }
    if !spec.node_extra.is_empty() {
        text += spec.node_extra;
        text += "\n";
    }
    let addrs: Vec<String> = spec.addresses.iter().map(|a| format!("\"{a}\"")).collect();
    if spec.tun {
        text += &format!(
            "\n[tun]\nname = \"quicap0\"\naddresses = [{}]\n{}\n",
            addrs.join(", "),
            spec.tun_extra
        );
    }
    text += spec.extra;
    for (peer, endpoint) in spec.peers {
        text += &format!("\n[[peer]]\nname = \"{peer}\"\n");
        if let Some(ep) = endpoint {
            text += &format!("endpoint = \"{ep}\"\n");
        }
    }
    if camouflage_run() {
        text = camouflaged_config(pki, text);
    }
    let path = dir.join("node.toml");
    std::fs::write(&path, text).expect("writing config");
    path
}

/// Issues a certificate for `spec.name` with `spec.addresses` (plus `sign_extra` for
/// `quicap ca sign`) and writes its config; returns the config path.
pub fn node_config(pki: &Pki, sign_extra: &[&str], spec: &NodeSpec<'_>) -> PathBuf {
    let dir = pki.issue(spec.name, spec.addresses, sign_extra);
    write_config(pki, &dir, spec)
}

/// A running `quicap up`, killed on drop; its log is printed if the test panics.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
    ns: String,
    pub config: PathBuf,
    args: Vec<String>,
}

impl Node {
    pub fn start(ns: &Netns, name: &str, config: &Path) -> Node {
        Self::start_with_args(ns, name, config, &[])
    }

    /// Starts `quicap up` with extra arguments after `up`.
    pub fn start_with_args(ns: &Netns, name: &str, config: &Path, args: &[&str]) -> Node {
        let log = config.with_file_name(format!("{}.log", unique("node")));
        let mut node = Node {
            name: name.to_owned(),
            child: None,
            log,
            ns: ns.name.clone(),
            config: config.to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                quicap(),
                "--log",
                "info,quicap=debug",
                "up",
            ])
            .args(&self.args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning quicap");
        self.child = Some(child);
    }

    /// Process id of the running `quicap up` (`ip netns exec` replaces itself with it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the node again after [`Node::kill`] or [`Node::stop`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "node {} is still running", self.name);
        self.spawn();
    }

    /// SIGKILL: a crash, the peers are not told.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the node to exit by itself; its exit status, or `None`
    /// if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node not running");
        run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("node {} did not exit within 10 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `quicap status` for this node; `json` selects the JSON report.
    pub fn status(&self, json: bool) -> std::process::Output {
        let mut cmd = Command::new(quicap());
        cmd.args(["status", "--config"]).arg(&self.config);
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("quicap status")
    }

    /// `peer` as this node's `quicap status --json` reports it; `Null` if it does not
    /// list it (or the node is not answering yet).
    pub fn peer_status(&self, peer: &str) -> serde_json::Value {
        let out = self.status(true);
        if !out.status.success() {
            return serde_json::Value::Null;
        }
        let status = json(&out);
        if camouflage_run() {
            assert_eq!(status["mode"], "camouflage", "a camouflage run: {status}");
        }
        status["peers"]
            .as_array()
            .and_then(|peers| peers.iter().find(|p| p["name"] == peer).cloned())
            .unwrap_or_default()
    }

    /// Counts the log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains every one of `needles` on one line.
    pub fn wait_log(&self, needles: &[&str], timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.log_text()
                .lines()
                .any(|l| needles.iter().all(|n| l.contains(n)))
        })
        .is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log_text());
        }
    }
}

/// The usual two-node setup: namespaces `a` and `b` joined at 192.0.2.1/.2, node-a
/// (10.77.0.1, fd77::1) and node-b (10.77.0.2, fd77::2), each dialing the other.
pub struct Pair {
    // Field order is drop order: processes, then namespaces, then files.
    pub node_a: Node,
    pub node_b: Node,
    pub a: Netns,
    pub b: Netns,
    pub pki: Pki,
}

pub const A_ADDRS: &[&str] = &["10.77.0.1/24", "fd77::1/64"];
pub const B_ADDRS: &[&str] = &["10.77.0.2/24", "fd77::2/64"];

impl Pair {
    pub fn start() -> Pair {
        Self::start_with(true, true)
    }

    /// `a_dials` / `b_dials`: whether each node has the other's endpoint.
    pub fn start_with(a_dials: bool, b_dials: bool) -> Pair {
        Self::start_with_tun(a_dials, b_dials, "")
    }

    /// Like [`Pair::start_with`], with `tun_extra` added to both nodes' [tun] sections.
    pub fn start_with_tun(a_dials: bool, b_dials: bool, tun_extra: &str) -> Pair {
        let peer = |name: &str, endpoint: &str, dials: bool| {
            let mut section = format!("\n[[peer]]\nname = \"{name}\"\n");
            if dials {
                section += &format!("endpoint = \"{endpoint}\"\n");
            }
            section
        };
        Self::start_with_peers(
            tun_extra,
            &peer("node-b", "192.0.2.2:4433", a_dials),
            &peer("node-a", "192.0.2.1:4433", b_dials),
        )
    }

    /// Two nodes with `tun_extra` in their [tun] sections, node-a's [[peer]] section
    /// for node-b `a_peer` (at 192.0.2.2:4433) and node-b's for node-a `b_peer` (at
    /// 192.0.2.1:4433).
    pub fn start_with_peers(tun_extra: &str, a_peer: &str, b_peer: &str) -> Pair {
        Self::start_prepared(tun_extra, a_peer, b_peer, |_, _| {})
    }

    /// Like [`Pair::start_with_peers`], with `prepare` run on the two namespaces
    /// (linked, nodes not started yet), e.g. to filter their traffic from the start.
    pub fn start_prepared(
        tun_extra: &str,
        a_peer: &str,
        b_peer: &str,
        prepare: impl FnOnce(&Netns, &Netns),
    ) -> Pair {
        require_root();
        let pki = Pki::new("testnet");
        let a = Netns::new();
        let b = Netns::new();
        link(&a, "192.0.2.1", &b, "192.0.2.2");
        prepare(&a, &b);
        let cfg_a = node_config(
            &pki,
            &[],
            &NodeSpec {
                extra: a_peer,
                tun_extra,
                ..NodeSpec::new("node-a", A_ADDRS, "0.0.0.0:4433")
            },
        );
        let cfg_b = node_config(
            &pki,
            &[],
            &NodeSpec {
                extra: b_peer,
                tun_extra,
                ..NodeSpec::new("node-b", B_ADDRS, "0.0.0.0:4433")
            },
        );
        let node_a = Node::start(&a, "node-a", &cfg_a);
        let node_b = Node::start(&b, "node-b", &cfg_b);
        Pair {
            pki,
            a,
            b,
            node_a,
            node_b,
        }
    }
}

/// The web site name of camouflaged test nodes.
pub const WEB_SITE: &str = "www.example.test";

/// A self-signed web certificate for [`WEB_SITE`] in `dir` (`web.crt`, `web.key`) and
/// its public key pin as `web-pin` takes it (also written to `web.pin`).
pub fn web_cert(dir: &Path) -> (PathBuf, PathBuf, String) {
    use base64::Engine;
    let key = rcgen::KeyPair::generate().expect("test setup");
    let mut params = rcgen::CertificateParams::new(vec![WEB_SITE.to_owned()]).expect("test setup");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, WEB_SITE);
    let cert = params.self_signed(&key).expect("test setup");
    let (c, k) = (dir.join("web.crt"), dir.join("web.key"));
    std::fs::write(&c, cert.pem()).expect("test setup");
    std::fs::write(&k, key.serialize_pem()).expect("test setup");
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let hash = ring::digest::digest(&ring::digest::SHA256, &spki);
    let pin = format!(
        "sha256//{}",
        base64::engine::general_purpose::STANDARD.encode(hash.as_ref())
    );
    std::fs::write(dir.join("web.pin"), &pin).expect("test setup");
    (c, k, pin)
}

/// The `[web]` section of a camouflaged node whose certificate is in `dir` (made by
/// [`web_cert`]), and the pin of that certificate.
pub fn web_section(dir: &Path) -> (String, String) {
    let (cert, key, pin) = web_cert(dir);
    let section = format!(
        "\n[web]\ncerts = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        cert.display(),
        key.display()
    );
    (section, pin)
}

/// A `[[peer]]` section for a camouflaged peer `name` at `endpoint` whose web
/// certificate has `pin`, with `extra` lines.
pub fn camouflaged_peer(name: &str, endpoint: &str, pin: &str, extra: &str) -> String {
    format!(
        "\n[[peer]]\nname = \"{name}\"\nendpoint = \"{endpoint}\"\nserver-name = \"{WEB_SITE}\"\nweb-pin = \"{pin}\"\n{extra}\n"
    )
}

impl Pair {
    /// Two nodes in camouflage mode, each dialing the other (its [[peer]] section with
    /// `peer_extra`), with `tun_extra` in their [tun] sections.
    pub fn start_camouflaged(tun_extra: &str, peer_extra: &str) -> Pair {
        Self::start_camouflaged_with(
            tun_extra,
            peer_extra,
            Some("192.0.2.2:4433"),
            Some("192.0.2.1:4433"),
        )
    }

    /// [`Pair::start_camouflaged`] with the endpoint node-a dials node-b at and the one
    /// node-b dials node-a at (`None`: that node only takes the other's dials).
    pub fn start_camouflaged_with(
        tun_extra: &str,
        peer_extra: &str,
        a_dials: Option<&str>,
        b_dials: Option<&str>,
    ) -> Pair {
        require_root();
        let pki = Pki::new("testnet");
        let a = Netns::new();
        let b = Netns::new();
        link(&a, "192.0.2.1", &b, "192.0.2.2");
        let dir_a = pki.issue("node-a", A_ADDRS, &[]);
        let dir_b = pki.issue("node-b", B_ADDRS, &[]);
        let (web_a, pin_a) = web_section(&dir_a);
        let (web_b, pin_b) = web_section(&dir_b);
        let peer = |name: &str, endpoint: Option<&str>, pin: &str| match endpoint {
            Some(endpoint) => camouflaged_peer(name, endpoint, pin, peer_extra),
            None => format!("\n[[peer]]\nname = \"{name}\"\n{peer_extra}\n"),
        };
        let config = |dir: &Path, name, addrs, web: String, peer: String| {
            let extra = web + &peer;
            write_config(
                &pki,
                dir,
                &NodeSpec {
                    node_extra: "mode = \"camouflage\"",
                    extra: &extra,
                    tun_extra,
                    ..NodeSpec::new(name, addrs, "0.0.0.0:4433")
                },
            )
        };
        let cfg_a = config(
            &dir_a,
            "node-a",
            A_ADDRS,
            web_a,
            peer("node-b", a_dials, &pin_b),
        );
        let cfg_b = config(
            &dir_b,
            "node-b",
            B_ADDRS,
            web_b,
            peer("node-a", b_dials, &pin_a),
        );
        let node_a = Node::start(&a, "node-a", &cfg_a);
        let node_b = Node::start(&b, "node-b", &cfg_b);
        Pair {
            pki,
            a,
            b,
            node_a,
            node_b,
        }
    }
}

/// Runs `f` on a thread of its own that entered namespace `ns` (only that thread does:
/// the sockets it makes belong to the namespace), and returns what it returns.
pub fn in_namespace<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let netns = std::fs::File::open(&path).expect("namespace file");
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in the namespace")
}

/// Runs the future `f` makes to completion inside namespace `ns` (see
/// [`in_namespace`]), on a tokio runtime of its own: how a test speaks the protocol
/// itself, as a member or a stranger.
pub fn block_on_in<F, T>(ns: &Netns, f: impl FnOnce() -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    in_namespace(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
}

/// A member of the network that a test speaks for: the identity a node with `config`
/// would load, and a QUIC client config made from it.
pub fn member(config: &Path) -> (quicap::daemon::identity::Loaded, quinn::ClientConfig) {
    let text = std::fs::read_to_string(config).expect("config");
    let dir = config.parent().expect("config dir");
    let config = quicap::config::Config::parse(&text, dir).expect("config parses");
    let loaded =
        quicap::daemon::identity::load(&config, time::OffsetDateTime::now_utc()).expect("identity");
    let transport = quicap::transport::transport_config(
        &config.transport,
        1400,
        quicap::transport::Carried::Direct,
    )
    .expect("transport");
    let client = quicap::transport::client_config(&loaded.trust(), &loaded.identity, transport)
        .expect("client config");
    (loaded, client)
}

/// Parses the JSON of a `quicap status --json` run.
pub fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "quicap status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// Runs `ping -D` from `ns` to `dst` every 50 ms for `secs` seconds in the background.
pub fn start_ping(ns: &Netns, dst: &str, secs: u32) -> std::process::Child {
    ns.cmd(&[
        "ping",
        "-D",
        "-i",
        "0.05",
        "-W",
        "1",
        "-w",
        &secs.to_string(),
        dst,
    ])
    .stdout(std::process::Stdio::piped())
    .spawn()
    .expect("ping")
}

/// The longest time between two consecutive answered pings, and the number answered.
pub fn longest_gap(ping: std::process::Child) -> (Duration, usize) {
    let out = ping.wait_with_output().expect("ping output");
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    (Duration::from_secs_f64(gap), times.len())
}

/// Applies nftables commands (one per string) inside `ns`.
/// A background process, killed when dropped.
pub struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` in the background, its output discarded.
pub fn background(mut cmd: Command) -> Background {
    cmd.stdout(std::process::Stdio::null());
    cmd.stderr(std::process::Stdio::null());
    Background(cmd.spawn().expect("background process"))
}

pub fn nft(ns: &Netns, rules: &[&str]) {
    for rule in rules {
        let mut args = vec!["nft"];
        args.extend(rule.split(' '));
        run(&mut ns.cmd(&args));
    }
}

/// Drops UDP to and from port 4433 in `ns` (table `noudp`; `allow_udp` removes it).
pub fn block_udp(ns: &Netns, how: &str) {
    nft(
        ns,
        &[
            "add table inet noudp",
            "add chain inet noudp in { type filter hook input priority 0 ; }",
            &format!("add rule inet noudp in udp dport 4433 {how}"),
            &format!("add rule inet noudp in udp sport 4433 {how}"),
        ],
    );
}

pub fn allow_udp(ns: &Netns) {
    nft(ns, &["delete table inet noudp"]);
}

/// Sends `len` random bytes over TCP from namespace `from` to `addr` in namespace `to`
/// (files in `dir`) and checks they arrive whole.
pub fn transfer_intact(from: &Netns, to: &Netns, dir: &Path, addr: &str, len: u64) {
    let input = dir.join("input.bin");
    let received = dir.join("received.bin");
    run(Command::new("head")
        .args(["-c", &len.to_string(), "/dev/urandom"])
        .stdout(std::fs::File::create(&input).expect("input file")));

    let (listen, target) = if addr.contains(':') {
        (
            format!("TCP6-LISTEN:5001,bind=[{addr}],reuseaddr"),
            format!("TCP6:[{addr}]:5001"),
        )
    } else {
        (
            format!("TCP-LISTEN:5001,bind={addr},reuseaddr"),
            format!("TCP:{addr}:5001"),
        )
    };
    let mut server = to
        .cmd(&["socat", "-u", &listen])
        .arg(format!("CREATE:{}", received.display()))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("socat server");
    wait_until(Duration::from_secs(5), || {
        to.cmd(&["ss", "-ltn", "sport = :5001"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("5001"))
            .unwrap_or(false)
    })
    .expect("socat listening");
    run(from
        .cmd(&["socat", "-u"])
        .arg(format!("OPEN:{}", input.display()))
        .arg(target));
    let status = server.wait().expect("socat server exit");
    assert!(status.success());

    let sum = |p: &Path| {
        let out = run(Command::new("sha256sum").arg(p));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(std::fs::metadata(&received).expect("received").len(), len);
    assert_eq!(sum(&input), sum(&received));
}

/// node-a (10.99.0.1) and node-b (10.99.0.2), each with a TAP and no TUN, node-a
/// dialing node-b (with `peer_extra` in that [[peer]] section); `tap_b_extra` goes into
/// node-b's `[tap]` section. The nodes come
/// last: bound in that order, they are dropped (stopped) before their namespaces and
/// files.
pub fn tap_only_pair(tap_b_extra: &str, peer_extra: &str) -> (Pki, Netns, Netns, Node, Node) {
    require_root();
    let pki = Pki::new("testnet");
    let a = Netns::new();
    let b = Netns::new();
    link(&a, "192.0.2.1", &b, "192.0.2.2");
    let a_ips = ["10.99.0.1/24"];
    let b_ips = ["10.99.0.2/24"];
    let dir_a = pki.issue("node-a", &a_ips, &[]);
    let tap_a = format!(
        "\n[tap]\naddresses = [\"10.99.0.1/24\"]\n\n[[peer]]\nname = \"node-b\"\nendpoint = \"192.0.2.2:4433\"\n{peer_extra}\n"
    );
    let tap_b = format!("\n[tap]\naddresses = [\"10.99.0.2/24\"]\n{tap_b_extra}\n");
    let cfg_a = write_config(
        &pki,
        &dir_a,
        &NodeSpec {
            extra: &tap_a,
            tun: false,
            ..NodeSpec::new("node-a", &a_ips, "0.0.0.0:4433")
        },
    );
    let cfg_b = node_config(
        &pki,
        &[],
        &NodeSpec {
            extra: &tap_b,
            tun: false,
            ..NodeSpec::new("node-b", &b_ips, "0.0.0.0:4433")
        },
    );
    let node_a = Node::start(&a, "node-a", &cfg_a);
    let node_b = Node::start(&b, "node-b", &cfg_b);
    (pki, a, b, node_a, node_b)
}

/// The Python of the checkout's test environment (`scripts/deps.sh` makes it), or
/// `QUICAP_TEST_PYTHON`.
pub fn test_python() -> String {
    std::env::var("QUICAP_TEST_PYTHON").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/test-venv/bin/python"
        )
        .to_owned()
    })
}

/// Runs one of the Python tools of `tests/tools/` in `ns` with `args`: the JSON it
/// prints.
pub fn run_tool(ns: &Netns, tool: &str, args: &[&str]) -> serde_json::Value {
    let python = test_python();
    let script = format!("{}/tests/tools/{tool}", env!("CARGO_MANIFEST_DIR"));
    let mut all = vec![python.as_str(), script.as_str()];
    all.extend_from_slice(args);
    let out = ns.cmd(&all).output().expect("python");
    assert!(
        out.status.success(),
        "{python} {script} failed (run scripts/deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the tool prints JSON")
}

/// Starts Caddy in `ns` with the site blocks `sites` (its files named by `name` in
/// `dir`), speaking `protocols`, and waits until curl run with `probe` gets an answer;
/// killed on drop.
pub fn caddy(
    ns: &Netns,
    dir: &Path,
    name: &str,
    protocols: &str,
    sites: &str,
    probe: &[&str],
) -> Background {
    let caddyfile = dir.join(format!("Caddyfile.{name}"));
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n\tadmin off\n\tauto_https disable_redirects\n\tservers {{\n\t\tprotocols {protocols}\n\t}}\n}}\n{sites}"
        ),
    )
    .expect("Caddyfile");
    let mut cmd = ns.cmd(&["caddy", "run", "--adapter", "caddyfile", "--config"]);
    cmd.arg(&caddyfile)
        .env("XDG_CONFIG_HOME", dir.join(format!("caddy-{name}-config")))
        .env("XDG_DATA_HOME", dir.join(format!("caddy-{name}-data")));
    let server = background(cmd);
    let mut args = vec!["curl", "-sk", "-o", "/dev/null"];
    args.extend_from_slice(probe);
    let up = wait_until(Duration::from_secs(10), || {
        ns.cmd(&args).status().is_ok_and(|s| s.success())
    });
    assert!(up.is_some(), "caddy ({name}) did not start");
    server
}

/// A name only the processes of one namespace resolve: `ip netns exec` mounts
/// `/etc/netns/<ns>/hosts` over `/etc/hosts`. Removed on drop.
pub struct Hosts(PathBuf);

impl Hosts {
    pub fn new(ns: &Netns, line: &str) -> Hosts {
        let dir = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).expect("test setup");
        std::fs::write(dir.join("hosts"), format!("127.0.0.1 localhost\n{line}\n"))
            .expect("test setup");
        Hosts(dir)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
