//! Control messages, exchanged on the first bidirectional QUIC stream of a connection.
//!
//! Each message is one frame:
//!
//! ```text
//! +----------------+--------+----------------------+
//! | length (u16 BE)| type   | body (length-1 bytes)|
//! +----------------+--------+----------------------+
//! ```
//!
//! `length` counts the type byte and the body and is at most [`MAX_FRAME_LEN`]. A frame
//! of an unknown type decodes to [`Message::Unknown`] so that later versions can add
//! messages that older nodes skip. Fields are big-endian; strings are UTF-8 with a one-byte
//! length prefix.

use thiserror::Error;

use crate::NodeId;

/// Bytes in front of every frame: the length field.
pub const FRAME_HEADER_LEN: usize = 2;
/// Largest value of the length field a node accepts.
pub const MAX_FRAME_LEN: usize = 4096;

const TYPE_HELLO: u8 = 0x01;
const TYPE_PING: u8 = 0x02;
const TYPE_PONG: u8 = 0x03;
const TYPE_GOODBYE: u8 = 0x04;
const TYPE_ROUTES: u8 = 0x05;
const TYPE_REQUEST: u8 = 0x06;
const TYPE_NODE_INFO: u8 = 0x07;
const TYPE_HOST_DROPS: u8 = 0x08;
const TYPE_INSTANCE: u8 = 0x09;
const TYPE_SIGNED_NODE_INFO: u8 = 0x0a;

/// What a node info's signature covers comes after these bytes, so that a signature
/// made for a node info can never pass for one over anything else the key signs.
pub const NODE_INFO_SIGNATURE_CONTEXT: &[u8] = b"quicap node info v2\0";

/// Bytes of the machine identifier in [`Message::HostDrops`].
pub const HOST_ID_LEN: usize = 16;

/// Bytes a [`RouteEntry`] without path takes on the wire.
pub const ROUTE_ENTRY_LEN: usize = 13;
/// Longest path a [`RouteEntry`] carries.
pub const MAX_ROUTE_PATH: usize = 16;

/// One route of a [`Message::Routes`] frame (see `docs/routing.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub dest: NodeId,
    pub seqno: u16,
    /// `0xffff` retracts the route.
    pub metric: u16,
    /// Node ids after the sender on its path to `dest` (informational).
    pub path: Vec<NodeId>,
}

impl RouteEntry {
    fn wire_len(&self) -> usize {
        ROUTE_ENTRY_LEN + 8 * self.path.len().min(MAX_ROUTE_PATH)
    }
}

/// Packs route entries into as few `Routes` frames as fit [`MAX_FRAME_LEN`].
pub fn route_frames(entries: Vec<RouteEntry>) -> Vec<Message> {
    let mut frames = Vec::new();
    let mut current = Vec::new();
    let mut len = 3;
    for e in entries {
        if len + e.wire_len() > MAX_FRAME_LEN && !current.is_empty() {
            frames.push(Message::Routes(std::mem::take(&mut current)));
            len = 3;
        }
        len += e.wire_len();
        current.push(e);
    }
    if !current.is_empty() {
        frames.push(Message::Routes(current));
    }
    frames
}

/// An IP prefix as carried in [`NodeInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: std::net::IpAddr,
    pub len: u8,
}

/// What a node tells the whole mesh about itself, relayed by every node that accepts it:
/// its certificate (so that remote nodes can check its claims), the prefixes it claims,
/// and its signature over all of it with the key of that certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id of the origin (first 8 bytes of SHA-256 of its name).
    pub origin: NodeId,
    /// Increases with every change; the newest version wins.
    pub version: u32,
    pub modes: Modes,
    /// DER of the origin's node certificate.
    pub certificate: Vec<u8>,
    pub prefixes: Vec<Prefix>,
    /// The origin's signature over [`NodeInfo::signed_payload`], made with the key of
    /// `certificate` (for ECDSA, ASN.1 DER). Empty in the unsigned form of protocol
    /// version 1 ([`Message::LegacyNodeInfo`]).
    pub signature: Vec<u8>,
}

