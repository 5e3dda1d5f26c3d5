//! The local control socket: a Unix stream socket, readable and writable by root only,
//! on which `quicap status` asks a running node for its status.
//!
//! Protocol: the client sends one line (`status`), the node answers with one line of
//! JSON ([`crate::status::Status`]) and closes the connection.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tracing::debug;

use super::Node;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds the control socket at `path`: creates its directory (0700) if needed, replaces
/// a stale socket, refuses if another node answers on it, and makes it 0600.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    let ctx = || format!("control socket {}", path.display());
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).with_context(ctx)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(ctx)?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "{}: another quicap is running with this control socket (set node.control-socket)",
                ctx()
            );
        }
        std::fs::remove_file(path).with_context(ctx)?;
    }
    let listener =
        std::os::unix::net::UnixListener::bind(path).map_err(|e| anyhow!("{}: {e}", ctx()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).with_context(ctx)?;
    listener.set_nonblocking(true).with_context(ctx)?;
    Ok(listener)
}

pub async fn serve(node: Arc<Node>, listener: std::os::unix::net::UnixListener) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "control socket unusable; quicap status will not work");
            return;
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, answer(&node, stream)).await {
                debug!(error = %e, "control request timed out");
            }
        });
    }
}

async fn answer(node: &Node, stream: tokio::net::UnixStream) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).take(256).read_line(&mut line).await?;
    let reply = match line.trim() {
        "status" => serde_json::to_string(&node.status())?,
        other => serde_json::to_string(
            &serde_json::json!({ "error": format!("unknown request {other:?}") }),
        )?,
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await?;
    Ok(())
}
