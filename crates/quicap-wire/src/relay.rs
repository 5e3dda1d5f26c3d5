//! Relay frames: a QUIC packet of an end-to-end connection, carried through other nodes
//! without being decrypted.
//!
//! A node that has no direct link to another can still hold a QUIC connection with it:
//! each UDP datagram of that connection travels hop by hop inside a relay frame, and the
//! nodes in between forward the frame by its destination node id, the way they forward
//! nothing else: no QUIC state, no AEAD, one receive and one send.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +---------------+---------------+---------------+---------------+
//! |  Mark (0x3a)  |    Version    |   Hop limit   |   Reserved    |
//! +---------------+---------------+---------------+---------------+
//! |                 Destination node id (64 bits)                 |
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                    Source node id (64 bits)                   |
//! |                                                               |
//! +---------------------------------------------------------------+
//! |                   QUIC packet (end to end) ...                |
//! ```
//!
//! The mark's two high bits are zero. Every QUIC packet has one of them set (the long
//! header bit or the fixed bit, RFC 9000 section 17; QUICAP endpoints do not grease the
//! fixed bit), and STUN uses first bytes 0-3 (RFC 7983), so a relay frame cannot be
//! taken for either on a shared socket.

use thiserror::Error;

use crate::NodeId;

/// First byte of every relay frame.
pub const MARK: u8 = 0x3a;
/// Version of the relay frame format defined here.
pub const VERSION: u8 = 1;
/// Length of the relay header in front of the QUIC packet.
pub const LEN: usize = 20;
/// Hop limit a node puts on a frame it originates.
pub const DEFAULT_HOP_LIMIT: u8 = 16;

/// Why a datagram that starts with [`MARK`] was not accepted as a relay frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RelayError {
    #[error("relay frame shorter than its {LEN}-byte header")]
    Truncated,
    #[error("relay frame version {0} is unknown")]
    UnknownVersion(u8),
    #[error("relay frame hop limit exhausted")]
    HopLimitExhausted,
}

/// Whether a UDP datagram starting with `first` is a relay frame rather than a QUIC
/// packet.
pub fn is_relay_frame(first: u8) -> bool {
    first == MARK
}

/// The addressing part of a relay frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayHeader {
    pub destination: NodeId,
    pub source: NodeId,
    pub hop_limit: u8,
}

impl RelayHeader {
    /// A header for a frame this node originates.
    pub fn new(destination: NodeId, source: NodeId) -> Self {
        RelayHeader {
            destination,
            source,
            hop_limit: DEFAULT_HOP_LIMIT,
        }
    }

    /// Writes the header into the first [`LEN`] bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than [`LEN`]; callers size their buffers for it.
    pub fn write(&self, out: &mut [u8]) {
        out[0] = MARK;
        out[1] = VERSION;
        out[2] = self.hop_limit;
        out[3] = 0;
        out[4..12].copy_from_slice(&self.destination.0.to_be_bytes());
        out[12..20].copy_from_slice(&self.source.0.to_be_bytes());
    }

    /// Reads the header at the start of a frame (the caller checked the mark).
    pub fn read(frame: &[u8]) -> Result<Self, RelayError> {
        if frame.len() < LEN {
            return Err(RelayError::Truncated);
        }
        if frame[1] != VERSION {
            return Err(RelayError::UnknownVersion(frame[1]));
        }
        let id = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&frame[range]);
            NodeId(u64::from_be_bytes(bytes))
        };
        Ok(RelayHeader {
            hop_limit: frame[2],
            destination: id(4..12),
            source: id(12..20),
        })
    }
}

/// Decrements the hop limit of a frame about to be forwarded, in place.
///
/// A frame that arrives with a hop limit of 1 or less is not forwarded: the hop limit
/// counts the nodes a frame may still reach, and the next one would be past it.
pub fn forward_hop(frame: &mut [u8]) -> Result<(), RelayError> {
    if frame.len() < LEN {
        return Err(RelayError::Truncated);
    }
    if frame[2] <= 1 {
        return Err(RelayError::HopLimitExhausted);
    }
    frame[2] -= 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trips() {
        let header = RelayHeader::new(NodeId(0x0102_0304_0506_0708), NodeId(u64::MAX));
        let mut frame = [0u8; LEN + 3];
        header.write(&mut frame);
        assert!(is_relay_frame(frame[0]));
        assert_eq!(RelayHeader::read(&frame), Ok(header));
    }

    #[test]
    fn mark_is_neither_quic_nor_stun() {
        // QUIC: long header bit 0x80 or fixed bit 0x40; STUN: 0..=3.
        for first in 0..=u8::MAX {
            let quic_or_stun = first & 0xc0 != 0 || first <= 3;
            assert!(!(quic_or_stun && is_relay_frame(first)), "{first:#x}");
        }
        assert!(is_relay_frame(MARK));
    }

    #[test]
    fn bad_frames_are_rejected() {
        let mut frame = [0u8; LEN];
        RelayHeader::new(NodeId(1), NodeId(2)).write(&mut frame);
        assert_eq!(
            RelayHeader::read(&frame[..LEN - 1]),
            Err(RelayError::Truncated)
        );
        frame[1] = 9;
        assert_eq!(
            RelayHeader::read(&frame),
            Err(RelayError::UnknownVersion(9))
        );
    }

    #[test]
    fn forwarding_spends_the_hop_limit() {
        let mut frame = [0u8; LEN];
        let mut header = RelayHeader::new(NodeId(1), NodeId(2));
        header.hop_limit = 2;
        header.write(&mut frame);
        assert_eq!(forward_hop(&mut frame), Ok(()));
        assert_eq!(RelayHeader::read(&frame).map(|h| h.hop_limit), Ok(1));
        assert_eq!(forward_hop(&mut frame), Err(RelayError::HopLimitExhausted));
        assert_eq!(forward_hop(&mut frame[..3]), Err(RelayError::Truncated));
    }

    proptest! {
        #[test]
        fn reading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = RelayHeader::read(&bytes);
            let mut bytes = bytes;
            let _ = forward_hop(&mut bytes);
        }
    }
}
