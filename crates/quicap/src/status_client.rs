//! The client side of the control socket, for `quicap status`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::status::Status;

/// Asks the node listening on `socket` for its status.
pub fn query(socket: &Path) -> Result<Status> {
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!(
            "no quicap node running (no control socket at {})",
            socket.display()
        ),
        std::io::ErrorKind::ConnectionRefused => anyhow!(
            "no quicap node running (stale control socket at {})",
            socket.display()
        ),
        std::io::ErrorKind::PermissionDenied => anyhow!(
            "control socket {}: permission denied (run as root)",
            socket.display()
        ),
        _ => anyhow!("control socket {}: {e}", socket.display()),
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    stream
        .write_all(b"status\n")
        .context("sending the status request")?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .context("reading the node's status")?;
    serde_json::from_str(&reply)
        .map_err(|e| anyhow!("unexpected answer from {}: {e}", socket.display()))
}
