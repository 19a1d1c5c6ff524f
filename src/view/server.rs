//! `tokenlens view RUN_DIR`: a small HTTP/1.1 server (std::net, a thread per connection) that
//! serves the viewer embedded in the binary at `/` and the run's files at `/run/...`, with HEAD and
//! single-range requests (the browser's Parquet reader fetches only the byte ranges it needs).
//!
//! Only 127.0.0.1 is bound. Paths are percent-decoded once, then every segment is checked: `..`,
//! `.`, empty segments, hidden names (`.part-*.tmp` being written), backslashes and NUL bytes are
//! refused, and the canonical path (symlinks resolved) must stay inside the canonical run directory.
//! A `Host` header other than 127.0.0.1/localhost is refused (DNS rebinding).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::assets;
use super::listing::files_listing;

/// Longest request head accepted (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// An idle keep-alive connection is closed after this long.
const IDLE: Duration = Duration::from_secs(15);

/// A bound viewer server: call [`Server::run`] to serve forever.
pub struct Server {
    listener: TcpListener,
    root: PathBuf,
    /// Other directories served under `/<name>/` the way `root` is under `/` (a comparison's
    /// two runs, `/a/` and `/b/`).
    mounts: Vec<(String, PathBuf)>,
}

impl Server {
    /// Binds 127.0.0.1:`port` (0: any free port) for the run directory `run_dir`.
    pub fn bind(run_dir: &Path, port: u16) -> io::Result<Server> {
        let root = run_dir.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        Ok(Server {
            listener,
            root,
            mounts: Vec::new(),
        })
    }

    /// Also serves the directory `dir` under `/<name>/`: the viewer at `/<name>/`, its files
    /// at `/<name>/run/...`, its listing at `/<name>/api/files`.
    pub fn mount(&mut self, name: &str, dir: &Path) -> io::Result<()> {
        let dir = dir.canonicalize()?;
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        self.mounts.push((name.to_string(), dir));
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The canonical run directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Serves connections until the process ends: one thread per connection.
    pub fn run(self) {
        let roots = std::sync::Arc::new(Roots {
            root: self.root,
            mounts: self.mounts,
        });
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else { continue };
            let roots = roots.clone();
            let _ = std::thread::Builder::new()
                .name("view-conn".into())
                .spawn(move || {
                    let _ = handle_connection(stream, &roots);
                });
        }
    }
}

struct Request {
    method: String,
    target: String,
    range: Option<String>,
    host: Option<String>,
    keep_alive: bool,
}

/// Reads one request head; `Ok(None)` at a clean end of the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Option<Request>, u16> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader
            .by_ref()
            .take((MAX_HEAD - head.len() + 1) as u64)
            .read_until(b'\n', &mut line)
            .map_err(|_| 0u16)?;
        if n == 0 {
            return if head.is_empty() { Ok(None) } else { Err(400) };
        }
        if head.len() + line.len() > MAX_HEAD {
            return Err(431);
        }
        let blank = line == b"\r\n" || line == b"\n";
        if blank && head.is_empty() {
            continue; // tolerated before a request line (RFC 9112 2.2)
        }
        head.extend_from_slice(&line);
        if blank {
            break;
        }
        if !line.ends_with(b"\n") {
            return Err(400);
        }
    }
    let head = std::str::from_utf8(&head).map_err(|_| 400u16)?;
    let mut lines = head.lines();
    let request_line = lines.next().ok_or(400u16)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || target.is_empty() {
        return Err(400);
    }
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        range: None,
        host: None,
        keep_alive: version == "HTTP/1.1",
    };
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(400);
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "range" => req.range = Some(value.to_string()),
            "host" => req.host = Some(value.to_string()),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    req.keep_alive = false;
                } else if v.contains("keep-alive") {
                    req.keep_alive = true;
                }
            }
            // Bodies are not accepted (only GET and HEAD are served): close after answering.
            "content-length" if value != "0" => req.keep_alive = false,
            "transfer-encoding" => req.keep_alive = false,
            _ => {}
        }
    }
    Ok(Some(req))
}