impl NodeInfo {
    /// The bytes the signature covers: [`NODE_INFO_SIGNATURE_CONTEXT`], then every field
    /// but the signature, laid out as on the wire.
    pub fn signed_payload(&self) -> Result<Vec<u8>, ControlError> {
        let mut out = NODE_INFO_SIGNATURE_CONTEXT.to_vec();
        self.put_fields(&mut out)?;
        Ok(out)
    }

    fn put_fields(&self, out: &mut Vec<u8>) -> Result<(), ControlError> {
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.push(self.modes.to_bits());
        put_bytes16(out, &self.certificate)?;
        let count = u8::try_from(self.prefixes.len())
            .map_err(|_| ControlError::FrameTooLong(self.prefixes.len()))?;
        out.push(count);
        for p in &self.prefixes {
            match p.addr {
                std::net::IpAddr::V4(a) => {
                    out.push(4);
                    out.extend_from_slice(&a.octets());
                }
                std::net::IpAddr::V6(a) => {
                    out.push(6);
                    out.extend_from_slice(&a.octets());
                }
            }
            out.push(p.len);
        }
        Ok(())
    }

    fn read_fields(r: &mut Reader<'_>) -> Result<NodeInfo, ControlError> {
        let kind = r.kind;
        let origin = NodeId::from_be_bytes(r.array()?);
        let version = u32::from_be_bytes(r.array()?);
        let modes = Modes::from_bits(r.u8()?);
        let certificate = r.bytes16()?.to_vec();
        let count = r.u8()?;
        let mut prefixes = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let addr = match r.u8()? {
                4 => std::net::IpAddr::from(r.array::<4>()?),
                6 => std::net::IpAddr::from(r.array::<16>()?),
                _ => return Err(ControlError::Truncated { kind }),
            };
            let len = r.u8()?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if len > max {
                return Err(ControlError::Truncated { kind });
            }
            prefixes.push(Prefix { addr, len });
        }
        Ok(NodeInfo {
            origin,
            version,
            modes,
            certificate,
            prefixes,
            signature: Vec::new(),
        })
    }
}

/// What a node can carry, announced in its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Modes {
    /// Layer 3: IP packets from a TUN interface.
    pub l3: bool,
    /// Layer 2: Ethernet frames from a TAP interface.
    pub l2: bool,
}

impl Modes {
    fn to_bits(self) -> u8 {
        u8::from(self.l3) | (u8::from(self.l2) << 1)
    }

    fn from_bits(bits: u8) -> Self {
        Modes {
            l3: bits & 1 != 0,
            l2: bits & 2 != 0,
        }
    }
}

/// The first message each side sends on a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Oldest protocol version the sender speaks.
    pub min_version: u8,
    /// Newest protocol version the sender speaks.
    pub max_version: u8,
    /// The sender's node name; must equal the name in its certificate.
    pub name: String,
    /// MTU of the sender's tunnel interface, in bytes.
    pub mtu: u16,
    pub modes: Modes,
}

/// A decoded control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    /// Liveness and RTT probe; answered with a [`Message::Pong`] carrying the same value.
    Ping(u64),
    Pong(u64),
    /// The sender is closing the connection on purpose, for the given reason.
    Goodbye(String),
    /// Routing updates.
    Routes(Vec<RouteEntry>),
    /// A seqno request for `dest`, forwarded at most `hops` more times.
    Request {
        dest: NodeId,
        seqno: u16,
        hops: u8,
    },
    /// A node's signed information (protocol version 2 and later).
    NodeInfo(NodeInfo),
    /// A node's information without signature, as protocol version 1 sends it (type
    /// 0x07); its `signature` is empty and is not encoded.
    LegacyNodeInfo(NodeInfo),
    /// The kernel dropped packets in the sender's network namespace during its last
    /// scheduling tick; the value names the sender's machine, so that only nodes on the
    /// same machine, whose CPU time the sender's programs share, act on it.
    HostDrops([u8; HOST_ID_LEN]),
    /// A random number the sender drew when it started, sent after the hello: two
    /// connections of one peer name with different values come from two running nodes
    /// holding the same certificate.
    Instance(u64),
    /// A message type this version does not know; skipped.
    Unknown(u8),
}

