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

/// The viewer's built files (viewer/dist, committed; rebuilt with `npm ci && npm run build` in
/// viewer/): path served, content type, bytes.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../viewer/dist/index.html"),
    ),
    (
        "/viewer.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../viewer/dist/viewer.js"),
    ),
    (
        "/viewer.css",
        "text/css; charset=utf-8",
        include_bytes!("../viewer/dist/viewer.css"),
    ),
    (
        "/BUILD-HASH",
        "text/plain; charset=utf-8",
        include_bytes!("../viewer/dist/BUILD-HASH"),
    ),
];

/// Longest request head accepted (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// An idle keep-alive connection is closed after this long.
const IDLE: Duration = Duration::from_secs(15);

/// A bound viewer server: call [`Server::run`] to serve forever.
pub struct Server {
    listener: TcpListener,
    root: PathBuf,
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
        Ok(Server { listener, root })
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
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else { continue };
            let root = self.root.clone();
            let _ = std::thread::Builder::new()
                .name("view-conn".into())
                .spawn(move || {
                    let _ = handle_connection(stream, &root);
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

fn handle_connection(stream: TcpStream, root: &Path) -> io::Result<()> {
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
        let response = respond(&req, root);
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
fn host_allowed(host: &str) -> bool {
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

fn respond(req: &Request, root: &Path) -> Response {
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
    match segs.as_slice() {
        [] | ["index.html"] => asset("/index.html"),
        ["api", "files"] => json_response(files_listing(root)),
        ["run", rest @ ..] if !rest.is_empty() => serve_file(root, rest, req.range.as_deref()),
        [name] => asset(&format!("/{name}")),
        _ => Response::text(404, "Not Found"),
    }
}

fn asset(path: &str) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, ty, bytes)) => Response {
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
fn parse_range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
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

/// `/api/files`: what the run holds, so the browser only asks for files that exist:
/// `{"manifest": bool, "shards": [names], "tables": {table: [{"path", "size"}]}}`. Part files
/// are `*.parquet` not starting with `.` (hidden temporaries are being written), sorted by name.
pub fn files_listing(root: &Path) -> serde_json::Value {
    let mut tables = serde_json::Map::new();
    let mut shards = Vec::new();
    let mut dirs: Vec<(String, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .filter(|(n, _)| !n.starts_with('.'))
        .collect();
    dirs.sort();
    for (name, dir) in dirs {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                let m = e.metadata().ok()?;
                m.is_file().then_some((n, m.len()))
            })
            .filter(|(n, _)| !n.starts_with('.'))
            .collect();
        files.sort();
        if name == "shards" {
            shards = files
                .into_iter()
                .filter(|(n, _)| n.ends_with(".json"))
                .map(|(n, _)| serde_json::Value::String(n))
                .collect();
            continue;
        }
        let parts: Vec<serde_json::Value> = files
            .into_iter()
            .filter(|(n, _)| n.ends_with(".parquet"))
            .map(|(n, size)| serde_json::json!({"path": format!("{name}/{n}"), "size": size}))
            .collect();
        if !parts.is_empty() {
            tables.insert(name, serde_json::Value::Array(parts));
        }
    }
    serde_json::json!({
        "manifest": root.join("manifest.json").is_file(),
        "shards": shards,
        "tables": tables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_refuse_every_escape() {
        assert_eq!(safe_segments("/"), Some(vec![]));
        assert_eq!(
            safe_segments("/run/tokens/part-000-00000.parquet"),
            Some(vec![
                "run".into(),
                "tokens".into(),
                "part-000-00000.parquet".into()
            ])
        );
        assert_eq!(safe_segments("/a%20b"), Some(vec!["a b".into()]));
        for bad in [
            "run/x",
            "/run/../x",
            "/run/..",
            "/run/./x",
            "/run//x",
            "/run/%2e%2e/x",
            "/run/%2E%2E/x",
            "/run/.%2e/x",
            "/run/..%2fx",
            "/run/..%2Fx",
            "/run/%2e%2e%2f%2e%2e%2fetc/passwd",
            "/run/..\\x",
            "/run/%5c..%5cx",
            "/run/%00",
            "/run/a%0a",
            "/run/%zz",
            "/run/%2",
            "/run/.part-000-00000.parquet.tmp",
            "/run/tokens/.hidden",
            "/run/C:/x",
            "//etc/passwd",
            "/run/%ff",
        ] {
            assert_eq!(safe_segments(bad), None, "{bad}");
        }
        // Double encoding decodes once: a literal `%2e%2e` name, harmless.
        assert_eq!(
            safe_segments("/run/%252e%252e"),
            Some(vec!["run".into(), "%2e%2e".into()])
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=4-"), 10), Ok(Some((4, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=-0"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Err(()));
        // Malformed or multiple: ignored (the whole file).
        assert_eq!(parse_range(Some("bytes=3-1"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=a-b"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=+1-2"), 10), Ok(None));
    }

    #[test]
    fn hosts() {
        assert!(host_allowed("127.0.0.1:8080"));
        assert!(host_allowed("localhost:1"));
        assert!(host_allowed("[::1]:80"));
        assert!(host_allowed("127.0.0.1"));
        assert!(!host_allowed("evil.example:8080"));
        assert!(!host_allowed("127.0.0.1.evil.example"));
    }
}

/// The tables the viewer reads (`activations` and `nmf_components`/`nmf_summary` are not shown).
pub const VIEWED_TABLES: &[&str] = &[
    "tokens",
    "generations",
    "predictions",
    "lens",
    "lens_topk",
    "watch",
    "saliency",
    "saliency_completeness",
    "attention",
    "attention_rollout",
    "nmf_factors",
    "nmf_top_contexts",
];

fn asset_text(path: &str) -> &'static str {
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .and_then(|(_, _, b)| std::str::from_utf8(b).ok())
        .unwrap_or_default()
}

/// `tokenlens export-html`: one self-contained HTML file, the viewer with the run inlined (the
/// manifest and the parts of [`VIEWED_TABLES`], base64), opened from disk without a server.
/// Returns the HTML and the bytes of Parquet inlined.
/// Refuses (`InvalidInput`) when more than `max_bytes` of Parquet would be inlined.
pub fn export_html(run_dir: &Path, max_bytes: u64) -> io::Result<(String, u64)> {
    use base64::Engine;
    let root = run_dir.canonicalize()?;
    let mut files = files_listing(&root);
    let size: u64 = files["tables"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| VIEWED_TABLES.contains(&name.as_str()))
        .flat_map(|(_, parts)| parts.as_array().into_iter().flatten())
        .filter_map(|p| p["size"].as_u64())
        .sum();
    if size > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the tables the viewer shows are {:.0} MB, more than --max-mb {:.0}; one HTML file \
                 is for small runs (use `tokenlens view`, or raise --max-mb)",
                size as f64 / 1e6,
                max_bytes as f64 / 1e6
            ),
        ));
    }
    let mut parts = serde_json::Map::new();
    let mut total = 0u64;
    if let Some(tables) = files["tables"].as_object_mut() {
        tables.retain(|name, _| VIEWED_TABLES.contains(&name.as_str()));
        for list in tables.values() {
            for p in list.as_array().into_iter().flatten() {
                let path = p["path"].as_str().unwrap_or_default();
                let bytes = std::fs::read(root.join(path))?;
                total += bytes.len() as u64;
                parts.insert(
                    path.to_string(),
                    base64::engine::general_purpose::STANDARD
                        .encode(&bytes)
                        .into(),
                );
            }
        }
    }
    let manifest = std::fs::read_to_string(root.join("manifest.json")).ok();
    let embed = serde_json::json!({"files": files, "manifest": manifest, "parts": parts});
    // Inside <script>, `</` must not appear: JSON allows `<\/`.
    let embed = serde_json::to_string(&embed)
        .map_err(io::Error::other)?
        .replace("</", "<\\/");
    let js = asset_text("/viewer.js");
    if js.contains("</script") {
        return Err(io::Error::other(
            "viewer.js contains `</script`; cannot inline it",
        ));
    }
    let html = asset_text("/index.html")
        .replace(
            r#"<link rel="stylesheet" href="/viewer.css">"#,
            &format!("<style>\n{}</style>", asset_text("/viewer.css")),
        )
        .replace(
            r#"<script type="module" src="/viewer.js"></script>"#,
            &format!(
                "<script>window.TOKENLENS_EMBED = {embed};</script>\n<script type=\"module\">\n{js}</script>"
            ),
        );
    Ok((html, total))
}

