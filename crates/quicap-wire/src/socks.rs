//! SOCKS5 (RFC 1928) and its username/password authentication (RFC 1929), the
//! messages a node's SOCKS5 listener reads from applications and writes back.
//!
//! ```text
//!  client                                   node
//!  05 n methods...                  ──>
//!                                   <──     05 method (00 none, 02 username/password,
//!                                                      ff none acceptable)
//!  [01 ulen user plen pass          ──>
//!                                   <──     01 status (00 ok)]
//!  05 cmd 00 atyp addr port         ──>     cmd: 01 CONNECT, 03 UDP ASSOCIATE
//!                                   <──     05 rep 00 atyp addr port
//! ```
//!
//! An address (`atyp addr`) is `01` and 4 bytes, `04` and 16 bytes, or `03`, a length
//! and a host name; the port follows, big-endian. A UDP datagram to or from the relay
//! of UDP ASSOCIATE is `00 00 frag atyp addr port data`.
//!
//! Parsers take what has arrived so far: `Ok(None)` asks for more bytes; `Ok(Some((m,
//! n)))` is a message of the first `n` bytes. Nothing here allocates for more than the
//! bytes given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

pub const VERSION: u8 = 5;
/// The version byte of RFC 1929's username/password subnegotiation.
pub const USERPASS_VERSION: u8 = 1;

pub const METHOD_NONE: u8 = 0x00;
pub const METHOD_USERPASS: u8 = 0x02;
pub const METHOD_UNACCEPTABLE: u8 = 0xff;

const ATYP_V4: u8 = 0x01;
const ATYP_NAME: u8 = 0x03;
const ATYP_V6: u8 = 0x04;

/// Where a flow goes: an address, or a host name the egress resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Addr(SocketAddr),
    /// A host name (1-255 bytes, not checked further here) and a port.
    Name(String, u16),
}

impl Target {
    pub fn port(&self) -> u16 {
        match self {
            Target::Addr(a) => a.port(),
            Target::Name(_, p) => *p,
        }
    }

    /// Appends the address in SOCKS5's form (`atyp addr port`).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), SocksError> {
        match self {
            Target::Addr(SocketAddr::V4(a)) => {
                out.push(ATYP_V4);
                out.extend_from_slice(&a.ip().octets());
            }
            Target::Addr(SocketAddr::V6(a)) => {
                out.push(ATYP_V6);
                out.extend_from_slice(&a.ip().octets());
            }
            Target::Name(name, _) => {
                let len = u8::try_from(name.len()).map_err(|_| SocksError::NameTooLong)?;
                if len == 0 {
                    return Err(SocksError::EmptyName);
                }
                out.push(ATYP_NAME);
                out.push(len);
                out.extend_from_slice(name.as_bytes());
            }
        }
        out.extend_from_slice(&self.port().to_be_bytes());
        Ok(())
    }

    /// Reads an address in SOCKS5's form from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Option<(Target, usize)>, SocksError> {
        let Some(&atyp) = buf.first() else {
            return Ok(None);
        };
        let (addr_len, start) = match atyp {
            ATYP_V4 => (4, 1),
            ATYP_V6 => (16, 1),
            ATYP_NAME => match buf.get(1) {
                None => return Ok(None),
                Some(0) => return Err(SocksError::EmptyName),
                Some(&n) => (usize::from(n), 2),
            },
            other => return Err(SocksError::AddressType(other)),
        };
        let end = start + addr_len + 2;
        if buf.len() < end {
            return Ok(None);
        }
        let addr = &buf[start..start + addr_len];
        let port = u16::from_be_bytes([buf[end - 2], buf[end - 1]]);
        let target = match atyp {
            ATYP_V4 => {
                let octets: [u8; 4] = addr.try_into().map_err(|_| SocksError::Truncated)?;
                Target::Addr(SocketAddr::new(Ipv4Addr::from(octets).into(), port))
            }
            ATYP_V6 => {
                let octets: [u8; 16] = addr.try_into().map_err(|_| SocksError::Truncated)?;
                Target::Addr(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
            }
            _ => {
                let name = std::str::from_utf8(addr).map_err(|_| SocksError::NameNotUtf8)?;
                // A name that is an address literal is that address.
                match name.parse::<IpAddr>() {
                    Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
                    Err(_) => Target::Name(name.to_owned(), port),
                }
            }
        };
        Ok(Some((target, end)))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Name(n, p) => write!(f, "{}:{p}", crate::escape(n)),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SocksError {
    #[error("not SOCKS version 5 (first byte {0:#04x})")]
    Version(u8),
    #[error("a greeting that offers no method")]
    NoMethods,
    #[error("username/password subnegotiation of version {0:#04x}")]
    UserPassVersion(u8),
    #[error("unknown address type {0:#04x}")]
    AddressType(u8),
    #[error("an empty host name")]
    EmptyName,
    #[error("a host name longer than 255 bytes")]
    NameTooLong,
    #[error("a host name that is not UTF-8")]
    NameNotUtf8,
    #[error("a nonzero reserved byte")]
    Reserved,
    #[error("a fragmented UDP datagram (fragment {0})")]
    Fragmented(u8),
    #[error("truncated")]
    Truncated,
}

/// The methods a client's greeting offers.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<(&[u8], usize)>, SocksError> {
    let (Some(&version), Some(&n)) = (buf.first(), buf.get(1)) else {
        if let Some(&v) = buf.first() {
            if v != VERSION {
                return Err(SocksError::Version(v));
            }
        }
        return Ok(None);
    };
    if version != VERSION {
        return Err(SocksError::Version(version));
    }
    if n == 0 {
        return Err(SocksError::NoMethods);
    }
    let end = 2 + usize::from(n);
    Ok(buf.get(2..end).map(|methods| (methods, end)))
}

