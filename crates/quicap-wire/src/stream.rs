//! Records of a link over a byte stream (TLS 1.3 over TCP): what a QUIC connection
//! carries in DATAGRAM frames, its control stream and its close frame, on one stream.
//!
//! ```text
//! +--------+--------------------------------------------------+
//! | len:16 | body (len bytes, at least 1)                     |
//! +--------+--------------------------------------------------+
//!
//! body[0]   record        rest of the body
//! 0x00      control       one control frame without its length: type, payload
//! 0x01      close         close code (32 bits), reason (UTF-8, at most 256 bytes)
//! 0x02      relay         one relay frame (see [`crate::relay`]), as on UDP
//! 0x03-0x0f (reserved)    a receiver closes the link: protocol violation
//! 0x10-0xff datagram      the body is an overlay datagram (its header's version
//!                         nibble is never 0); nothing else in front of it
//! ```
//!
//! An overlay datagram is framed by the 2-byte big-endian length alone, as TunSafe
//! frames WireGuard over TCP, so a sender writes that prefix into the room it leaves in
//! front of the datagram and copies nothing more. A relay frame gets a type byte: on
//! UDP its mark tells it from a QUIC packet, here nothing but the record type would.

use thiserror::Error;

/// Bytes of the length prefix in front of every record.
pub const LEN_PREFIX: usize = 2;
/// The largest record body.
pub const MAX_BODY: usize = u16::MAX as usize;
/// The longest close reason a sender puts in a close record.
pub const MAX_CLOSE_REASON: usize = 256;
/// Bytes in front of the relay frame in a relay record: the length prefix and the type.
pub const RELAY_PREFIX: usize = LEN_PREFIX + 1;

const TYPE_CONTROL: u8 = 0x00;
const TYPE_CLOSE: u8 = 0x01;
const TYPE_RELAY: u8 = 0x02;
/// Bodies starting below this (and above the types defined) are reserved.
const FIRST_DATAGRAM_BYTE: u8 = 0x10;

