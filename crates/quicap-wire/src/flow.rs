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
//! Other kinds are refused by resetting the stream; the link stays up.

use thiserror::Error;

use crate::socks::{Reply, SocksError, Target};

/// The kinds of stream a link opens besides its control stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A TCP flow to a target, leaving the mesh at the accepting node.
    TcpFlow,
}

const KIND_TCP_FLOW: u8 = 0x01;

impl StreamKind {
    pub fn code(self) -> u8 {
        match self {
            StreamKind::TcpFlow => KIND_TCP_FLOW,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FlowError {
    #[error("unknown stream kind {0:#04x}")]
    Kind(u8),
    #[error("flow target: {0}")]
    Target(#[from] SocksError),
}

/// The opening of a TCP flow to `target`.
pub fn open_tcp(target: &Target) -> Result<Vec<u8>, FlowError> {
    let mut out = vec![KIND_TCP_FLOW];
    target.encode(&mut out)?;
    Ok(out)
}

/// Reads a stream's opening from what has arrived: `Ok(None)` asks for more.
pub fn parse_open(buf: &[u8]) -> Result<Option<(StreamKind, Target, usize)>, FlowError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    if kind != KIND_TCP_FLOW {
        return Err(FlowError::Kind(kind));
    }
    Ok(Target::decode(&buf[1..])?.map(|(t, n)| (StreamKind::TcpFlow, t, 1 + n)))
}

/// The egress's answer to an opening.
pub fn status(reply: Reply) -> [u8; 1] {
    [reply as u8]
}

/// Longest opening a reader needs to buffer: the kind, a 255-byte name, its length
/// and type bytes and the port.
pub const MAX_OPEN: usize = 1 + 1 + 1 + 255 + 2;

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
            Ok(Some((StreamKind::TcpFlow, target, open.len())))
        );
        assert_eq!(parse_open(&[0x7f]), Err(FlowError::Kind(0x7f)));
        assert_eq!(status(Reply::NotAllowed), [0x02]);
    }
}
