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
//! carries a whole IP packet (RFC 9484 section 6). No IO; every parser takes untrusted
//! bytes.

use thiserror::Error;

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
