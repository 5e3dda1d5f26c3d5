//! The web site a node in camouflage mode shows to everyone without a node identity:
//! files from a directory, answered the way a common static file server answers, a
//! built-in page when no directory is configured, or another site's answers when the
//! node is a reverse proxy to it ([`super::proxy`]).
//!
//! The reference is Caddy's `file_server` (2.6, as Debian ships it), which
//! `tests/camouflage.rs` runs beside a node: every method gets the file, a directory
//! with an index file is redirected (308) to its path with a slash and one without is
//! not found, ranges and conditional requests as Go's `http.ServeContent` answers them,
//! `ETag` from the modification time and size, a `Date` on every answer. Differences
//! that remain are listed in `docs/camouflage.md`.
//!
//! No IO beyond reading the site's files; the HTTP/3 and HTTPS fronts turn a
//! [`Reply`] into frames. Whatever a request holds (path, ranges, dates) is parsed here
//! and is untrusted.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::proxy::Upstream;

/// What the site serves.
#[derive(Debug, Clone)]
pub struct Site {
    content: Content,
    /// The `Server` header sent, if any.
    server: Option<HeaderValue>,
    /// The `Alt-Svc` header sent on HTTPS over TCP (`h3=":443"; ma=2592000`).
    alt_svc: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
enum Content {
    Builtin,
    Files(PathBuf),
    Upstream(Arc<Upstream>),
}

/// A response, its body still to be read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body,
}

/// A response body.
#[derive(Debug)]
pub enum Body {
    Empty,
    Bytes(Bytes),
    /// `len` bytes of a file from `offset`.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

/// The built-in page, served when no directory is configured: a page that names no
/// software.
const DEFAULT_PAGE: &str = "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>Welcome</title></head>\n<body>\n<h1>Welcome</h1>\n<p>This site is under construction.</p>\n</body>\n</html>\n";

const INDEX: &str = "index.html";

impl Site {
    /// `root`: the directory served (`None`: the built-in page); `server`: the `Server`
    /// header's value; `h3_port`: the UDP port advertised with `Alt-Svc` on HTTPS.
    pub fn new(root: Option<PathBuf>, server: Option<&str>, h3_port: Option<u16>) -> Site {
        let content = match root {
            Some(root) => Content::Files(root),
            None => Content::Builtin,
        };
        Site::with(content, server, h3_port)
    }

    /// A reverse proxy to `upstream`; `server` replaces the upstream's `Server`
    /// header when given.
    pub fn proxy(upstream: Upstream, server: Option<&str>, h3_port: Option<u16>) -> Site {
        Site::with(Content::Upstream(Arc::new(upstream)), server, h3_port)
    }

    fn with(content: Content, server: Option<&str>, h3_port: Option<u16>) -> Site {
        Site {
            content,
            server: server.and_then(|s| HeaderValue::from_str(s).ok()),
            alt_svc: h3_port
                .and_then(|p| HeaderValue::from_str(&format!("h3=\":{p}\"; ma=2592000")).ok()),
        }
    }

    /// The `Server` header every answer carries, if any.
    pub fn server_header(&self) -> Option<&HeaderValue> {
        self.server.as_ref()
    }

    /// The upstream site requests go to, when the site is a reverse proxy; its
    /// answers then come back through [`Site::forwarded`].
    pub fn upstream(&self) -> Option<&Upstream> {
        match &self.content {
            Content::Upstream(upstream) => Some(upstream),
            _ => None,
        }
    }

    /// The answer to a request; `tcp` says whether it came over HTTPS on TCP (which
    /// advertises HTTP/3). A reverse proxy answers here only what it does not pass on
    /// (CONNECT, see [`super::proxy::forwarded`]).
    pub fn answer(&self, method: &Method, path: &str, headers: &HeaderMap, tcp: bool) -> Reply {
        let reply = match &self.content {
            Content::Builtin => self.builtin(method, path, headers),
            Content::Files(root) => files(root, method, path, headers),
            Content::Upstream(_) => status(StatusCode::METHOD_NOT_ALLOWED),
        };
        self.finish(reply, tcp)
    }

