//! The overlay datagram header: the bytes in front of every packet carried in a QUIC
//! DATAGRAM frame.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-------+-------+---------------+---------------+---------------+
//! |Version| Kind  |   Hop limit   |     Flags     |   Reserved    |
//! +-------+-------+---------------+---------------+---------------+
//! |            Source node id (64 bits, only if Flags.ROUTED)     |
//! |                                                               |
//! +---------------------------------------------------------------+
//! |         Destination node id (64 bits, only if Flags.ROUTED)   |
//! |                                                               |
//! +---------------------------------------------------------------+
//! ```
//!
//! A receiver drops a datagram whose version it does not know, whose kind it does not
//! know, whose hop limit is zero, or which sets flags it does not know: each of these is
//! a [`OverlayError`] the caller counts and moves on from.

use thiserror::Error;

/// Version of the overlay header format defined here.
pub const HEADER_VERSION: u8 = 1;
/// Length of the header without the routing extension.
pub const BASE_LEN: usize = 4;
/// Length of the header with the routing extension.
pub const ROUTED_LEN: usize = BASE_LEN + 16;
/// Hop limit a node puts on a datagram it originates.
pub const DEFAULT_HOP_LIMIT: u8 = 16;

const FLAG_ROUTED: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_ROUTED;

/// What the datagram carries after its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// An IPv4 or IPv6 packet (Layer 3, TUN).
    Ip,
    /// An Ethernet frame without FCS (Layer 2, TAP).
    Ethernet,
    /// A UDP payload of a proxied UDP association (see [`crate::flow`]).
    Flow,
}

impl PayloadKind {
    fn code(self) -> u8 {
        match self {
            PayloadKind::Ip => 0,
            PayloadKind::Ethernet => 1,
            PayloadKind::Flow => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(PayloadKind::Ip),
            1 => Some(PayloadKind::Ethernet),
            2 => Some(PayloadKind::Flow),
            _ => None,
        }
    }
}

/// A node's identifier, everywhere in the mesh (overlay routing extension, relay frames,
/// routing messages, node information): the first 8 bytes of the SHA-256 of the node's
/// name, computed by the caller (this crate does no hashing; see `quicap_pki::node_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The 8 bytes on the wire, big-endian.
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn from_be_bytes(bytes: [u8; 8]) -> NodeId {
        NodeId(u64::from_be_bytes(bytes))
    }
}

/// 16 hex digits: how logs and `quicap status` name a node whose name is unknown.
impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Source and destination of a datagram forwarded through intermediate nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub source: NodeId,
    pub destination: NodeId,
}

/// A parsed overlay header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: PayloadKind,
    /// Decremented by every node that forwards the datagram; never zero on the wire.
    pub hop_limit: u8,
    pub route: Option<Route>,
}

/// Why an overlay datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OverlayError {
    #[error("datagram of {0} bytes is shorter than its overlay header")]
    Truncated(usize),
    #[error("unsupported overlay header version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown payload kind {0}")]
    UnknownKind(u8),
    #[error("unknown overlay flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("hop limit exhausted")]
    HopLimitExhausted,
    #[error("buffer of {have} bytes cannot hold a {need}-byte header")]
    BufferTooSmall { have: usize, need: usize },
}

impl Header {
    /// A header for a packet this node originates and sends straight to its peer.
    pub fn direct(kind: PayloadKind) -> Self {
        Header {
            kind,
            hop_limit: DEFAULT_HOP_LIMIT,
            route: None,
        }
    }

