//! The `quicap` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ipnet::IpNet;
use quicap::config::Config;
use quicap::pki_cmd;
use time::OffsetDateTime;

/// QUICAP: a mesh VPN on QUIC with a real PKI.
#[derive(Debug, Parser)]
#[command(name = "quicap", version, about, long_about = None)]
struct Cli {
    /// Log filter (e.g. "info", "debug", "quicap=trace"); overrides QUICAP_LOG.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the network's certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Make and inspect node keys, CSRs, certificates and CRLs.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Run a node from its configuration file until SIGINT or SIGTERM.
    Up {
        /// Path of the node's TOML configuration (see examples/node.toml).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Only check the configuration and the certificate, key, CA and CRL it names
        /// (everything `up` checks before touching the network), print a summary and
        /// exit: 0 if the node would start.
        #[arg(long)]
        check: bool,
        /// Protocol versions to offer, as MIN-MAX; for testing version negotiation.
        #[arg(long, value_name = "MIN-MAX", value_parser = parse_versions, hide = true)]
        offer_versions: Option<std::ops::RangeInclusive<u8>>,
    },
    /// Show a running node's interfaces, peers, links and carrier state.
    Status {
        /// The node's configuration file (to find its control socket).
        #[arg(long, short, value_name = "FILE", conflicts_with = "socket")]
        config: Option<PathBuf>,
        /// The node's control socket; default /run/quicap/quicap0.sock.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create a CA: writes ca.crt, ca.key (0600) and an empty crl.pem into DIR.
    Init {
        /// Name of the network (the CA certificate's common name).
        #[arg(long)]
        name: String,
        /// Directory to write the CA files into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity of the CA certificate, in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a node certificate from a CSR. The CA decides its contents: the CSR
    /// contributes only its public key and (unless --name is given) its common name.
    Sign {
        /// CA directory (as made by `quicap ca init`).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The node's certificate signing request (PEM; `quicap cert request` or openssl).
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// Overlay address with prefix length the node may use, e.g. 10.77.0.2/24.
        /// Repeat for several (IPv4 and IPv6).
        #[arg(long = "ip", value_name = "ADDR/PREFIX", required = true)]
        ips: Vec<IpNet>,
        /// A network the node may route for (e.g. a LAN behind it). Repeatable.
        #[arg(long = "subnet", value_name = "CIDR")]
        subnets: Vec<IpNet>,
        /// Let the node be an egress: proxied flows of other nodes may leave the mesh
        /// there, to destinations its own `[egress]` config allows.
        #[arg(long)]
        egress: bool,
        /// Node name; defaults to the CSR's common name.
        #[arg(long)]
        name: Option<String>,
        /// Validity in days from now.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Start of validity (RFC 3339, e.g. 2026-01-01T00:00:00Z); default: 5 minutes ago.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        valid_from: Option<OffsetDateTime>,
        /// End of validity (RFC 3339); overrides --days.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        valid_until: Option<OffsetDateTime>,
        /// Where to write the certificate.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Revoke a node certificate: adds it to DIR/crl.pem (a new CRL with a higher number).
    Revoke {
        /// CA directory.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The certificate to revoke.
        #[arg(value_name = "FILE")]
        cert: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Generate a node key (DIR/NAME.key, 0600) and a CSR (DIR/NAME.csr) for the CA.
    Request {
        /// Node name (lowercase letters, digits, '-', dot-separated labels).
        #[arg(long)]
        name: String,
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print a certificate, CSR or CRL, including the overlay addresses and subnets a
    /// node certificate authorizes.
    Show {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})"))
}

fn parse_versions(s: &str) -> Result<std::ops::RangeInclusive<u8>, String> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    match (lo.parse::<u8>(), hi.parse::<u8>()) {
        (Ok(lo), Ok(hi)) if lo <= hi => Ok(lo..=hi),
        _ => Err(format!("{s:?} is not a version range like 1-2")),
    }
}

fn init_logging(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_env("QUICAP_LOG").ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn load_config(path: &PathBuf) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
    let base = path.parent().map(PathBuf::from).unwrap_or_default();
    Config::parse(&text, &base).with_context(|| format!("config {}", path.display()))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Ca(CaCommand::Init { name, out, days }) => pki_cmd::ca_init(&name, &out, days),
        Command::Ca(CaCommand::Sign {
            ca,
            csr,
            ips,
            subnets,
            egress,
            name,
            days,
            valid_from,
            valid_until,
            out,
            force,
        }) => pki_cmd::ca_sign(&pki_cmd::SignOptions {
            ca,
            csr,
            name,
            addresses: ips,
            subnets,
            egress,
            days,
            valid_from,
            valid_until,
            out,
            force,
        }),
        Command::Ca(CaCommand::Revoke { ca, cert }) => pki_cmd::ca_revoke(&ca, &cert),
        Command::Cert(CertCommand::Request { name, out }) => pki_cmd::cert_request(&name, &out),
        Command::Cert(CertCommand::Show { file }) => pki_cmd::cert_show(&file),
        Command::Up {
            config: path,
            check,
            offer_versions,
        } => {
            let config = load_config(&path)?;
            if check {
                print!("{}", quicap::daemon::check(&path, &config)?);
                return Ok(());
            }
            let mut options = quicap::daemon::RunOptions::default();
            if let Some(v) = offer_versions {
                options.versions = v;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(quicap::daemon::run(config, options))
        }
        Command::Status {
            config,
            socket,
            json,
        } => {
            let socket = match (socket, config) {
                (Some(s), _) => s,
                (None, Some(c)) => load_config(&c)?.node.control_socket,
                (None, None) => quicap::config::default_control_socket("quicap0"),
            };
            let status = quicap::status_client::query(&socket)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