/// What a record carries; the slices borrow from the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// An overlay datagram (header and packet).
    Datagram(&'a [u8]),
    /// A control frame's type and payload (see [`crate::Message::decode_body`]).
    Control(&'a [u8]),
    /// The sender closes the link.
    Close { code: u32, reason: &'a [u8] },
    /// A relay frame (relay header and the QUIC packet it carries), not yet checked.
    Relay(&'a [u8]),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("record of reserved type {0:#04x}")]
    Reserved(u8),
    #[error("close record of {0} bytes, too short for its code")]
    ShortClose(usize),
    #[error("close reason of {0} bytes (at most {MAX_CLOSE_REASON})")]
    LongReason(usize),
    #[error("record body of {0} bytes does not fit the length prefix")]
    TooLong(usize),
}

/// The length of the first record in `buf`, prefix included, once `buf` holds its
/// prefix: the caller waits for that many bytes, then calls [`parse`].
pub fn record_len(buf: &[u8]) -> Option<Result<usize, RecordError>> {
    let prefix = buf.get(..LEN_PREFIX)?;
    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    Some(if len == 0 {
        Err(RecordError::Empty)
    } else {
        Ok(LEN_PREFIX + len)
    })
}

/// Parses the record in `body` (one record's body, without the length prefix).
pub fn parse(body: &[u8]) -> Result<Record<'_>, RecordError> {
    let (&first, rest) = body.split_first().ok_or(RecordError::Empty)?;
    match first {
        TYPE_CONTROL => Ok(Record::Control(rest)),
        TYPE_CLOSE => {
            let (code, reason) = rest
                .split_first_chunk::<4>()
                .ok_or(RecordError::ShortClose(body.len()))?;
            if reason.len() > MAX_CLOSE_REASON {
                return Err(RecordError::LongReason(reason.len()));
            }
            Ok(Record::Close {
                code: u32::from_be_bytes(*code),
                reason,
            })
        }
        TYPE_RELAY => Ok(Record::Relay(rest)),
        t if t < FIRST_DATAGRAM_BYTE => Err(RecordError::Reserved(t)),
        _ => Ok(Record::Datagram(body)),
    }
}

/// Writes the length prefix of a datagram record whose body is `datagram_len` bytes
/// into `room` (the [`LEN_PREFIX`] bytes in front of it).
pub fn frame_datagram(room: &mut [u8; LEN_PREFIX], datagram_len: usize) -> Result<(), RecordError> {
    let len = u16::try_from(datagram_len).map_err(|_| RecordError::TooLong(datagram_len))?;
    *room = len.to_be_bytes();
    Ok(())
}

/// The [`RELAY_PREFIX`] bytes in front of a relay frame of `frame_len` bytes.
pub fn relay_prefix(frame_len: usize) -> Result<[u8; RELAY_PREFIX], RecordError> {
    let body_len = frame_len + 1;
    let len = u16::try_from(body_len).map_err(|_| RecordError::TooLong(body_len))?;
    let [hi, lo] = len.to_be_bytes();
    Ok([hi, lo, TYPE_RELAY])
}

/// Appends a control record carrying `frame`, one control frame as
/// [`crate::Message::encode`] writes it (its own 2-byte length is replaced by the
/// record's).
pub fn push_control(frame: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
    let body = frame
        .get(crate::control::FRAME_HEADER_LEN..)
        .ok_or(RecordError::Empty)?;
    push(TYPE_CONTROL, &[body], out)
}

/// Appends a close record; a reason longer than [`MAX_CLOSE_REASON`] is cut at a
/// character boundary.
pub fn push_close(code: u32, reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    // Short enough by construction.
    let _ = push(
        TYPE_CLOSE,
        &[&code.to_be_bytes(), &reason.as_bytes()[..end]],
        out,
    );
}

fn push(kind: u8, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), RecordError> {
    let body_len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let len = u16::try_from(body_len).map_err(|_| RecordError::TooLong(body_len))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind);
    for p in parts {
        out.extend_from_slice(p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use proptest::prelude::*;

    /// Splits `buf` into records as a reader does.
    fn records(mut buf: &[u8]) -> Result<Vec<Record<'_>>, RecordError> {
        let mut out = Vec::new();
        while let Some(len) = record_len(buf) {
            let len = len?;
            let Some(record) = buf.get(LEN_PREFIX..len) else {
                break;
            };
            out.push(parse(record)?);
            buf = &buf[len..];
        }
        Ok(out)
    }

    #[test]
    fn control_datagram_and_close_records_round_trip() {
        let mut frame = Vec::new();
        Message::Ping(7).encode(&mut frame).unwrap();
        let mut stream = Vec::new();
        push_control(&frame, &mut stream).unwrap();
        let datagram = [0x10, 0x00, 16, 0, 0x45, 0, 0, 20];
        let mut room = [0u8; LEN_PREFIX];
        frame_datagram(&mut room, datagram.len()).unwrap();
        stream.extend_from_slice(&room);
        stream.extend_from_slice(&datagram);
        push_close(6, "direct link up", &mut stream);
        let relay_frame = [0x3a, 1, 16, 0, 9, 9];
        stream.extend_from_slice(&relay_prefix(relay_frame.len()).unwrap());
        stream.extend_from_slice(&relay_frame);
        let got = records(&stream).unwrap();
        assert_eq!(got.len(), 4);
        let Record::Control(body) = got[0] else {
            panic!("{:?}", got[0]);
        };
        assert_eq!(Message::decode_body(body).unwrap(), Message::Ping(7));
        assert_eq!(got[1], Record::Datagram(&datagram));
        assert_eq!(
            got[2],
            Record::Close {
                code: 6,
                reason: b"direct link up"
            }
        );
        assert_eq!(got[3], Record::Relay(&relay_frame));
    }

    #[test]
    fn malformed_records_are_named() {
        assert_eq!(record_len(&[0, 0]), Some(Err(RecordError::Empty)));
        assert_eq!(record_len(&[0]), None);
        assert_eq!(parse(&[0x03, 1]), Err(RecordError::Reserved(3)));
        assert_eq!(parse(&[0x0f]), Err(RecordError::Reserved(0x0f)));
        assert_eq!(parse(&[0x01, 0, 0]), Err(RecordError::ShortClose(3)));
        let mut long = vec![0x01, 0, 0, 0, 1];
        long.extend(std::iter::repeat_n(b'x', MAX_CLOSE_REASON + 1));
        assert_eq!(
            parse(&long),
            Err(RecordError::LongReason(MAX_CLOSE_REASON + 1))
        );
        let mut room = [0u8; LEN_PREFIX];
        assert_eq!(
            frame_datagram(&mut room, MAX_BODY + 1),
            Err(RecordError::TooLong(MAX_BODY + 1))
        );
        assert_eq!(
            relay_prefix(MAX_BODY),
            Err(RecordError::TooLong(MAX_BODY + 1))
        );
    }

    #[test]
    fn long_close_reasons_are_cut_at_a_character_boundary() {
        let mut out = Vec::new();
        push_close(3, &"é".repeat(200), &mut out);
        let Ok(Record::Close { reason, .. }) = parse(&out[LEN_PREFIX..]) else {
            panic!("not a close record");
        };
        assert_eq!(reason.len(), MAX_CLOSE_REASON);
        assert!(std::str::from_utf8(reason).is_ok());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = records(&bytes);
        }

        #[test]
        fn datagrams_come_back_whole(body in proptest::collection::vec(any::<u8>(), 1..2000)) {
            let mut body = body;
            body[0] |= 0x10;
            let mut stream = vec![0u8; LEN_PREFIX];
            let mut room = [0u8; LEN_PREFIX];
            frame_datagram(&mut room, body.len()).unwrap();
            stream[..LEN_PREFIX].copy_from_slice(&room);
            stream.extend_from_slice(&body);
            prop_assert_eq!(records(&stream).unwrap(), vec![Record::Datagram(&body)]);
        }
    }
}