    /// Parses the header at the front of `datagram`; returns it and the payload offset.
    pub fn parse(datagram: &[u8]) -> Result<(Header, usize), OverlayError> {
        let Some(base) = datagram.get(..BASE_LEN) else {
            return Err(OverlayError::Truncated(datagram.len()));
        };
        let version = base[0] >> 4;
        if version != HEADER_VERSION {
            return Err(OverlayError::UnsupportedVersion(version));
        }
        let kind_code = base[0] & 0x0f;
        let kind = PayloadKind::from_code(kind_code).ok_or(OverlayError::UnknownKind(kind_code))?;
        let hop_limit = base[1];
        if hop_limit == 0 {
            return Err(OverlayError::HopLimitExhausted);
        }
        let flags = base[2];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(OverlayError::UnknownFlags(flags & !KNOWN_FLAGS));
        }
        if flags & FLAG_ROUTED == 0 {
            return Ok((
                Header {
                    kind,
                    hop_limit,
                    route: None,
                },
                BASE_LEN,
            ));
        }
        let Some(ext) = datagram.get(BASE_LEN..ROUTED_LEN) else {
            return Err(OverlayError::Truncated(datagram.len()));
        };
        let (src, dst) = ext.split_at(8);
        let route = Route {
            source: NodeId(u64::from_be_bytes(src.try_into().unwrap_or_default())),
            destination: NodeId(u64::from_be_bytes(dst.try_into().unwrap_or_default())),
        };
        Ok((
            Header {
                kind,
                hop_limit,
                route: Some(route),
            },
            ROUTED_LEN,
        ))
    }

    /// Number of bytes [`Header::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        if self.route.is_some() {
            ROUTED_LEN
        } else {
            BASE_LEN
        }
    }

    /// Writes the header to the front of `buf`; returns the number of bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, OverlayError> {
        let need = self.buffer_len();
        let Some(out) = buf.get_mut(..need) else {
            return Err(OverlayError::BufferTooSmall {
                have: buf.len(),
                need,
            });
        };
        out[0] = (HEADER_VERSION << 4) | self.kind.code();
        out[1] = self.hop_limit;
        out[2] = if self.route.is_some() { FLAG_ROUTED } else { 0 };
        out[3] = 0;
        if let Some(route) = self.route {
            out[4..12].copy_from_slice(&route.source.0.to_be_bytes());
            out[12..20].copy_from_slice(&route.destination.0.to_be_bytes());
        }
        Ok(need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn direct_ip_header_is_four_bytes() {
        let mut buf = [0u8; 8];
        let n = Header::direct(PayloadKind::Ip).emit(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[0x10, DEFAULT_HOP_LIMIT, 0, 0]);
    }

    #[test]
    fn routed_header_round_trips() {
        let header = Header {
            kind: PayloadKind::Ethernet,
            hop_limit: 3,
            route: Some(Route {
                source: NodeId(7),
                destination: NodeId(u64::MAX),
            }),
        };
        let mut buf = [0u8; ROUTED_LEN + 2];
        let n = header.emit(&mut buf).unwrap();
        assert_eq!(n, ROUTED_LEN);
        assert_eq!(Header::parse(&buf).unwrap(), (header, ROUTED_LEN));
    }

    #[test]
    fn refuses_unknown_version_kind_flags_and_zero_hops() {
        assert_eq!(
            Header::parse(&[0x20, 1, 0, 0]),
            Err(OverlayError::UnsupportedVersion(2))
        );
        assert_eq!(
            Header::parse(&[0x1f, 1, 0, 0]),
            Err(OverlayError::UnknownKind(15))
        );
        assert_eq!(
            Header::parse(&[0x10, 1, 0x80, 0]),
            Err(OverlayError::UnknownFlags(0x80))
        );
        assert_eq!(
            Header::parse(&[0x10, 0, 0, 0]),
            Err(OverlayError::HopLimitExhausted)
        );
    }

    #[test]
    fn refuses_truncated_input() {
        assert_eq!(Header::parse(&[0x10, 1]), Err(OverlayError::Truncated(2)));
        assert_eq!(
            Header::parse(&[0x10, 1, FLAG_ROUTED, 0, 1, 2]),
            Err(OverlayError::Truncated(6))
        );
    }

    #[test]
    fn emit_refuses_short_buffer() {
        let mut buf = [0u8; 3];
        assert_eq!(
            Header::direct(PayloadKind::Ip).emit(&mut buf),
            Err(OverlayError::BufferTooSmall { have: 3, need: 4 })
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Header::parse(&bytes);
        }

        #[test]
        fn parse_inverts_emit(
            ethernet in any::<bool>(),
            hop_limit in 1u8..,
            route in proptest::option::of((any::<u64>(), any::<u64>())),
        ) {
            let header = Header {
                kind: if ethernet { PayloadKind::Ethernet } else { PayloadKind::Ip },
                hop_limit,
                route: route.map(|(s, d)| Route { source: NodeId(s), destination: NodeId(d) }),
            };
            let mut buf = [0u8; ROUTED_LEN];
            let n = header.emit(&mut buf).unwrap();
            prop_assert_eq!(Header::parse(&buf[..n]).unwrap(), (header, n));
        }
    }
}