/// The directories a server serves: the main one at `/`, the mounts under `/<name>/`.
struct Roots {
    root: PathBuf,
    mounts: Vec<(String, PathBuf)>,
}

fn handle_connection(stream: TcpStream, roots: &Roots) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) | Err(0) => return Ok(()),
            Err(status) => {
                let r = Response::text(status, reason(status));
                return r.send(&mut writer, false, false);
            }
        };
        let head_only = req.method == "HEAD";
        let response = respond(&req, roots);
        let keep = req.keep_alive && response.status < 400;
        response.send(&mut writer, head_only, keep)?;
        if !keep {
            return Ok(());
        }
    }
}

enum Body {
    Bytes(Vec<u8>),
    Static(&'static [u8]),
    /// A file's byte range: (file, start, length).
    File(File, u64, u64),
}

struct Response {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Response {
    fn text(status: u16, msg: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: Body::Bytes(format!("{status} {msg}\n").into_bytes()),
        }
    }

    fn len(&self) -> u64 {
        match &self.body {
            Body::Bytes(b) => b.len() as u64,
            Body::Static(b) => b.len() as u64,
            Body::File(_, _, n) => *n,
        }
    }

    fn send(self, w: &mut TcpStream, head_only: bool, keep_alive: bool) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             X-Content-Type-Options: nosniff\r\nConnection: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.len(),
            if keep_alive { "keep-alive" } else { "close" }
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        if !head_only {
            match self.body {
                Body::Bytes(b) => w.write_all(&b)?,
                Body::Static(b) => w.write_all(b)?,
                Body::File(mut f, start, n) => {
                    f.seek(SeekFrom::Start(start))?;
                    let copied = io::copy(&mut f.take(n), w)?;
                    if copied != n {
                        // The file shrank under us: the length sent is wrong; drop the connection.
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
                    }
                }
            }
        }
        w.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

/// Whether a Host header names this machine's loopback (any port).
pub(super) fn host_allowed(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    matches!(
        name.to_ascii_lowercase().as_str(),
        "127.0.0.1" | "localhost" | "::1"
    )
}

fn respond(req: &Request, roots: &Roots) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        let mut r = Response::text(405, "Method Not Allowed");
        r.headers.push(("Allow", "GET, HEAD".into()));
        return r;
    }
    if let Some(host) = &req.host
        && !host_allowed(host)
    {
        return Response::text(403, "Forbidden (Host)");
    }
    // The path, without query and fragment.
    let raw = req.target.split(['?', '#']).next().unwrap_or("");
    let Some(segments) = safe_segments(raw) else {
        return Response::text(403, "Forbidden");
    };
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (root, segs) = match segs.split_first() {
        Some((first, rest)) => match roots.mounts.iter().find(|(n, _)| n == first) {
            Some((_, dir)) => (dir.as_path(), rest),
            None => (roots.root.as_path(), segs.as_slice()),
        },
        None => (roots.root.as_path(), segs.as_slice()),
    };
    match segs {
        [] | ["index.html"] => asset("/index.html"),
        ["api", "files"] => json_response(files_listing(root)),
        ["run", rest @ ..] if !rest.is_empty() => serve_file(root, rest, req.range.as_deref()),
        [name] => asset(&format!("/{name}")),
        _ => Response::text(404, "Not Found"),
    }
}

fn asset(path: &str) -> Response {
    match assets::asset(path) {
        Some((ty, bytes)) => Response {
            status: 200,
            content_type: ty,
            headers: vec![("Cache-Control", "no-cache".into())],
            body: Body::Static(bytes),
        },
        None => Response::text(404, "Not Found"),
    }
}

fn json_response(v: serde_json::Value) -> Response {
    Response {
        status: 200,
        content_type: "application/json",
        headers: vec![("Cache-Control", "no-store".into())],
        body: Body::Bytes(serde_json::to_vec(&v).unwrap_or_default()),
    }
}