    /// The answer when the upstream site gave none: `502`, as reverse proxies answer.
    pub fn bad_gateway(&self, tcp: bool) -> Reply {
        self.finish(status(StatusCode::BAD_GATEWAY), tcp)
    }

    /// The headers of an upstream's answer as this site sends them: its own `Server`
    /// if one is configured, its own `Alt-Svc` over TCP and none over HTTP/3 (the
    /// upstream's would name the upstream's ports).
    pub fn forwarded(&self, headers: &mut HeaderMap, tcp: bool) {
        if let Some(server) = &self.server {
            headers.insert(header::SERVER, server.clone());
        }
        headers.remove(header::ALT_SVC);
        if let (true, Some(alt)) = (tcp, &self.alt_svc) {
            headers.insert(header::ALT_SVC, alt.clone());
        }
    }

    fn finish(&self, mut reply: Reply, tcp: bool) -> Reply {
        if let Some(server) = &self.server {
            reply.headers.insert(header::SERVER, server.clone());
        }
        if tcp {
            // As the reference's Go servers do: HTTP/1.1 and HTTP/2 put a Date on
            // every answer and the length on the short ones made up on the spot (not
            // found, redirects, range errors), its HTTP/3 server does neither.
            if reply.status != StatusCode::NOT_MODIFIED
                && !reply.headers.contains_key(header::CONTENT_LENGTH)
            {
                let len = match &reply.body {
                    Body::Bytes(b) => b.len() as u64,
                    Body::Empty => 0,
                    Body::File { len, .. } => *len,
                };
                set(&mut reply.headers, header::CONTENT_LENGTH, &len.to_string());
            }
            set(
                &mut reply.headers,
                header::DATE,
                &httpdate::fmt_http_date(SystemTime::now()),
            );
            if let Some(alt) = &self.alt_svc {
                reply.headers.insert(header::ALT_SVC, alt.clone());
            }
        }
        reply
    }

