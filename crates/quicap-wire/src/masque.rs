//! The framing of HTTP Datagrams and capsules (RFC 9297) as an extended CONNECT in the
//! shape of CONNECT-IP (RFC 9484) carries them: how a camouflaged link frames tunnel
//! packets and control messages, and what a MASQUE front will parse.
//!
//! ```text
//!  QUIC DATAGRAM frame payload            request stream, after a 2xx
//! +---------------------+------------+   +----------+-----------+-------+
//! | quarter stream ID   | context ID | … | type (v) | length (v)| value | …
//! | (varint)            | (varint)   |   +----------+-----------+-------+
//! +---------------------+------------+
//! ```
//!
//! All integers are QUIC variable-length integers (RFC 9000 section 16). Context ID 0
//! carries a whole IP packet (RFC 9484 section 6), or a UDP payload (RFC 9298 section
//! 5). Also here: the request paths of the default URI templates of CONNECT-UDP and
//! CONNECT-IP, and CONNECT-IP's address and route capsules (RFC 9484 section 4.7):
//!
//! ```text
//!  ADDRESS_ASSIGN (0x01), ADDRESS_REQUEST (0x02): assigned addresses, each
//!    request ID (v) | IP version (1: 4 or 6) | address (4 or 16) | prefix length (1)
//!  ROUTE_ADVERTISEMENT (0x03): address ranges, each
//!    IP version (1) | start address | end address | IP protocol (1, 0 = any)
//! ```
//!
//! No IO; every parser takes untrusted bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use thiserror::Error;

use crate::socks::Target;

/// The largest QUIC variable-length integer.
pub const VARINT_MAX: u64 = (1 << 62) - 1;
/// Context ID of a datagram that carries an IP packet.
pub const IP_PACKET_CONTEXT: u64 = 0;
/// Capsule type of DATAGRAM capsules (RFC 9297 section 3.5).
pub const DATAGRAM_CAPSULE: u64 = 0x00;
/// Capsule type of a node link's control frames (a private type: RFC 9297 section 3.2
/// has receivers skip capsule types they do not know).
pub const CONTROL_CAPSULE: u64 = 0x5143_4150;
/// Context ID of a node link's relay frames (never registered with a standard peer;
/// RFC 9484 has receivers drop datagrams of unknown contexts).
pub const RELAY_CONTEXT: u64 = 0x5143;
/// Largest capsule value accepted, so that a peer cannot make a reader buffer without
/// bound (a control frame or a datagram is far smaller).
pub const MAX_CAPSULE: u64 = 1 << 16;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MasqueError {
    #[error("truncated")]
    Truncated,
    #[error("value too large for a QUIC variable-length integer")]
    TooLarge,
    #[error("stream {0} is not a client-initiated bidirectional stream")]
    NotARequestStream(u64),
    #[error("capsule of {0} bytes is longer than {MAX_CAPSULE}")]
    CapsuleTooLong(u64),
    #[error("not a path of the URI template {0}")]
    NotTemplate(&'static str),
    #[error("target host {0:?} is not an address or a host name")]
    BadHost(String),
    #[error("target port {0:?} is not a port")]
    BadPort(String),
    #[error("target {0:?} is not *, an address or a prefix")]
    BadScope(String),
    #[error("IP protocol {0:?} is not * or a number below 256")]
    BadProtocol(String),
    #[error("IP version {0} is not 4 or 6")]
    BadVersion(u8),
    #[error("prefix length {0} is too long for its address")]
    BadPrefix(u8),
    #[error("address range ends before it starts")]
    BadRange,
}

/// Capsule types of CONNECT-IP (RFC 9484 section 4.7).
pub const ADDRESS_ASSIGN: u64 = 0x01;
pub const ADDRESS_REQUEST: u64 = 0x02;
pub const ROUTE_ADVERTISEMENT: u64 = 0x03;

/// The path start of CONNECT-UDP's default URI template (RFC 9298 section 3),
/// `/.well-known/masque/udp/{target_host}/{target_port}/`.
pub const UDP_TEMPLATE: &str = "/.well-known/masque/udp/";
/// The path start of CONNECT-IP's default URI template (RFC 9484 section 3),
/// `/.well-known/masque/ip/{target}/{ipproto}/`.
pub const IP_TEMPLATE: &str = "/.well-known/masque/ip/";

/// Splits a path of `template` into its two variables, percent-decoded.
fn two_variables(path: &str, template: &'static str) -> Result<(String, String), MasqueError> {
    let rest = path
        .strip_prefix(template)
        .ok_or(MasqueError::NotTemplate(template))?;
    // A query (none is defined) is ignored, as a URI template's expansion has none.
    let rest = rest.split_once('?').map_or(rest, |(p, _)| p);
    let mut parts = rest.split('/');
    let (Some(a), Some(b), Some(""), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MasqueError::NotTemplate(template));
    };
    let a = percent_decode(a).ok_or(MasqueError::NotTemplate(template))?;
    let b = percent_decode(b).ok_or(MasqueError::NotTemplate(template))?;
    Ok((a, b))
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The target of a CONNECT-UDP request path: an address (IPv6 with or without
/// brackets), or a host name for the proxy to resolve.
pub fn parse_udp_path(path: &str) -> Result<Target, MasqueError> {
    let (host, port) = two_variables(path, UDP_TEMPLATE)?;
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 && !port.starts_with('+') => p,
        _ => return Err(MasqueError::BadPort(port)),
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Target::Addr(SocketAddr::new(ip, port)));
    }
    if !is_host_name(&host) {
        return Err(MasqueError::BadHost(host));
    }
    Ok(Target::Name(host, port))
}

