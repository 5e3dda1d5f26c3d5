//! Proxied flows between nodes: an application's TCP connection that enters the mesh
//! at one node (its SOCKS5 or HTTP proxy listener) and leaves it at another, the
//! egress, on a QUIC stream of the link between them.
//!
//! Every bidirectional stream of a QUIC link but the control stream (the first one the
//! dialer opens) starts with a stream kind:
//!
//! ```text
//!  opener                                                  egress
//!  kind:8 = 0x01 (TCP flow), target (SOCKS5 form:    ──>   resolves a name, checks
//!    atyp addr port, see crate::socks)                     its policy, connects
//!                                                    <──   status:8 (a SOCKS5 reply
//!                                                          code, 0x00 connected)
//!  the flow's bytes, both ways; FIN is the half-close, a reset aborts the flow
//! ```
//!
//! A UDP association (SOCKS5 UDP ASSOCIATE) opens a stream of its own, which lives as
//! long as the association, and its payloads travel in datagrams of the link:
//!
//! ```text
//!  opener                                                  egress
//!  kind:8 = 0x02 (UDP association), id:32 (< 2^31)   ──>   checks its certificate
//!                                                    <──   status:8
//!  overlay datagram, kind flow: id:32, target, data  ──>   policy per target, sent
//!  overlay datagram, kind flow: id | 2^31, source,   <──   from the association's
//!    data                                                  UDP socket
//!  the stream's end (either side) ends the association
//! ```
//!
//! An association for one target only (a MASQUE CONNECT-UDP session's) opens with kind
//! 0x03, the id and that target: the egress checks its policy for the target before
//! its status, so that a refused target is refused at once.
//!
//! The opener picks the id, unique among its associations on the link; the top bit
//! tells the egress's datagrams from the opener's, so ids both ends pick never clash.
//! Other kinds are refused by resetting the stream; the link stays up.

use thiserror::Error;

use crate::socks::{Reply, SocksError, Target};

/// What a stream of a link opens, besides its control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// A TCP flow to a target, leaving the mesh at the accepting node.
    Tcp(Target),
    /// A UDP association with this id.
    Udp(u32),
    /// A UDP association with this id for one target, checked before the status.
    UdpTo(u32, Target),
}

const KIND_TCP_FLOW: u8 = 0x01;
const KIND_UDP_ASSOCIATION: u8 = 0x02;
const KIND_UDP_TO: u8 = 0x03;

/// Set in the id of a datagram from the egress of an association.
pub const REPLY_BIT: u32 = 1 << 31;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FlowError {
    #[error("unknown stream kind {0:#04x}")]
    Kind(u8),
    #[error("flow target: {0}")]
    Target(#[from] SocksError),
    #[error("association id {0:#x} has the reply bit set")]
    Id(u32),
    #[error("flow datagram of {0} bytes, too short")]
    Short(usize),
}

/// The opening of a TCP flow to `target`.
pub fn open_tcp(target: &Target) -> Result<Vec<u8>, FlowError> {
    let mut out = vec![KIND_TCP_FLOW];
    target.encode(&mut out)?;
    Ok(out)
}

/// The opening of a UDP association with `id`.
pub fn open_udp(id: u32) -> Result<[u8; 5], FlowError> {
    if id & REPLY_BIT != 0 {
        return Err(FlowError::Id(id));
    }
    let b = id.to_be_bytes();
    Ok([KIND_UDP_ASSOCIATION, b[0], b[1], b[2], b[3]])
}

/// The opening of a UDP association with `id` for `target` alone.
pub fn open_udp_to(id: u32, target: &Target) -> Result<Vec<u8>, FlowError> {
    let mut out = open_udp(id)?.to_vec();
    out[0] = KIND_UDP_TO;
    target.encode(&mut out)?;
    Ok(out)
}

/// Reads a stream's opening from what has arrived: `Ok(None)` asks for more.
pub fn parse_open(buf: &[u8]) -> Result<Option<(Opening, usize)>, FlowError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    match kind {
        KIND_TCP_FLOW => Ok(Target::decode(&buf[1..])?.map(|(t, n)| (Opening::Tcp(t), 1 + n))),
        KIND_UDP_ASSOCIATION | KIND_UDP_TO => {
            let Some(id) = buf.get(1..5) else {
                return Ok(None);
            };
            let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
            if id & REPLY_BIT != 0 {
                return Err(FlowError::Id(id));
            }
            if kind == KIND_UDP_ASSOCIATION {
                return Ok(Some((Opening::Udp(id), 5)));
            }
            Ok(Target::decode(&buf[5..])?.map(|(t, n)| (Opening::UdpTo(id, t), 5 + n)))
        }
        other => Err(FlowError::Kind(other)),
    }
}