    fn builtin(&self, method: &Method, path: &str, headers: &HeaderMap) -> Reply {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if path != "/" && path != "/index.html" {
            return status(StatusCode::NOT_FOUND);
        }
        let len = DEFAULT_PAGE.len() as u64;
        // A fixed page: a fixed validator.
        let etag = format!("\"{}\"", radix36(u128::from(len)));
        let mut reply = content(
            method,
            headers,
            len,
            &etag,
            None,
            "text/html; charset=utf-8",
        );
        if let Body::File { offset, len, .. } = reply.body {
            let start = offset as usize;
            reply.body = Body::Bytes(Bytes::from_static(
                &DEFAULT_PAGE.as_bytes()[start..start + len as usize],
            ));
        }
        reply
    }
}

/// An answer without a body.
fn status(code: StatusCode) -> Reply {
    Reply {
        status: code,
        headers: HeaderMap::new(),
        body: Body::Empty,
    }
}

/// To the canonical path of a directory, with the short page Go's `http.Redirect`
/// writes.
fn redirect(method: &Method, to: &str) -> Reply {
    let mut reply = status(StatusCode::PERMANENT_REDIRECT);
    let Ok(location) = HeaderValue::from_str(to) else {
        return status(StatusCode::NOT_FOUND);
    };
    reply.headers.insert(header::LOCATION, location);
    if matches!(*method, Method::GET | Method::HEAD) {
        let page = format!(
            "<a href=\"{}\">Permanent Redirect</a>.\n\n",
            html_escape(to)
        );
        reply.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        if *method == Method::GET {
            reply.body = Body::Bytes(Bytes::from(page));
        }
    }
    reply
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Serves a file of the directory.
fn files(root: &Path, method: &Method, raw_path: &str, headers: &HeaderMap) -> Reply {
    let path = raw_path.split_once('?').map_or(raw_path, |(p, _)| p);
    let Some(relative) = decode_path(path) else {
        return status(StatusCode::NOT_FOUND);
    };
    let full = root.join(&relative);
    let Ok(meta) = std::fs::metadata(&full) else {
        return status(StatusCode::NOT_FOUND);
    };
    // Stay inside the root, whatever a symbolic link says.
    let inside = match (full.canonicalize(), root.canonicalize()) {
        (Ok(f), Ok(r)) => f.starts_with(r),
        _ => false,
    };
    if !inside {
        return status(StatusCode::NOT_FOUND);
    }
    let (file, meta) = if meta.is_dir() {
        let index = full.join(INDEX);
        match std::fs::metadata(&index) {
            Ok(m) if m.is_file() => {
                if !path.ends_with('/') {
                    return redirect(method, &format!("{path}/"));
                }
                (index, m)
            }
            _ => return status(StatusCode::NOT_FOUND),
        }
    } else {
        if path.ends_with('/') {
            return status(StatusCode::NOT_FOUND);
        }
        (full, meta)
    };
    let modified = meta.modified().ok();
    let etag = etag(modified, meta.len());
    let kind = content_type(&file);
    let mut reply = content(method, headers, meta.len(), &etag, modified, kind);
    if let Body::File { path, .. } = &mut reply.body {
        *path = file;
    }
    reply
}

/// The answer for content of `len` bytes: conditional requests, ranges, HEAD. A body
/// comes back as a [`Body::File`] range with an empty path for the caller to fill.
fn content(
    method: &Method,
    headers: &HeaderMap,
    len: u64,
    etag: &str,
    modified: Option<SystemTime>,
    kind: &'static str,
) -> Reply {
    let mut reply = status(StatusCode::OK);
    let h = &mut reply.headers;
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Some(m) = modified {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(m)) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
    if not_modified(headers, etag, modified) {
        // As Go's writeNotModified: the validator only.
        let mut reply = status(StatusCode::NOT_MODIFIED);
        if let Ok(v) = HeaderValue::from_str(etag) {
            reply.headers.insert(header::ETAG, v);
        }
        return reply;
    }
    let mut offset = 0;
    let mut body_len = len;
    if let Some(range) = headers.get(header::RANGE) {
        match single_range(range.as_bytes(), len) {
            RangeAsk::Whole => {}
            RangeAsk::Part(start, end) => {
                reply.status = StatusCode::PARTIAL_CONTENT;
                offset = start;
                body_len = end - start + 1;
                set(
                    &mut reply.headers,
                    header::CONTENT_RANGE,
                    &format!("bytes {start}-{end}/{len}"),
                );
            }
            RangeAsk::Unsatisfiable => {
                // As Go's http.ServeContent: the validators stay, a short text says why.
                const WHY: &str = "invalid range: failed to overlap\n";
                reply.status = StatusCode::RANGE_NOT_SATISFIABLE;
                reply.headers.remove(header::ACCEPT_RANGES);
                reply.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                reply.headers.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                set(
                    &mut reply.headers,
                    header::CONTENT_RANGE,
                    &format!("bytes */{len}"),
                );
                if *method == Method::GET {
                    reply.body = Body::Bytes(Bytes::from_static(WHY.as_bytes()));
                }
                return reply;
            }
        }
    }
    set(
        &mut reply.headers,
        header::CONTENT_LENGTH,
        &body_len.to_string(),
    );
    reply.body = if *method == Method::HEAD || body_len == 0 {
        Body::Empty
    } else {
        Body::File {
            path: PathBuf::new(),
            offset,
            len: body_len,
        }
    };
    reply
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// `If-None-Match` decides when present; `If-Modified-Since` otherwise.
fn not_modified(headers: &HeaderMap, etag: &str, modified: Option<SystemTime>) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let Ok(list) = inm.to_str() else {
            return false;
        };
        return list.split(',').map(str::trim).any(|t| {
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag.strip_prefix("W/").unwrap_or(etag)
        });
    }
    let (Some(ims), Some(modified)) = (headers.get(header::IF_MODIFIED_SINCE), modified) else {
        return false;
    };
    let Some(since) = ims
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
    else {
        return false;
    };
    // HTTP dates have whole seconds.
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    secs(modified) <= secs(since)
}

/// What a `Range` header asks of content of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    /// Not a range this server serves in part (several ranges, another unit,
    /// malformed): the whole content.
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    Unsatisfiable,
}