/// Percent-decodes a request path once and splits it into segments; `None` if anything could
/// escape or address something not meant to be served: not starting with `/`, a bad escape, a
/// decoded byte that is NUL, `\` or a control character, invalid UTF-8, or a segment that is
/// empty (`//`), `.`, `..` or hidden (starting with `.`). A decoded `/` (`%2f`) splits segments
/// like a literal one, so `..%2f` is refused as `../` is. A trailing `/` is allowed.
pub fn safe_segments(raw: &str) -> Option<Vec<String>> {
    let rest = raw.strip_prefix('/')?;
    let bytes = rest.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|&c| hex(c)),
                bytes.get(i + 2).and_then(|&c| hex(c)),
            ) else {
                return None;
            };
            decoded.push((h * 16 + l) as u8);
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    if decoded.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\') {
        return None;
    }
    let path = String::from_utf8(decoded).ok()?;
    let path = path.strip_suffix('/').unwrap_or(&path);
    if path.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for seg in path.split('/') {
        if seg.is_empty() || seg.starts_with('.') || seg.contains(':') {
            return None;
        }
        out.push(seg.to_string());
    }
    Some(out)
}

/// Resolves segments inside `root` (canonical): the canonical result must stay inside it.
fn resolve(root: &Path, segments: &[&str]) -> Result<PathBuf, u16> {
    let mut p = root.to_path_buf();
    for s in segments {
        p.push(s);
    }
    let canon = p.canonicalize().map_err(|_| 404u16)?;
    if !canon.starts_with(root) {
        return Err(403);
    }
    Ok(canon)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "json" => "application/json",
        "parquet" => "application/vnd.apache.parquet",
        "yaml" | "yml" | "txt" | "log" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A single byte range of a `len`-byte file. `Ok(None)`: no usable Range header (serve the whole
/// file: absent, malformed, not bytes, or several ranges); `Err(())`: unsatisfiable.
pub(super) fn parse_range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if a.is_empty() {
        // Suffix: the last n bytes.
        let Some(n) = num(b) else { return Ok(None) };
        if n == 0 || len == 0 {
            return Err(());
        }
        let n = n.min(len);
        return Ok(Some((len - n, len - 1)));
    }
    let Some(start) = num(a) else { return Ok(None) };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match num(b) {
            Some(e) if e >= start => e,
            _ => return Ok(None),
        }
    };
    if start >= len {
        return Err(());
    }
    Ok(Some((start, end.min(len - 1))))
}

fn serve_file(root: &Path, segments: &[&str], range: Option<&str>) -> Response {
    let path = match resolve(root, segments) {
        Ok(p) => p,
        Err(status) => return Response::text(status, reason(status)),
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(_) => return Response::text(404, "Not Found"),
    };
    let meta = match file.metadata() {
        Ok(m) if m.is_file() => m,
        _ => return Response::text(404, "Not Found"),
    };
    let len = meta.len();
    let mut headers = vec![
        ("Accept-Ranges", "bytes".to_string()),
        ("Cache-Control", "no-cache".to_string()),
    ];
    if let Ok(modified) = meta.modified()
        && let Ok(d) = modified.duration_since(std::time::UNIX_EPOCH)
    {
        headers.push(("ETag", format!("\"{:x}-{:x}\"", len, d.as_nanos())));
    }
    match parse_range(range, len) {
        Ok(None) => Response {
            status: 200,
            content_type: content_type(&path),
            headers,
            body: Body::File(file, 0, len),
        },
        Ok(Some((start, end))) => {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{len}")));
            Response {
                status: 206,
                content_type: content_type(&path),
                headers,
                body: Body::File(file, start, end - start + 1),
            }
        }
        Err(()) => {
            let mut r = Response::text(416, "Range Not Satisfiable");
            r.headers.push(("Content-Range", format!("bytes */{len}")));
            r
        }
    }
}