/// A username and password (RFC 1929), as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub username: &'a [u8],
    pub password: &'a [u8],
}

pub fn parse_userpass(buf: &[u8]) -> Result<Option<(Credentials<'_>, usize)>, SocksError> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != USERPASS_VERSION {
        return Err(SocksError::UserPassVersion(version));
    }
    let Some(&ulen) = buf.get(1) else {
        return Ok(None);
    };
    let user_end = 2 + usize::from(ulen);
    let Some(&plen) = buf.get(user_end) else {
        return Ok(None);
    };
    let end = user_end + 1 + usize::from(plen);
    if buf.len() < end {
        return Ok(None);
    }
    let credentials = Credentials {
        username: &buf[2..user_end],
        password: &buf[user_end + 1..end],
    };
    Ok(Some((credentials, end)))
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
    UdpAssociate,
    Other(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub target: Target,
}

pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, SocksError> {
    if buf.len() < 3 {
        if let Some(&v) = buf.first() {
            if v != VERSION {
                return Err(SocksError::Version(v));
            }
        }
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(SocksError::Version(buf[0]));
    }
    if buf[2] != 0 {
        return Err(SocksError::Reserved);
    }
    let command = match buf[1] {
        1 => Command::Connect,
        2 => Command::Bind,
        3 => Command::UdpAssociate,
        other => Command::Other(other),
    };
    Ok(Target::decode(&buf[3..])?.map(|(target, n)| (Request { command, target }, 3 + n)))
}

/// The reply codes of RFC 1928 section 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    NetworkUnreachable = 0x03,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

impl Reply {
    pub fn from_code(code: u8) -> Reply {
        match code {
            0x00 => Reply::Succeeded,
            0x02 => Reply::NotAllowed,
            0x03 => Reply::NetworkUnreachable,
            0x04 => Reply::HostUnreachable,
            0x05 => Reply::ConnectionRefused,
            0x06 => Reply::TtlExpired,
            0x07 => Reply::CommandNotSupported,
            0x08 => Reply::AddressTypeNotSupported,
            _ => Reply::GeneralFailure,
        }
    }

    /// How `quicap status` and the log name the outcome.
    pub fn as_str(self) -> &'static str {
        match self {
            Reply::Succeeded => "succeeded",
            Reply::GeneralFailure => "general failure",
            Reply::NotAllowed => "not allowed",
            Reply::NetworkUnreachable => "network unreachable",
            Reply::HostUnreachable => "host unreachable",
            Reply::ConnectionRefused => "connection refused",
            Reply::TtlExpired => "timed out",
            Reply::CommandNotSupported => "command not supported",
            Reply::AddressTypeNotSupported => "address type not supported",
        }
    }
}

/// A reply to a request: `bound` is the address the node uses (for UDP ASSOCIATE,
/// where the client sends its datagrams).
pub fn reply(code: Reply, bound: SocketAddr) -> Vec<u8> {
    let mut out = vec![VERSION, code as u8, 0];
    // An address always encodes.
    let _ = Target::Addr(bound).encode(&mut out);
    out
}

/// A datagram between a client and the UDP relay of UDP ASSOCIATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    pub target: Target,
    pub payload: &'a [u8],
}