/// A DNS name as a proxy resolves it: labels of letters, digits, `-` and `_`, 1-63
/// bytes each, 253 in all.
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// What a CONNECT-IP request asks to reach: addresses (`None`: any, the template's
/// `*`) and an IP protocol (`None`: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpScope {
    pub target: Option<IpNet>,
    pub protocol: Option<u8>,
}

/// The scope of a CONNECT-IP request path. A target host name (which RFC 9484 allows)
/// is refused: this proxy scopes by address.
pub fn parse_ip_path(path: &str) -> Result<IpScope, MasqueError> {
    let (target, protocol) = two_variables(path, IP_TEMPLATE)?;
    let target_net = match target.as_str() {
        "*" => None,
        t => {
            let bare = t.trim_start_matches('[').trim_end_matches(']');
            let net = bare
                .parse::<IpNet>()
                .or_else(|_| bare.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| MasqueError::BadScope(target.clone()))?;
            Some(net.trunc())
        }
    };
    let protocol = match protocol.as_str() {
        "*" => None,
        p => match p.parse::<u8>() {
            Ok(n) if !p.starts_with('+') => Some(n),
            _ => return Err(MasqueError::BadProtocol(protocol)),
        },
    };
    Ok(IpScope {
        target: target_net,
        protocol,
    })
}

/// One address of an ADDRESS_ASSIGN or ADDRESS_REQUEST capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignedAddress {
    /// The request it answers (0: unsolicited).
    pub request_id: u64,
    pub prefix: IpNet,
}

/// The value of an ADDRESS_ASSIGN or ADDRESS_REQUEST capsule.
pub fn put_addresses(addresses: &[AssignedAddress], out: &mut Vec<u8>) -> Result<(), MasqueError> {
    for a in addresses {
        put_varint(a.request_id, out)?;
        put_ip(a.prefix.addr(), out);
        out.push(a.prefix.prefix_len());
    }
    Ok(())
}