/// FNV-1a 64 over `(path, bytes)` pairs sorted by path, each fed as `path NUL bytes NUL`: the
/// hash viewer/build.mjs writes into viewer/dist/BUILD-HASH.
pub fn build_hash(files: &mut [(String, Vec<u8>)]) -> String {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h: u64 = 0xcbf29ce484222325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    for (path, bytes) in files.iter() {
        feed(path.as_bytes());
        feed(&[0]);
        feed(bytes);
        feed(&[0]);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod freshness {
    use super::*;

    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                let rel = p
                    .strip_prefix(base)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace('\\', "/");
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }

    /// viewer/dist (embedded) must be the build of viewer/src and the locked dependencies:
    /// BUILD-HASH's `src` line must match the sources, its `dist` line the embedded files.
    #[test]
    fn embedded_viewer_is_fresh() {
        let viewer = Path::new(env!("CARGO_MANIFEST_DIR")).join("viewer");
        let mut inputs = Vec::new();
        walk(&viewer.join("src"), &viewer, &mut inputs);
        for f in ["build.mjs", "package.json", "package-lock.json"] {
            inputs.push((f.to_string(), std::fs::read(viewer.join(f)).unwrap()));
        }
        let recorded = std::str::from_utf8(include_bytes!("../viewer/dist/BUILD-HASH")).unwrap();
        let line = |key: &str| {
            recorded
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let fix =
            "viewer/dist is stale: run `npm ci && npm run build` in viewer/ and commit viewer/dist";
        assert_eq!(
            line("src "),
            build_hash(&mut inputs),
            "{fix} (sources changed)"
        );
        let mut outputs: Vec<(String, Vec<u8>)> = ASSETS
            .iter()
            .filter(|(p, _, _)| *p != "/BUILD-HASH")
            .map(|(p, _, b)| (p.trim_start_matches('/').to_string(), b.to_vec()))
            .collect();
        assert_eq!(
            line("dist "),
            build_hash(&mut outputs),
            "{fix} (viewer/dist edited by hand?)"
        );
    }
}
