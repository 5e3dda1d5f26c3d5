//! QUICAP wire formats.
//!
//! Everything that crosses the network between two nodes is defined here, as pure
//! byte-level code with no IO:
//!
//! ```text
//!  QUIC DATAGRAM frame (RFC 9221)        QUIC bidirectional stream 0 (control)
//! +--------------------------------+    +--------+------+-----------------+
//! | overlay header | IP packet or  |    | len:16 | type | body            | ...
//! | (4 or 20 B)    | Ethernet frame|    +--------+------+-----------------+
//! +--------------------------------+
//! ```
//!
//! * [`overlay`]: the small versioned header in front of every tunnelled packet.
//! * [`control`]: length-prefixed, typed control messages (hello, keepalive, goodbye).
//! * [`relay`]: the frame that carries a QUIC packet of an end-to-end connection through
//!   other nodes, undecrypted.
//! * [`stream`]: the records of a link over TLS/TCP, which carries datagrams, control
//!   frames and its close on one byte stream.
//! * [`masque`]: HTTP Datagrams and capsules (RFC 9297) of the extended CONNECT that
//!   camouflaged links and the MASQUE front use.
//! * [`socks`]: SOCKS5 requests and replies of a node's proxy listener.
//! * [`flow`]: the opening of a proxied flow on a QUIC stream between two nodes.
//! * [`text`]: strings from peers, certificates and CSRs, escaped for logs and
//!   terminals.
//!
//! Every parser takes untrusted bytes and returns an error instead of panicking; the
//! exact formats are specified in `docs/protocol.md`.

pub mod control;
pub mod flow;
pub mod ip;
pub mod masque;
pub mod overlay;
pub mod relay;
pub mod socks;
pub mod stream;
pub mod text;

pub use control::{route_frames, ControlError, Message, NodeInfo, Prefix, RouteEntry, HOST_ID_LEN};
pub use overlay::{Header, NodeId, OverlayError, PayloadKind};
pub use text::{escape, Escaped, Quoted};

/// The protocol versions this implementation speaks, oldest first.
///
/// Negotiated in the control channel's `Hello` (see [`control::Hello`]); the overlay
/// header carries the version of its own format, which is independent.
///
/// Version 2 signs node information (control message 0x0a); version 1 sent it unsigned
/// (0x07), and a node on a version 1 link still does.
pub const PROTOCOL_VERSIONS: std::ops::RangeInclusive<u8> = 1..=2;

/// Picks the highest protocol version both sides speak, if any.
pub fn negotiate_version(
    ours: std::ops::RangeInclusive<u8>,
    theirs: std::ops::RangeInclusive<u8>,
) -> Option<u8> {
    let high = (*ours.end()).min(*theirs.end());
    let low = (*ours.start()).max(*theirs.start());
    (low <= high).then_some(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common_version() {
        assert_eq!(negotiate_version(1..=3, 2..=5), Some(3));
        assert_eq!(negotiate_version(1..=1, 1..=1), Some(1));
    }

    #[test]
    fn negotiation_fails_without_overlap() {
        assert_eq!(negotiate_version(1..=1, 2..=3), None);
        assert_eq!(negotiate_version(4..=6, 1..=3), None);
    }
}