/// The addresses of an ADDRESS_ASSIGN or ADDRESS_REQUEST capsule's value.
pub fn parse_addresses(mut value: &[u8]) -> Result<Vec<AssignedAddress>, MasqueError> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let (request_id, n) = read_varint(value)?;
        let (addr, m) = read_ip(&value[n..])?;
        let len = *value.get(n + m).ok_or(MasqueError::Truncated)?;
        let prefix = IpNet::new(addr, len).map_err(|_| MasqueError::BadPrefix(len))?;
        out.push(AssignedAddress { request_id, prefix });
        value = &value[n + m + 1..];
    }
    Ok(out)
}

/// One range of a ROUTE_ADVERTISEMENT capsule: addresses `start..=end` of one family,
/// for `protocol` (0: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    pub start: IpAddr,
    pub end: IpAddr,
    pub protocol: u8,
}

impl IpRange {
    /// The range of the addresses of `net`.
    pub fn of(net: IpNet, protocol: u8) -> IpRange {
        IpRange {
            start: net.network(),
            end: net.broadcast(),
            protocol,
        }
    }
}

/// The value of a ROUTE_ADVERTISEMENT capsule.
pub fn put_routes(routes: &[IpRange], out: &mut Vec<u8>) -> Result<(), MasqueError> {
    for r in routes {
        if r.start.is_ipv4() != r.end.is_ipv4() || r.start > r.end {
            return Err(MasqueError::BadRange);
        }
        put_ip(r.start, out);
        match r.end {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        }
        out.push(r.protocol);
    }
    Ok(())
}

/// The ranges of a ROUTE_ADVERTISEMENT capsule's value.
pub fn parse_routes(mut value: &[u8]) -> Result<Vec<IpRange>, MasqueError> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let (start, n) = read_ip(value)?;
        let width = n - 1;
        let end_bytes = value.get(n..n + width).ok_or(MasqueError::Truncated)?;
        let end = match start {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(end_bytes).map_err(|_| MasqueError::Truncated)?,
            )),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(end_bytes).map_err(|_| MasqueError::Truncated)?,
            )),
        };
        let protocol = *value.get(n + width).ok_or(MasqueError::Truncated)?;
        if start > end {
            return Err(MasqueError::BadRange);
        }
        out.push(IpRange {
            start,
            end,
            protocol,
        });
        value = &value[n + width + 1..];
    }
    Ok(out)
}

/// Appends an IP version byte and the address.
fn put_ip(addr: IpAddr, out: &mut Vec<u8>) {
    match addr {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}

/// Reads an IP version byte and the address: (address, bytes taken).
fn read_ip(data: &[u8]) -> Result<(IpAddr, usize), MasqueError> {
    let version = *data.first().ok_or(MasqueError::Truncated)?;
    match version {
        4 => {
            let b: [u8; 4] = data
                .get(1..5)
                .ok_or(MasqueError::Truncated)?
                .try_into()
                .map_err(|_| MasqueError::Truncated)?;
            Ok((IpAddr::V4(b.into()), 5))
        }
        6 => {
            let b: [u8; 16] = data
                .get(1..17)
                .ok_or(MasqueError::Truncated)?
                .try_into()
                .map_err(|_| MasqueError::Truncated)?;
            Ok((IpAddr::V6(b.into()), 17))
        }
        v => Err(MasqueError::BadVersion(v)),
    }
}

/// Bytes `value` takes as a QUIC variable-length integer.
pub fn varint_len(value: u64) -> usize {
    match value {
        0..=63 => 1,
        64..=16_383 => 2,
        16_384..=1_073_741_823 => 4,
        _ => 8,
    }
}

/// Appends `value` as a QUIC variable-length integer.
pub fn put_varint(value: u64, out: &mut Vec<u8>) -> Result<(), MasqueError> {
    if value > VARINT_MAX {
        return Err(MasqueError::TooLarge);
    }
    match varint_len(value) {
        1 => out.push(value as u8),
        2 => out.extend_from_slice(&(value as u16 | 0x4000).to_be_bytes()),
        4 => out.extend_from_slice(&(value as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(value | 0xc000_0000_0000_0000).to_be_bytes()),
    }
    Ok(())
}

/// Reads a QUIC variable-length integer: (value, bytes taken).
pub fn read_varint(data: &[u8]) -> Result<(u64, usize), MasqueError> {
    let first = *data.first().ok_or(MasqueError::Truncated)?;
    let len = 1usize << (first >> 6);
    let bytes = data.get(..len).ok_or(MasqueError::Truncated)?;
    let mut value = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        value = (value << 8) | u64::from(*b);
    }
    Ok((value, len))
}

/// The prefix of every HTTP Datagram of the request on `stream_id` carrying an IP
/// packet: its quarter stream ID and context ID 0.
pub fn datagram_prefix(stream_id: u64) -> Result<Vec<u8>, MasqueError> {
    context_prefix(stream_id, IP_PACKET_CONTEXT)
}

/// The prefix of the HTTP Datagrams of the request on `stream_id` in `context`.
pub fn context_prefix(stream_id: u64, context: u64) -> Result<Vec<u8>, MasqueError> {
    if !stream_id.is_multiple_of(4) {
        return Err(MasqueError::NotARequestStream(stream_id));
    }
    let mut out = Vec::with_capacity(16);
    put_varint(stream_id / 4, &mut out)?;
    put_varint(context, &mut out)?;
    Ok(out)
}

/// An HTTP Datagram taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The request stream it belongs to (quarter stream ID × 4).
    pub stream_id: u64,
    pub context_id: u64,
    pub payload: &'a [u8],
}