/// Why a control frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    #[error("control frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    FrameTooLong(usize),
    #[error("empty control frame")]
    Empty,
    #[error("control message type {kind:#04x} is truncated")]
    Truncated { kind: u8 },
    #[error("control message type {kind:#04x} has {extra} trailing bytes")]
    TrailingBytes { kind: u8, extra: usize },
    #[error("control message carries a string that is not UTF-8")]
    InvalidUtf8,
    #[error("string of {0} bytes does not fit a control message")]
    StringTooLong(usize),
}

impl Message {
    /// The message's name, for logs and close reasons.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Ping(_) => "ping",
            Message::Pong(_) => "pong",
            Message::Goodbye(_) => "goodbye",
            Message::Routes(_) => "routes",
            Message::Request { .. } => "route request",
            Message::NodeInfo(_) => "node info",
            Message::LegacyNodeInfo(_) => "unsigned node info",
            Message::HostDrops(_) => "host drops",
            Message::Instance(_) => "instance",
            Message::Unknown(_) => "message of unknown type",
        }
    }

    /// Appends this message as one frame to `out`; on error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ControlError> {
        let start = out.len();
        let result = self.encode_frame(start, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_frame(&self, start: usize, out: &mut Vec<u8>) -> Result<(), ControlError> {
        out.extend_from_slice(&[0, 0]);
        match self {
            Message::Hello(h) => {
                out.push(TYPE_HELLO);
                out.extend_from_slice(&[h.min_version, h.max_version]);
                out.extend_from_slice(&h.mtu.to_be_bytes());
                out.push(h.modes.to_bits());
                put_str(out, &h.name)?;
            }
            Message::Ping(v) => {
                out.push(TYPE_PING);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Message::Pong(v) => {
                out.push(TYPE_PONG);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Message::Goodbye(reason) => {
                out.push(TYPE_GOODBYE);
                put_str(out, reason)?;
            }
            Message::Routes(routes) => {
                out.push(TYPE_ROUTES);
                let n = u16::try_from(routes.len())
                    .map_err(|_| ControlError::FrameTooLong(routes.len()))?;
                out.extend_from_slice(&n.to_be_bytes());
                for r in routes {
                    out.extend_from_slice(&r.dest.to_be_bytes());
                    out.extend_from_slice(&r.seqno.to_be_bytes());
                    out.extend_from_slice(&r.metric.to_be_bytes());
                    let path = &r.path[..r.path.len().min(MAX_ROUTE_PATH)];
                    out.push(path.len() as u8);
                    for id in path {
                        out.extend_from_slice(&id.to_be_bytes());
                    }
                }
            }
            Message::Request { dest, seqno, hops } => {
                out.push(TYPE_REQUEST);
                out.extend_from_slice(&dest.to_be_bytes());
                out.extend_from_slice(&seqno.to_be_bytes());
                out.push(*hops);
            }
            Message::NodeInfo(info) => {
                out.push(TYPE_SIGNED_NODE_INFO);
                info.put_fields(out)?;
                put_bytes16(out, &info.signature)?;
            }
            Message::LegacyNodeInfo(info) => {
                out.push(TYPE_NODE_INFO);
                info.put_fields(out)?;
            }
            Message::HostDrops(host) => {
                out.push(TYPE_HOST_DROPS);
                out.extend_from_slice(host);
            }
            Message::Instance(id) => {
                out.push(TYPE_INSTANCE);
                out.extend_from_slice(&id.to_be_bytes());
            }
            Message::Unknown(kind) => out.push(*kind),
        }
        let len = out.len() - start - FRAME_HEADER_LEN;
        let len16 = u16::try_from(len)
            .ok()
            .filter(|l| usize::from(*l) <= MAX_FRAME_LEN)
            .ok_or(ControlError::FrameTooLong(len))?;
        out[start..start + FRAME_HEADER_LEN].copy_from_slice(&len16.to_be_bytes());
        Ok(())
    }

    /// Reads the length field of a frame; errors if it is out of bounds.
    pub fn frame_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, ControlError> {
        let len = usize::from(u16::from_be_bytes(header));
        if len == 0 {
            return Err(ControlError::Empty);
        }
        if len > MAX_FRAME_LEN {
            return Err(ControlError::FrameTooLong(len));
        }
        Ok(len)
    }

    /// Decodes the frame body that follows the length field (type byte first).
    pub fn decode_body(body: &[u8]) -> Result<Message, ControlError> {
        let (&kind, rest) = body.split_first().ok_or(ControlError::Empty)?;
        let mut r = Reader { kind, rest };
        let msg = match kind {
            TYPE_HELLO => {
                let min_version = r.u8()?;
                let max_version = r.u8()?;
                let mtu = u16::from_be_bytes(r.array()?);
                let modes = Modes::from_bits(r.u8()?);
                let name = r.string()?;
                Message::Hello(Hello {
                    min_version,
                    max_version,
                    name,
                    mtu,
                    modes,
                })
            }
            TYPE_PING => Message::Ping(u64::from_be_bytes(r.array()?)),
            TYPE_PONG => Message::Pong(u64::from_be_bytes(r.array()?)),
            TYPE_GOODBYE => Message::Goodbye(r.string()?),
            TYPE_ROUTES => {
                let n = usize::from(u16::from_be_bytes(r.array()?));
                let mut routes = Vec::with_capacity(n.min(MAX_FRAME_LEN / ROUTE_ENTRY_LEN));
                for _ in 0..n {
                    let dest = NodeId::from_be_bytes(r.array()?);
                    let seqno = u16::from_be_bytes(r.array()?);
                    let metric = u16::from_be_bytes(r.array()?);
                    let hops = usize::from(r.u8()?);
                    if hops > MAX_ROUTE_PATH {
                        return Err(ControlError::Truncated { kind });
                    }
                    let mut path = Vec::with_capacity(hops);
                    for _ in 0..hops {
                        path.push(NodeId::from_be_bytes(r.array()?));
                    }
                    routes.push(RouteEntry {
                        dest,
                        seqno,
                        metric,
                        path,
                    });
                }
                Message::Routes(routes)
            }
            TYPE_REQUEST => Message::Request {
                dest: NodeId::from_be_bytes(r.array()?),
                seqno: u16::from_be_bytes(r.array()?),
                hops: r.u8()?,
            },
            TYPE_NODE_INFO => Message::LegacyNodeInfo(NodeInfo::read_fields(&mut r)?),
            TYPE_SIGNED_NODE_INFO => {
                let mut info = NodeInfo::read_fields(&mut r)?;
                info.signature = r.bytes16()?.to_vec();
                Message::NodeInfo(info)
            }
            TYPE_HOST_DROPS => Message::HostDrops(r.array()?),
            TYPE_INSTANCE => Message::Instance(u64::from_be_bytes(r.array()?)),
            other => return Ok(Message::Unknown(other)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Decodes one whole frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame, otherwise the
    /// message and the number of bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, ControlError> {
        let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let len = Self::frame_len([header[0], header[1]])?;
        let Some(body) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
            return Ok(None);
        };
        Ok(Some((Self::decode_body(body)?, FRAME_HEADER_LEN + len)))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), ControlError> {
    let len = u8::try_from(s.len()).map_err(|_| ControlError::StringTooLong(s.len()))?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_bytes16(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), ControlError> {
    let len = u16::try_from(bytes.len()).map_err(|_| ControlError::FrameTooLong(bytes.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

struct Reader<'a> {
    kind: u8,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ControlError> {
        if self.rest.len() < n {
            return Err(ControlError::Truncated { kind: self.kind });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ControlError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ControlError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A u16 length, then that many bytes.
    fn bytes16(&mut self) -> Result<&'a [u8], ControlError> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        self.take(len)
    }

    fn string(&mut self) -> Result<String, ControlError> {
        let len = usize::from(self.u8()?);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ControlError::InvalidUtf8)
    }

    fn finish(self) -> Result<(), ControlError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ControlError::TrailingBytes {
                kind: self.kind,
                extra: self.rest.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello() -> Hello {
        Hello {
            min_version: 1,
            max_version: 1,
            name: "node-a".into(),
            mtu: 1400,
            modes: Modes {
                l3: true,
                l2: false,
            },
        }
    }

    #[test]
    fn hello_has_documented_layout() {
        let mut out = Vec::new();
        Message::Hello(hello()).encode(&mut out).unwrap();
        assert_eq!(
            out,
            [
                &[0, 13, TYPE_HELLO, 1, 1, 0x05, 0x78, 1, 6][..],
                b"node-a".as_slice()
            ]
            .concat()
        );
    }

    #[test]
    fn frames_decode_back_to_back() {
        let mut out = Vec::new();
        Message::Ping(9).encode(&mut out).unwrap();
        Message::Goodbye("shutdown".into())
            .encode(&mut out)
            .unwrap();
        let (first, n) = Message::decode(&out).unwrap().unwrap();
        assert_eq!(first, Message::Ping(9));
        let (second, m) = Message::decode(&out[n..]).unwrap().unwrap();
        assert_eq!(second, Message::Goodbye("shutdown".into()));
        assert_eq!(n + m, out.len());
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let mut out = Vec::new();
        Message::Pong(1).encode(&mut out).unwrap();
        for cut in 0..out.len() {
            assert_eq!(Message::decode(&out[..cut]), Ok(None));
        }
    }

    #[test]
    fn instance_has_documented_layout() {
        let mut out = Vec::new();
        Message::Instance(0x0102_0304_0506_0708)
            .encode(&mut out)
            .unwrap();
        assert_eq!(out, [0, 9, TYPE_INSTANCE, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn host_drops_has_documented_layout() {
        let mut out = Vec::new();
        Message::HostDrops([7; HOST_ID_LEN])
            .encode(&mut out)
            .unwrap();
        assert_eq!(out, [&[0, 17, TYPE_HOST_DROPS][..], &[7; 16]].concat());
        assert_eq!(
            Message::decode(&out[..out.len() - 1]),
            Ok(None),
            "a short buffer waits for the rest"
        );
        let mut short = out.clone();
        short[1] = 16;
        short.pop();
        assert_eq!(
            Message::decode(&short),
            Err(ControlError::Truncated {
                kind: TYPE_HOST_DROPS
            })
        );
    }

    #[test]
    fn unknown_type_is_skippable() {
        let frame = [0, 3, 0x7f, 0xaa, 0xbb];
        assert_eq!(
            Message::decode(&frame),
            Ok(Some((Message::Unknown(0x7f), 5)))
        );
    }

    #[test]
    fn refuses_oversized_truncated_and_trailing() {
        assert_eq!(
            Message::decode(&[0xff, 0xff]),
            Err(ControlError::FrameTooLong(0xffff))
        );
        assert_eq!(
            Message::decode(&[0, 3, TYPE_PING, 0, 0]),
            Err(ControlError::Truncated { kind: TYPE_PING })
        );
        assert_eq!(
            Message::decode(&[0, 10, TYPE_PING, 0, 0, 0, 0, 0, 0, 0, 0, 9]),
            Err(ControlError::TrailingBytes {
                kind: TYPE_PING,
                extra: 1
            })
        );
        assert_eq!(Message::decode(&[0, 0]), Err(ControlError::Empty));
    }

    #[test]
    fn route_frames_have_documented_layout() {
        let mut out = Vec::new();
        let entry = RouteEntry {
            dest: NodeId(1),
            seqno: 2,
            metric: 3,
            path: vec![NodeId(9)],
        };
        Message::Routes(vec![entry]).encode(&mut out).unwrap();
        assert_eq!(
            out,
            [
                0,
                24,
                TYPE_ROUTES,
                0,
                1,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                1,
                0,
                2,
                0,
                3,
                1,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                9
            ]
        );
    }

    #[test]
    fn route_frames_split_to_fit_and_round_trip() {
        let entries: Vec<RouteEntry> = (0..500)
            .map(|i| RouteEntry {
                dest: NodeId(i),
                seqno: 1,
                metric: 10,
                path: (0..(i % 5)).map(NodeId).collect(),
            })
            .collect();
        let frames = route_frames(entries.clone());
        assert!(frames.len() > 1);
        let mut decoded = Vec::new();
        for f in frames {
            let mut out = Vec::new();
            f.encode(&mut out).unwrap();
            assert!(out.len() <= MAX_FRAME_LEN + FRAME_HEADER_LEN);
            match Message::decode(&out).unwrap().unwrap().0 {
                Message::Routes(r) => decoded.extend(r),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(decoded, entries);
    }

    #[test]
    fn route_paths_longer_than_the_limit_are_refused() {
        let mut body = vec![TYPE_ROUTES, 0, 1];
        body.extend_from_slice(&[0; 12]);
        body.push(MAX_ROUTE_PATH as u8 + 1);
        body.extend(std::iter::repeat_n(0u8, 8 * (MAX_ROUTE_PATH + 1)));
        assert!(Message::decode_body(&body).is_err());
    }

    #[test]
    fn node_info_refuses_bad_prefixes() {
        // Address family 5 does not exist; prefix length 33 does not fit IPv4.
        let mut frame = vec![TYPE_NODE_INFO];
        frame.extend_from_slice(&[0; 8]);
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&[1, 0, 0, 1, 5]);
        assert!(Message::decode_body(&frame).is_err());
        let mut frame = vec![TYPE_NODE_INFO];
        frame.extend_from_slice(&[0; 8]);
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&[1, 0, 0, 1, 4, 10, 0, 0, 1, 33]);
        assert!(Message::decode_body(&frame).is_err());
    }

    fn node_info() -> NodeInfo {
        NodeInfo {
            origin: NodeId(0x0102_0304_0506_0708),
            version: 0x0a0b_0c0d,
            modes: Modes { l3: true, l2: true },
            certificate: vec![0xc0, 0xc1],
            prefixes: vec![Prefix {
                addr: std::net::IpAddr::from([10, 1, 2, 0]),
                len: 24,
            }],
            signature: vec![0x51, 0x52, 0x53],
        }
    }

    #[test]
    fn signed_node_info_has_documented_layout() {
        let mut out = Vec::new();
        Message::NodeInfo(node_info()).encode(&mut out).unwrap();
        let fields = [
            &[1, 2, 3, 4, 5, 6, 7, 8][..],
            &[0x0a, 0x0b, 0x0c, 0x0d],
            &[3],
            &[0, 2, 0xc0, 0xc1],
            &[1, 4, 10, 1, 2, 0, 24],
        ]
        .concat();
        let expected = [
            &[0, 30, TYPE_SIGNED_NODE_INFO][..],
            &fields,
            &[0, 3, 0x51, 0x52, 0x53],
        ]
        .concat();
        assert_eq!(out, expected);
        assert_eq!(
            node_info().signed_payload().unwrap(),
            [NODE_INFO_SIGNATURE_CONTEXT, &fields].concat(),
            "the signature covers every field but itself, after the context"
        );
    }

    #[test]
    fn legacy_node_info_carries_no_signature() {
        let mut out = Vec::new();
        Message::LegacyNodeInfo(node_info())
            .encode(&mut out)
            .unwrap();
        assert_eq!(out[2], TYPE_NODE_INFO);
        let (decoded, used) = Message::decode(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(
            decoded,
            Message::LegacyNodeInfo(NodeInfo {
                signature: Vec::new(),
                ..node_info()
            })
        );
    }

    #[test]
    fn signed_payload_changes_with_every_field() {
        let base = node_info().signed_payload().unwrap();
        let changed: [fn(&mut NodeInfo); 5] = [
            |i| i.origin.0 ^= 1,
            |i| i.version += 1,
            |i| i.modes.l2 = false,
            |i| i.certificate.push(0),
            |i| i.prefixes[0].len = 25,
        ];
        for change in changed {
            let mut info = node_info();
            change(&mut info);
            assert_ne!(info.signed_payload().unwrap(), base);
        }
        let mut info = node_info();
        info.signature.clear();
        assert_eq!(info.signed_payload().unwrap(), base);
    }

    #[test]
    fn failed_encode_leaves_the_buffer_as_it_was() {
        let mut out = Vec::new();
        Message::Ping(7).encode(&mut out).unwrap();
        let before = out.clone();
        let too_many = NodeInfo {
            prefixes: vec![node_info().prefixes[0]; 256],
            ..node_info()
        };
        let too_long = NodeInfo {
            certificate: vec![0; MAX_FRAME_LEN],
            ..node_info()
        };
        for msg in [
            Message::Goodbye("x".repeat(300)),
            Message::NodeInfo(too_many),
            Message::NodeInfo(too_long),
        ] {
            assert!(msg.encode(&mut out).is_err(), "{msg:?}");
            assert_eq!(out, before);
        }
    }

    #[test]
    fn refuses_invalid_utf8() {
        assert_eq!(
            Message::decode(&[0, 3, TYPE_GOODBYE, 1, 0xff]),
            Err(ControlError::InvalidUtf8)
        );
    }

    #[test]
    fn encode_refuses_long_strings() {
        let mut out = Vec::new();
        let long = "x".repeat(300);
        assert_eq!(
            Message::Goodbye(long).encode(&mut out),
            Err(ControlError::StringTooLong(300))
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn decode_inverts_encode(
            name in "[a-z0-9-]{1,63}",
            mtu in any::<u16>(),
            min in any::<u8>(),
            max in any::<u8>(),
            l2 in any::<bool>(),
            seq in any::<u64>(),
        ) {
            let msgs = samples(name, mtu, min, max, l2, seq);
            for msg in msgs {
                let mut out = Vec::new();
                msg.encode(&mut out).unwrap();
                prop_assert_eq!(Message::decode(&out).unwrap(), Some((msg, out.len())));
            }
        }

        /// Valid frames with a few bytes changed, some also cut short, reach deeper into
        /// the decoder than random bytes do; it must still answer without a panic, and
        /// never claim more bytes than it was given.
        #[test]
        fn decode_never_panics_on_changed_frames(
            seq in any::<u64>(),
            min in any::<u8>(),
            max in any::<u8>(),
            writes in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
            cut in proptest::option::of(any::<proptest::sample::Index>()),
        ) {
            for msg in samples("node-a".into(), 1400, min, max, true, seq) {
                let mut out = Vec::new();
                msg.encode(&mut out).unwrap();
                for (at, byte) in &writes {
                    let i = at.index(out.len());
                    out[i] = *byte;
                }
                if let Some(at) = &cut {
                    out.truncate(at.index(out.len()));
                }
                if let Ok(Some((_, used))) = Message::decode(&out) {
                    prop_assert!(used <= out.len());
                }
            }
        }
    }

    /// One message of every kind, shaped by the arguments.
    fn samples(name: String, mtu: u16, min: u8, max: u8, l2: bool, seq: u64) -> Vec<Message> {
        vec![
            Message::Hello(Hello {
                min_version: min,
                max_version: max,
                name: name.clone(),
                mtu,
                modes: Modes { l3: !l2, l2 },
            }),
            Message::Ping(seq),
            Message::Pong(seq),
            Message::Goodbye(name),
            Message::Routes(vec![
                RouteEntry {
                    dest: NodeId(seq),
                    seqno: mtu,
                    metric: 0xffff,
                    path: vec![NodeId(seq); usize::from(max % 17)]
                };
                usize::from(min % 16)
            ]),
            Message::Request {
                dest: NodeId(seq),
                seqno: mtu,
                hops: max,
            },
            Message::NodeInfo(NodeInfo {
                origin: NodeId(seq),
                version: u32::from(mtu),
                modes: Modes { l3: true, l2 },
                certificate: vec![min; usize::from(max) * 3],
                prefixes: vec![
                    Prefix {
                        addr: std::net::IpAddr::from([10, 0, min, 1]),
                        len: 24,
                    },
                    Prefix {
                        addr: std::net::IpAddr::from([0xfd; 16]),
                        len: 64,
                    },
                ],
                signature: vec![max; usize::from(min % 80)],
            }),
            Message::LegacyNodeInfo(NodeInfo {
                origin: NodeId(seq),
                version: u32::from(mtu),
                modes: Modes { l3: l2, l2 },
                certificate: vec![max; usize::from(min) * 2],
                prefixes: vec![Prefix {
                    addr: std::net::IpAddr::from([192, 0, 2, max]),
                    len: 32,
                }],
                signature: Vec::new(),
            }),
            Message::HostDrops(seq.to_be_bytes().repeat(2).try_into().unwrap()),
            Message::Instance(seq),
        ]
    }
}