/// Reads a client's UDP datagram; a fragmented one is refused (fragmentation is
/// optional in RFC 1928 and clients do not use it).
pub fn parse_udp(buf: &[u8]) -> Result<UdpDatagram<'_>, SocksError> {
    if buf.len() < 4 {
        return Err(SocksError::Truncated);
    }
    if buf[0] != 0 || buf[1] != 0 {
        return Err(SocksError::Reserved);
    }
    if buf[2] != 0 {
        return Err(SocksError::Fragmented(buf[2]));
    }
    let (target, n) = Target::decode(&buf[3..])?.ok_or(SocksError::Truncated)?;
    Ok(UdpDatagram {
        target,
        payload: &buf[3 + n..],
    })
}

/// Writes a datagram from `from` for the client: the header, then `payload`.
pub fn udp_header(from: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0]);
    let _ = Target::Addr(from).encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_greeting_and_a_connect_by_name() {
        assert_eq!(parse_greeting(&[5]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(None));
        assert_eq!(
            parse_greeting(&[5, 2, 0, 2, 9]),
            Ok(Some((&[0u8, 2][..], 4)))
        );
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(SocksError::Version(4)));
        assert_eq!(parse_greeting(&[5, 0]), Err(SocksError::NoMethods));
        let mut request = vec![5, 1, 0];
        Target::Name("example.org".into(), 443)
            .encode(&mut request)
            .unwrap();
        for cut in 0..request.len() {
            assert_eq!(parse_request(&request[..cut]), Ok(None), "{cut}");
        }
        let (r, n) = parse_request(&request).unwrap().unwrap();
        assert_eq!(n, request.len());
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.target, Target::Name("example.org".into(), 443));
        assert_eq!(r.target.to_string(), "example.org:443");
    }

    #[test]
    fn addresses_and_names_that_are_addresses() {
        let v6: SocketAddr = "[fd00::1]:53".parse().unwrap();
        let mut out = Vec::new();
        Target::Addr(v6).encode(&mut out).unwrap();
        assert_eq!(out.len(), 1 + 16 + 2);
        assert_eq!(
            Target::decode(&out),
            Ok(Some((Target::Addr(v6), out.len())))
        );
        let mut literal = vec![ATYP_NAME, 8];
        literal.extend_from_slice(b"10.0.0.1");
        literal.extend_from_slice(&80u16.to_be_bytes());
        let (t, _) = Target::decode(&literal).unwrap().unwrap();
        assert_eq!(t, Target::Addr("10.0.0.1:80".parse().unwrap()));
        assert_eq!(Target::decode(&[9, 0]), Err(SocksError::AddressType(9)));
        assert_eq!(Target::decode(&[ATYP_NAME, 0]), Err(SocksError::EmptyName));
        let long = Target::Name("a".repeat(256), 1);
        assert_eq!(long.encode(&mut Vec::new()), Err(SocksError::NameTooLong));
    }

    #[test]
    fn username_and_password() {
        let msg = [1, 3, b'b', b'o', b'b', 2, b'p', b'w'];
        let (c, n) = parse_userpass(&msg).unwrap().unwrap();
        assert_eq!((c.username, c.password, n), (&b"bob"[..], &b"pw"[..], 8));
        assert_eq!(parse_userpass(&msg[..5]), Ok(None));
        assert_eq!(parse_userpass(&[5, 0]), Err(SocksError::UserPassVersion(5)));
    }

    #[test]
    fn udp_datagrams_and_replies() {
        let from: SocketAddr = "192.0.2.1:5353".parse().unwrap();
        let mut d = Vec::new();
        udp_header(from, &mut d);
        d.extend_from_slice(b"hi");
        let parsed = parse_udp(&d).unwrap();
        assert_eq!(
            (parsed.target, parsed.payload),
            (Target::Addr(from), &b"hi"[..])
        );
        d[2] = 1;
        assert_eq!(parse_udp(&d), Err(SocksError::Fragmented(1)));
        assert_eq!(parse_udp(&[0, 0]), Err(SocksError::Truncated));
        let r = reply(Reply::HostUnreachable, from);
        assert_eq!(&r[..3], &[5, 4, 0]);
        assert_eq!(Reply::from_code(r[1]), Reply::HostUnreachable);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_greeting(&data);
            let _ = parse_userpass(&data);
            let _ = parse_request(&data);
            let _ = parse_udp(&data);
        }

        #[test]
        fn targets_round_trip(name in "[a-z0-9.-]{1,255}", port: u16) {
            let mut out = Vec::new();
            let target = Target::Name(name, port);
            target.encode(&mut out).unwrap();
            let (back, n) = Target::decode(&out).unwrap().unwrap();
            prop_assert_eq!(n, out.len());
            if let Target::Name(..) = back {
                prop_assert_eq!(back, target);
            }
        }
    }
}