/// Splits a QUIC DATAGRAM frame's payload into its request stream, context and payload.
pub fn parse_datagram(data: &[u8]) -> Result<Datagram<'_>, MasqueError> {
    let (quarter, a) = read_varint(data)?;
    let (context_id, b) = read_varint(&data[a..])?;
    Ok(Datagram {
        stream_id: quarter.checked_mul(4).ok_or(MasqueError::TooLarge)?,
        context_id,
        payload: &data[a + b..],
    })
}

/// Appends one capsule.
pub fn put_capsule(kind: u64, value: &[u8], out: &mut Vec<u8>) -> Result<(), MasqueError> {
    if value.len() as u64 > MAX_CAPSULE {
        return Err(MasqueError::CapsuleTooLong(value.len() as u64));
    }
    put_varint(kind, out)?;
    put_varint(value.len() as u64, out)?;
    out.extend_from_slice(value);
    Ok(())
}

/// A capsule read from a request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capsule<'a> {
    pub kind: u64,
    pub value: &'a [u8],
    /// Bytes of the stream it took, header included.
    pub len: usize,
}

/// One capsule at the start of `data`: `Ok(None)` while it is incomplete (read more).
/// A capsule announcing more than [`MAX_CAPSULE`] bytes is an error at once.
pub fn parse_capsule(data: &[u8]) -> Result<Option<Capsule<'_>>, MasqueError> {
    let (kind, a) = match read_varint(data) {
        Ok(v) => v,
        Err(MasqueError::Truncated) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (len, b) = match read_varint(&data[a..]) {
        Ok(v) => v,
        Err(MasqueError::Truncated) => return Ok(None),
        Err(e) => return Err(e),
    };
    if len > MAX_CAPSULE {
        return Err(MasqueError::CapsuleTooLong(len));
    }
    let start = a + b;
    let end = start + len as usize;
    Ok(data.get(start..end).map(|value| Capsule {
        kind,
        value,
        len: end,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varints_take_the_sizes_of_rfc_9000() {
        // RFC 9000 appendix A.1's examples.
        for (bytes, value) in [
            (&[0x25][..], 37),
            (&[0x40, 0x25][..], 37),
            (&[0x7b, 0xbd][..], 15_293),
            (&[0x9d, 0x7f, 0x3e, 0x7d][..], 494_878_333),
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c][..],
                151_288_809_941_952_652,
            ),
        ] {
            assert_eq!(read_varint(bytes).unwrap(), (value, bytes.len()));
        }
        assert_eq!(read_varint(&[0x40]), Err(MasqueError::Truncated));
        assert_eq!(read_varint(&[]), Err(MasqueError::Truncated));
        assert_eq!(
            put_varint(VARINT_MAX + 1, &mut Vec::new()),
            Err(MasqueError::TooLarge)
        );
    }

    #[test]
    fn datagrams_of_the_first_request_stream_have_two_bytes_in_front() {
        assert_eq!(datagram_prefix(0).unwrap(), [0, 0]);
        assert_eq!(datagram_prefix(8).unwrap(), [2, 0]);
        assert_eq!(datagram_prefix(2), Err(MasqueError::NotARequestStream(2)));
        let mut frame = datagram_prefix(4).unwrap();
        frame.extend_from_slice(b"packet");
        let d = parse_datagram(&frame).unwrap();
        assert_eq!(
            (d.stream_id, d.context_id, d.payload),
            (4, 0, &b"packet"[..])
        );
        assert_eq!(parse_datagram(&[0x40]), Err(MasqueError::Truncated));
        assert_eq!(parse_datagram(&[0x00]), Err(MasqueError::Truncated));
    }

    #[test]
    fn capsules_wait_for_their_bytes_and_refuse_huge_ones() {
        let mut out = Vec::new();
        put_capsule(DATAGRAM_CAPSULE, b"abc", &mut out).unwrap();
        put_capsule(0x2028d7ee, b"", &mut out).unwrap();
        let first = parse_capsule(&out).unwrap().unwrap();
        assert_eq!((first.kind, first.value), (0, &b"abc"[..]));
        let used = first.len;
        let second = parse_capsule(&out[used..]).unwrap().unwrap();
        assert_eq!(
            (second.kind, second.value, used + second.len),
            (0x2028d7ee, &b""[..], out.len())
        );
        for cut in 0..used {
            assert_eq!(parse_capsule(&out[..cut]), Ok(None), "{cut}");
        }
        let mut huge = Vec::new();
        put_varint(0, &mut huge).unwrap();
        put_varint(MAX_CAPSULE + 1, &mut huge).unwrap();
        assert_eq!(
            parse_capsule(&huge),
            Err(MasqueError::CapsuleTooLong(MAX_CAPSULE + 1))
        );
        assert!(put_capsule(0, &vec![0; MAX_CAPSULE as usize + 1], &mut Vec::new()).is_err());
    }

    #[test]
    fn udp_paths_name_a_host_and_port() {
        let t = |p: &str| parse_udp_path(p);
        assert_eq!(
            t("/.well-known/masque/udp/192.0.2.6/443/"),
            Ok(Target::Addr("192.0.2.6:443".parse().unwrap()))
        );
        assert_eq!(
            t("/.well-known/masque/udp/2001%3Adb8%3A%3A42/53/"),
            Ok(Target::Addr("[2001:db8::42]:53".parse().unwrap()))
        );
        assert_eq!(
            t("/.well-known/masque/udp/%5B2001:db8::42%5D/53/"),
            Ok(Target::Addr("[2001:db8::42]:53".parse().unwrap()))
        );
        assert_eq!(
            t("/.well-known/masque/udp/example.com/8443/"),
            Ok(Target::Name("example.com".into(), 8443))
        );
        for bad in [
            "/.well-known/masque/udp/example.com/0/",
            "/.well-known/masque/udp/example.com/70000/",
            "/.well-known/masque/udp/example.com/+53/",
            "/.well-known/masque/udp/exa%20mple/53/",
            "/.well-known/masque/udp/a..b/53/",
            "/.well-known/masque/udp//53/",
            "/.well-known/masque/udp/host/53",
            "/.well-known/masque/udp/host/53/x/",
            "/.well-known/masque/udp/ho%zzst/53/",
            "/.well-known/masque/ip/host/53/",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ip_paths_scope_by_prefix_and_protocol() {
        assert_eq!(
            parse_ip_path("/.well-known/masque/ip/*/*/"),
            Ok(IpScope {
                target: None,
                protocol: None
            })
        );
        assert_eq!(
            parse_ip_path("/.well-known/masque/ip/192.0.2.0%2F24/17/"),
            Ok(IpScope {
                target: Some("192.0.2.0/24".parse().unwrap()),
                protocol: Some(17)
            })
        );
        assert_eq!(
            parse_ip_path("/.well-known/masque/ip/2001%3Adb8%3A%3A1/*/"),
            Ok(IpScope {
                target: Some("2001:db8::1/128".parse().unwrap()),
                protocol: None
            })
        );
        assert!(parse_ip_path("/.well-known/masque/ip/example.com/*/").is_err());
        assert!(parse_ip_path("/.well-known/masque/ip/*/256/").is_err());
        assert!(parse_ip_path("/.well-known/masque/ip/*/").is_err());
    }

    #[test]
    fn address_and_route_capsules_round_trip_and_refuse_nonsense() {
        let addresses = [
            AssignedAddress {
                request_id: 0,
                prefix: "10.9.0.5/32".parse().unwrap(),
            },
            AssignedAddress {
                request_id: 7,
                prefix: "fd00:9::5/128".parse().unwrap(),
            },
        ];
        let mut out = Vec::new();
        put_addresses(&addresses, &mut out).unwrap();
        assert_eq!(out.len(), (1 + 1 + 4 + 1) + (1 + 1 + 16 + 1));
        assert_eq!(parse_addresses(&out).unwrap(), addresses);
        for cut in 1..out.len() {
            if cut != 7 {
                assert!(parse_addresses(&out[..cut]).is_err(), "{cut}");
            }
        }
        assert_eq!(
            parse_addresses(&[0, 5, 1, 2, 3, 4, 32]),
            Err(MasqueError::BadVersion(5))
        );
        assert_eq!(
            parse_addresses(&[0, 4, 1, 2, 3, 4, 33]),
            Err(MasqueError::BadPrefix(33))
        );

        let routes = [
            IpRange::of("10.9.0.0/24".parse().unwrap(), 0),
            IpRange {
                start: "::".parse().unwrap(),
                end: "ffff::".parse().unwrap(),
                protocol: 17,
            },
        ];
        let mut out = Vec::new();
        put_routes(&routes, &mut out).unwrap();
        assert_eq!(out.len(), (1 + 8 + 1) + (1 + 32 + 1));
        assert_eq!(parse_routes(&out).unwrap(), routes);
        assert_eq!(routes[0].end, "10.9.0.255".parse::<IpAddr>().unwrap());
        assert_eq!(
            parse_routes(&[4, 10, 0, 0, 9, 10, 0, 0, 1, 0]),
            Err(MasqueError::BadRange)
        );
        assert!(parse_routes(&out[..out.len() - 1]).is_err());
        let backwards = IpRange {
            start: "10.0.0.2".parse().unwrap(),
            end: "10.0.0.1".parse().unwrap(),
            protocol: 0,
        };
        assert_eq!(
            put_routes(&[backwards], &mut Vec::new()),
            Err(MasqueError::BadRange)
        );
    }

    proptest! {
        #[test]
        fn varints_round_trip(value in 0..=VARINT_MAX) {
            let mut out = Vec::new();
            put_varint(value, &mut out).unwrap();
            prop_assert_eq!(out.len(), varint_len(value));
            prop_assert_eq!(read_varint(&out).unwrap(), (value, out.len()));
        }

        #[test]
        fn capsules_round_trip(kind in 0..=VARINT_MAX, value in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            put_capsule(kind, &value, &mut out).unwrap();
            let parsed = parse_capsule(&out).unwrap().unwrap();
            prop_assert_eq!((parsed.kind, parsed.value, parsed.len), (kind, &value[..], out.len()));
        }
    }
}