fn single_range(value: &[u8], len: u64) -> RangeAsk {
    let Some(spec) = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => RangeAsk::Whole,
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if len == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part(len.saturating_sub(n), len - 1),
        },
        (start, end) => {
            let Some(start) = number(start) else {
                return RangeAsk::Whole;
            };
            let end = if end.is_empty() {
                None
            } else {
                match number(end) {
                    Some(end) if end >= start => Some(end),
                    _ => return RangeAsk::Whole,
                }
            };
            if start >= len {
                return RangeAsk::Unsatisfiable;
            }
            RangeAsk::Part(start, end.unwrap_or(len - 1).min(len - 1))
        }
    }
}

/// A validator from the modification time (seconds) and the size, both in base 36,
/// as the reference server makes it.
fn etag(modified: Option<SystemTime>, len: u64) -> String {
    let secs = modified
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "\"{}{}\"",
        radix36(u128::from(secs)),
        radix36(u128::from(len))
    )
}

fn radix36(mut n: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The request path, percent-decoded, as a path relative to the root; `None` for one
/// that leaves the root or is not a path (NUL, a `..` segment, not UTF-8).
fn decode_path(path: &str) -> Option<PathBuf> {
    let mut bytes = Vec::with_capacity(path.len());
    let mut input = path.bytes();
    while let Some(b) = input.next() {
        if b == b'%' {
            let hi = (input.next()? as char).to_digit(16)?;
            let lo = (input.next()? as char).to_digit(16)?;
            bytes.push((hi * 16 + lo) as u8);
        } else {
            bytes.push(b);
        }
    }
    let decoded = String::from_utf8(bytes).ok()?;
    if !decoded.starts_with('/') || decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let relative = Path::new(decoded.trim_start_matches('/'));
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        .then(|| relative.to_path_buf())
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        Some("xml") => "text/xml; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/vnd.microsoft.icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("pdf") => "application/pdf",
        Some("wasm") => "application/wasm",
        Some("mp4") => "video/mp4",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> (tempfile::TempDir, Site) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<h1>hello</h1>\n").unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/a.txt"), "0123456789").unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/index.html"), "sub\n").unwrap();
        let site = Site::new(Some(dir.path().to_owned()), Some("web"), Some(443));
        (dir, site)
    }

    fn get(site: &Site, path: &str, headers: &[(&'static str, &str)]) -> Reply {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        site.answer(&Method::GET, path, &map, true)
    }

    fn range(reply: &Reply) -> (u64, u64) {
        match reply.body {
            Body::File { offset, len, .. } => (offset, len),
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn files_index_and_canonical_paths() {
        let (_dir, site) = site();
        let index = get(&site, "/", &[]);
        assert_eq!(index.status, StatusCode::OK);
        assert_eq!(index.headers[header::CONTENT_LENGTH], "15");
        assert_eq!(
            index.headers[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(index.headers[header::SERVER], "web");
        assert_eq!(index.headers[header::ALT_SVC], "h3=\":443\"; ma=2592000");
        assert!(index.headers.contains_key(header::DATE));
        assert!(!site
            .answer(&Method::GET, "/", &HeaderMap::new(), false)
            .headers
            .contains_key(header::DATE));
        assert!(matches!(&index.body, Body::File { path, .. } if path.ends_with("index.html")));
        assert_eq!(get(&site, "/index.html", &[]).status, StatusCode::OK);
        assert_eq!(get(&site, "/docs/a.txt", &[]).status, StatusCode::OK);
        assert_eq!(get(&site, "/docs/%61.txt", &[]).status, StatusCode::OK);
        let dir = get(&site, "/sub?x=1", &[]);
        assert_eq!(dir.status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(dir.headers[header::LOCATION], "/sub/");
        assert!(matches!(&dir.body, Body::Bytes(b) if b.len() == 41));
        for missing in [
            "/nope",
            "/docs",
            "/docs/",
            "/empty/",
            "/docs/a.txt/",
            "/../etc/passwd",
            "/%2e%2e/x",
            "/a%00",
            "/%zz",
        ] {
            let reply = get(&site, missing, &[]);
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{missing}");
            assert_eq!(reply.headers[header::CONTENT_LENGTH], "0", "{missing}");
        }
        // Every method gets the file, as from the reference server.
        let post = site.answer(&Method::POST, "/", &HeaderMap::new(), false);
        assert_eq!(post.status, StatusCode::OK);
        assert!(post.headers.get(header::ALT_SVC).is_none());
        let head = site.answer(&Method::HEAD, "/", &HeaderMap::new(), true);
        assert_eq!(head.headers[header::CONTENT_LENGTH], "15");
        assert!(matches!(head.body, Body::Empty));
    }

    #[test]
    fn ranges_and_conditional_requests() {
        let (_dir, site) = site();
        let part = get(&site, "/docs/a.txt", &[("range", "bytes=2-4")]);
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.headers[header::CONTENT_RANGE], "bytes 2-4/10");
        assert_eq!(range(&part), (2, 3));
        assert_eq!(
            range(&get(&site, "/docs/a.txt", &[("range", "bytes=-3")])),
            (7, 3)
        );
        assert_eq!(
            range(&get(&site, "/docs/a.txt", &[("range", "bytes=8-")])),
            (8, 2)
        );
        assert_eq!(
            range(&get(&site, "/docs/a.txt", &[("range", "bytes=5-99")])),
            (5, 5)
        );
        let beyond = get(&site, "/docs/a.txt", &[("range", "bytes=10-")]);
        assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(beyond.headers[header::CONTENT_RANGE], "bytes */10");
        assert!(matches!(&beyond.body, Body::Bytes(b) if b.starts_with(b"invalid range")));
        assert!(beyond.headers.contains_key(header::ETAG));
        for whole in [
            "bytes=4-2",
            "items=1-2",
            "bytes=0-1,3-4",
            "bytes=x-1",
            "bytes=",
        ] {
            assert_eq!(
                get(&site, "/docs/a.txt", &[("range", whole)]).status,
                StatusCode::OK,
                "{whole}"
            );
        }
        let first = get(&site, "/docs/a.txt", &[]);
        let tag = first.headers[header::ETAG].to_str().unwrap().to_owned();
        let date = first.headers[header::LAST_MODIFIED]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            get(&site, "/docs/a.txt", &[("if-none-match", &tag)]).status,
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            get(&site, "/docs/a.txt", &[("if-none-match", "\"other\"")]).status,
            StatusCode::OK
        );
        assert_eq!(
            get(&site, "/docs/a.txt", &[("if-modified-since", &date)]).status,
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            get(
                &site,
                "/docs/a.txt",
                &[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")]
            )
            .status,
            StatusCode::OK
        );
    }

    #[test]
    fn the_builtin_page_names_no_software() {
        let site = Site::new(None, None, None);
        let page = get(&site, "/", &[]);
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.headers.get(header::SERVER).is_none());
        let Body::Bytes(body) = &page.body else {
            panic!("{:?}", page.body)
        };
        assert_eq!(body.len(), DEFAULT_PAGE.len());
        let lower = DEFAULT_PAGE.to_ascii_lowercase();
        assert!(!lower.contains("quicap") && !lower.contains("rust"));
        assert_eq!(get(&site, "/x", &[]).status, StatusCode::NOT_FOUND);
        let part = get(&site, "/", &[("range", "bytes=0-8")]);
        assert!(matches!(&part.body, Body::Bytes(b) if &b[..] == b"<!DOCTYPE"));
    }
}
