//! QUICAP: a mesh VPN on QUIC with a real PKI.
//!
//! This crate holds the IO side: configuration, TLS and QUIC transport, the TUN device,
//! the daemon and the PKI commands. Protocol logic without IO lives in `quicap-wire`
//! and `quicap-pki`.

pub mod camouflage;
pub mod config;
pub mod daemon;
pub mod device;
pub mod heap;
pub mod link;
pub mod masque;
pub mod packet_io;
pub mod pki_cmd;
pub mod proxy;
pub mod relay;
pub mod sched;
pub mod status;
pub mod status_client;
pub mod tls;
pub mod transport;