/// Appends the start of a flow datagram's payload: the id, then the target (from the
/// opener) or the source (from the egress); the UDP payload follows.
pub fn push_datagram_head(id: u32, peer: &Target, out: &mut Vec<u8>) -> Result<(), FlowError> {
    out.extend_from_slice(&id.to_be_bytes());
    peer.encode(out)?;
    Ok(())
}

/// A flow datagram's payload: its id, the target or source, and the UDP payload.
pub fn parse_datagram(payload: &[u8]) -> Result<(u32, Target, &[u8]), FlowError> {
    let Some(id) = payload.get(..4) else {
        return Err(FlowError::Short(payload.len()));
    };
    let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    let (target, n) = Target::decode(&payload[4..])?.ok_or(FlowError::Short(payload.len()))?;
    Ok((id, target, &payload[4 + n..]))
}

/// The id of a flow datagram, read before the rest.
pub fn datagram_id(payload: &[u8]) -> Option<u32> {
    let id = payload.get(..4)?;
    Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]))
}

/// The egress's answer to an opening.
pub fn status(reply: Reply) -> [u8; 1] {
    [reply as u8]
}

/// Longest opening a reader needs to buffer: the kind, an association's id, a
/// 255-byte name, its length and type bytes and the port.
pub const MAX_OPEN: usize = 1 + 4 + 1 + 1 + 255 + 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opening_round_trips_and_arrives_in_pieces() {
        let target = Target::Name("web.example".into(), 8080);
        let open = open_tcp(&target).unwrap();
        assert!(open.len() <= MAX_OPEN);
        for cut in 0..open.len() {
            assert_eq!(parse_open(&open[..cut]), Ok(None));
        }
        let mut more = open.clone();
        more.extend_from_slice(b"GET /");
        assert_eq!(
            parse_open(&more),
            Ok(Some((Opening::Tcp(target), open.len())))
        );
        assert_eq!(parse_open(&[0x7f]), Err(FlowError::Kind(0x7f)));
        assert_eq!(status(Reply::NotAllowed), [0x02]);
    }

    #[test]
    fn udp_associations_and_their_datagrams() {
        let open = open_udp(7).unwrap();
        assert_eq!(parse_open(&open[..3]), Ok(None));
        assert_eq!(parse_open(&open), Ok(Some((Opening::Udp(7), 5))));
        assert_eq!(open_udp(REPLY_BIT | 1), Err(FlowError::Id(REPLY_BIT | 1)));
        assert_eq!(
            parse_open(&[0x02, 0x80, 0, 0, 1]),
            Err(FlowError::Id(REPLY_BIT | 1))
        );
        let to = Target::Name("dns.example".into(), 53);
        let mut d = Vec::new();
        push_datagram_head(7 | REPLY_BIT, &to, &mut d).unwrap();
        d.extend_from_slice(b"query");
        assert_eq!(datagram_id(&d), Some(7 | REPLY_BIT));
        assert_eq!(parse_datagram(&d), Ok((7 | REPLY_BIT, to, &b"query"[..])));
        assert_eq!(parse_datagram(&d[..3]), Err(FlowError::Short(3)));
        assert_eq!(parse_datagram(&d[..6]), Err(FlowError::Short(6)));
    }

    #[test]
    fn an_association_for_one_target_names_it_in_its_opening() {
        let to = Target::Addr("192.0.2.9:443".parse().unwrap());
        let open = open_udp_to(9, &to).unwrap();
        assert_eq!(open[0], 0x03);
        assert_eq!(
            parse_open(&open),
            Ok(Some((Opening::UdpTo(9, to.clone()), open.len())))
        );
        for cut in 0..open.len() {
            assert_eq!(parse_open(&open[..cut]), Ok(None), "{cut}");
        }
        assert!(open_udp_to(REPLY_BIT, &to).is_err());
        let longest = open_udp_to(9, &Target::Name("n".repeat(255), 53)).unwrap();
        assert_eq!(longest.len(), MAX_OPEN);
        assert!(matches!(
            parse_open(&longest),
            Ok(Some((Opening::UdpTo(9, _), MAX_OPEN)))
        ));
        assert!(parse_open(&[0x03, 0, 0, 0, 9, 0x09]).is_err());
    }
}
