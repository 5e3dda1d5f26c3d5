//! The HTTPS front on TCP: HTTP/1.1 and HTTP/2 (hyper) over TLS with the web
//! certificate, each request answered by the site, which advertises HTTP/3 with
//! `Alt-Svc` as web servers do.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::site::{Body, Reply, Site};
use super::{proxy, read_chunk};

/// What a TLS port answers to a plaintext HTTP request, as common web servers do.
pub const PLAINTEXT_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

type ResponseBody = BoxBody<Bytes, std::io::Error>;

/// Serves HTTP/1.1 or HTTP/2 (as ALPN chose) on an established TLS stream until the
/// client goes away.
pub async fn serve<IO>(io: IO, site: Arc<Site>, label: String)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let remote = label.clone();
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let (site, remote) = (site.clone(), remote.clone());
        async move { Ok::<_, Infallible>(respond(&site, &remote, request).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        debug!(remote = %label, error = %e, "HTTPS connection ended");
    }
}

async fn respond(
    site: &Site,
    remote: &str,
    request: http::Request<Incoming>,
) -> http::Response<ResponseBody> {
    let (parts, mut body) = request.into_parts();
    if let (Some(upstream), true) = (site.upstream(), proxy::forwarded(&parts.method)) {
        return match upstream
            .forward(parts, body.map_err(Into::into).boxed_unsync())
            .await
        {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                site.forwarded(&mut parts.headers, true);
                http::Response::from_parts(parts, body.map_err(std::io::Error::other).boxed())
            }
            Err(e) => {
                debug!(%remote, error = %format!("{e:#}"), "upstream site gave no answer");
                into_response(site.bad_gateway(true))
            }
        };
    }
    // The site reads no body, but takes in a small one first, as web servers do: a
    // connection closed on unread data is reset, and the client may lose the answer.
    let mut taken = 0usize;
    while taken <= super::REQUEST_BODY_LIMIT {
        match tokio::time::timeout(super::BODY_TIMEOUT, body.frame()).await {
            Ok(Some(Ok(frame))) => taken += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    into_response(site.answer(&parts.method, path, &parts.headers, true))
}

fn into_response(reply: Reply) -> http::Response<ResponseBody> {
    let body: ResponseBody = match reply.body {
        Body::Empty => Empty::new().map_err(|never| match never {}).boxed(),
        Body::Bytes(bytes) => Full::new(bytes).map_err(|never| match never {}).boxed(),
        Body::File { path, offset, len } => {
            let chunks = futures::stream::unfold(
                (None::<tokio::fs::File>, path, offset, len),
                |(file, path, from, left)| async move {
                    if left == 0 {
                        return None;
                    }
                    let mut file = match file {
                        Some(f) => f,
                        None => match tokio::fs::File::open(&path).await {
                            Ok(f) => f,
                            Err(e) => return Some((Err(e), (None, path, from, 0))),
                        },
                    };
                    match read_chunk(&mut file, from, left).await {
                        Ok(chunk) => {
                            let n = chunk.len() as u64;
                            Some((
                                Ok(Frame::data(chunk)),
                                (Some(file), path, from + n, left - n),
                            ))
                        }
                        Err(e) => Some((Err(e), (None, path, from, 0))),
                    }
                },
            );
            BodyExt::boxed(StreamBody::new(chunks))
        }
    };
    let mut response = http::Response::new(body);
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    response
}
