//! Control frames read from a link's control stream, with every way a peer can break
//! the framing named: the reason goes into the log and into the close frame the peer
//! receives (close code PROTOCOL_VIOLATION).

use quicap_wire::control::FRAME_HEADER_LEN;
use quicap_wire::{ControlError, Message};
use thiserror::Error;

use crate::link::h3::RecvError;
use crate::link::ControlRecv;

/// Why no message could be read.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The connection is gone (closed by either side, timed out): nothing to report.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The peer broke the protocol.
    #[error("{0}")]
    Violation(String),
}

/// Reads the next control message from `recv`.
pub async fn read_message(recv: &mut ControlRecv) -> Result<Message, ReadError> {
    match recv {
        ControlRecv::Quic(recv) => {
            let mut header = [0u8; FRAME_HEADER_LEN];
            recv.read_exact(&mut header)
                .await
                .map_err(|e| stream_error(e, "between frames", "inside a frame header"))?;
            let len = Message::frame_len(header).map_err(frame_error)?;
            let mut body = vec![0u8; len];
            recv.read_exact(&mut body)
                .await
                .map_err(|e| stream_error(e, "inside a frame", "inside a frame"))?;
            Message::decode_body(&body).map_err(frame_error)
        }
        ControlRecv::Tcp(recv) => match recv.next().await {
            Some(body) => Message::decode_body(&body).map_err(frame_error),
            None => Err(ReadError::Lost("link closed".into())),
        },
        ControlRecv::H3(recv) => match recv.next().await {
            Ok(body) => Message::decode_body(&body).map_err(frame_error),
            Err(RecvError::Lost(e)) => Err(ReadError::Lost(e)),
            Err(RecvError::Violation(e)) => Err(ReadError::Violation(e)),
        },
    }
}

fn frame_error(e: ControlError) -> ReadError {
    ReadError::Violation(format!("malformed control frame: {e}"))
}

/// What a failed read says about the peer; `at_start` and `partway` say where the
/// stream ended when it ended before the first byte and after some.
fn stream_error(e: quinn::ReadExactError, at_start: &str, partway: &str) -> ReadError {
    use quinn::{ReadError as R, ReadExactError as E};
    match e {
        E::FinishedEarly(0) => ReadError::Violation(format!("control stream ended {at_start}")),
        E::FinishedEarly(n) => {
            ReadError::Violation(format!("control stream ended {partway}, after {n} bytes"))
        }
        E::ReadError(R::ConnectionLost(c)) => ReadError::Lost(c.to_string()),
        E::ReadError(R::Reset(code)) => {
            ReadError::Violation(format!("control stream reset by the peer (code {code})"))
        }
        E::ReadError(other) => ReadError::Violation(format!("control stream unusable: {other}")),
    }
}
