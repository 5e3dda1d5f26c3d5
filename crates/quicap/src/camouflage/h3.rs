//! The HTTP/3 front: every QUIC connection accepted in camouflage mode is an HTTP/3
//! connection (h3 over quinn), and each of its requests is answered by the site.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use tracing::debug;

use super::site::{Body, Reply, Site};
use super::{read_chunk, BODY_TIMEOUT, REQUEST_BODY_LIMIT};

/// How long a request may take to send its headers.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(10);

type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Serves HTTP/3 on `conn` until the client goes away.
pub async fn serve(conn: quinn::Connection, site: Arc<Site>) {
    let remote = conn.remote_address();
    let mut h3 = match h3::server::builder()
        .enable_extended_connect(true)
        .enable_datagram(true)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await
    {
        Ok(h3) => h3,
        Err(e) => {
            debug!(%remote, error = %e, "HTTP/3 connection not set up");
            return;
        }
    };
    loop {
        match h3.accept().await {
            Ok(Some(resolver)) => {
                let site = site.clone();
                tokio::spawn(async move {
                    let resolved =
                        tokio::time::timeout(HEADERS_TIMEOUT, resolver.resolve_request()).await;
                    match resolved {
                        Ok(Ok((request, stream))) => answer(&site, request, stream).await,
                        Ok(Err(e)) => debug!(%remote, error = %e, "HTTP/3 request refused"),
                        Err(_) => debug!(%remote, "HTTP/3 request headers too slow"),
                    }
                });
            }
            Ok(None) => return,
            Err(e) => {
                debug!(%remote, error = %e, "HTTP/3 connection ended");
                return;
            }
        }
    }
}

async fn answer(site: &Site, request: http::Request<()>, mut stream: Stream) {
    let (parts, ()) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let reply = site.answer(&parts.method, path, &parts.headers, false);
    take_body(&mut stream).await;
    let _ = send(&mut stream, reply).await;
}

/// Takes in a small request body before the answer, as the HTTPS front does; a larger
/// one is stopped with H3_NO_ERROR (RFC 9114 section 4.1.2), a stalled one left to the
/// stream's end. (h3-quinn's `stop_sending` must not follow a read that did not
/// finish: its stream is inside the read then.)
async fn take_body(stream: &mut Stream) {
    let mut taken = 0usize;
    loop {
        match tokio::time::timeout(BODY_TIMEOUT, stream.recv_data()).await {
            Ok(Ok(Some(chunk))) => {
                taken += chunk.remaining();
                if taken > REQUEST_BODY_LIMIT {
                    stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                    return;
                }
            }
            Ok(Ok(None) | Err(_)) | Err(_) => return,
        }
    }
}

async fn send(stream: &mut Stream, reply: Reply) -> anyhow::Result<()> {
    let mut response = http::Response::new(());
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    stream.send_response(response).await?;
    match reply.body {
        Body::Empty => {}
        Body::Bytes(bytes) => stream.send_data(bytes).await?,
        Body::File { path, offset, len } => {
            let mut file = tokio::fs::File::open(&path).await?;
            let mut left = len;
            let mut from = offset;
            while left > 0 {
                let chunk = read_chunk(&mut file, from, left).await?;
                left -= chunk.len() as u64;
                from += chunk.len() as u64;
                stream.send_data(chunk).await?;
            }
        }
    }
    stream.finish().await?;
    Ok(())
}
