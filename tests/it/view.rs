//! `tokenlens view RUN_DIR`: the server on a real (tiny-llama) run, through raw sockets so that
//! traversal attempts reach it exactly as written: embedded assets, the run's files, HEAD, byte
//! ranges (bytes equal the file's), 416, the file listing, paths escaping the run directory (raw,
//! percent-encoded, backslashes, symlinks) refused, and garbage requests answered without a panic.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokenlens::store::schema::{
    ATTENTION, GENERATIONS, LENS, NMF_FACTORS, NMF_TOP_CONTEXTS, PREDICTIONS, SALIENCY, TOKENS,
};

use crate::common::{Tokenlens, finished_parts, scratch, tiny_spec};

const DATA: &str = "\
{\"id\": \"cat\", \"text\": \"The cat sat on the mat\"}
{\"id\": \"capital\", \"text\": \"The capital of France is\"}
{\"id\": \"count\", \"text\": \"1, 2, 3,\"}
";

const SPEC: &str = "\
model: MODEL
dataset:
  path: data.jsonl
  id_field: id
generation:
  max_new_tokens: 4
analyses:
  predictions: {top_k: 3}
  saliency: {methods: [gradient, grad_x_input, integrated_gradients], n_steps: 3}
  lens: {top_k: 3}
  watch: {tokens: [' the', ' cat']}
  attention: {layers: all, rollout: true}
output:
  dir: run
";

/// A tiny-llama run with most tables, made once per test binary: `scratch/view-run/run`.
pub fn tiny_run() -> PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let spec = tiny_spec("view-run", DATA, SPEC);
        let o = Tokenlens::PLAIN
            .cmd(&["run", "-q", spec.to_str().unwrap()])
            .env("RAYON_NUM_THREADS", "2")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        spec.parent().unwrap().join("run")
    })
    .clone()
}

/// A private copy of the tiny run at `scratch/NAME/run`, for a test that changes it (tests run in
/// parallel; the shared run stays untouched).
fn copy_of_tiny_run(name: &str) -> PathBuf {
    let dir = scratch(name).join("run");
    let o = Command::new("cp")
        .args(["-r", tiny_run().to_str().unwrap(), dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir
}

/// A running `tokenlens view`, killed on drop. Its stderr is passed on to the test's and kept.
struct Viewer {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Viewer {
    fn start(run_dir: &Path) -> Viewer {
        let mut child = Tokenlens::PLAIN
            .cmd(&[
                "view",
                run_dir.to_str().unwrap(),
                "--port",
                "0",
                "--no-open",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, kept) = (child.stderr.take().unwrap(), Arc::clone(&stderr));
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                let mut k = kept.lock().unwrap();
                k.push_str(&line);
                k.push('\n');
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let prefix = format!("viewing {} at http://127.0.0.1:", run_dir.display());
        let port = line
            .trim_end()
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix('/'))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        eprintln!("tokenlens view listening on port {port}");
        Viewer {
            child,
            port,
            stderr,
        }
    }

    /// What the server printed to stderr so far.
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends raw bytes, reads until the server closes: (status, head, body).
    fn raw(&self, request: &[u8]) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        parse_response(&out)
    }

    fn get(&self, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
        self.raw(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n")
                .as_bytes(),
        )
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_response(out: &[u8]) -> (u16, String, Vec<u8>) {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(out)));
    let head = String::from_utf8(out[..split].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head, out[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn first_part(run: &Path, table: &str) -> PathBuf {
    finished_parts(run, table).remove(0)
}

#[test]
fn view_serves_assets_the_manifest_and_byte_ranges() {
    let run = copy_of_tiny_run("view-assets");
    let v = Viewer::start(&run);

    let (status, head, body) = v.get("/", "");
    assert_eq!(status, 200);
    assert!(
        header(&head, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(body, tokenlens::view::ASSETS[0].2);
    let (status, head, body) = v.get("/viewer.js", "");
    assert_eq!(status, 200);
    assert!(
        header(&head, "content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(body.len() > 1000, "viewer.js is {} bytes", body.len());
    assert_eq!(v.get("/nope.js", "").0, 404);

    let (status, head, body) = v.get("/run/manifest.json", "");
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    assert_eq!(body, std::fs::read(run.join("manifest.json")).unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(manifest["status"], "done");

    // HEAD: the length, no body.
    let part = first_part(&run, "predictions");
    let bytes = std::fs::read(&part).unwrap();
    let url = format!(
        "/run/predictions/{}",
        part.file_name().unwrap().to_str().unwrap()
    );
    let (status, head, body) = v.raw(
        format!("HEAD {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    assert!(body.is_empty());

    // Ranges: explicit, open-ended, suffix (the footer a Parquet reader asks for first).
    let n = bytes.len();
    let (status, head, body) = v.get(&url, "Range: bytes=4-99\r\n");
    assert_eq!(status, 206);
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes 4-99/{n}").as_str())
    );
    assert_eq!(body, &bytes[4..100]);
    let (status, _, body) = v.get(&url, &format!("Range: bytes={}-\r\n", n - 10));
    assert_eq!(status, 206);
    assert_eq!(body, &bytes[n - 10..]);
    let (status, head, body) = v.get(&url, "Range: bytes=-8\r\n");
    assert_eq!(status, 206);
    assert_eq!(body, &bytes[n - 8..]);
    assert_eq!(&body[4..], b"PAR1");
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes {}-{}/{n}", n - 8, n - 1).as_str())
    );
    // Unsatisfiable.
    let (status, head, _) = v.get(&url, &format!("Range: bytes={n}-\r\n"));
    assert_eq!(status, 416);
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes */{n}").as_str())
    );
    // Malformed: ignored, the whole file.
    let (status, _, body) = v.get(&url, "Range: bytes=zz\r\n");
    assert_eq!(status, 200);
    assert_eq!(body, bytes);

    // The listing: every table's parts with their sizes; hidden temporaries neither listed nor
    // served.
    std::fs::write(run.join("tokens/.part-000-99999.parquet.tmp"), b"partial").unwrap();
    let (status, _, body) = v.get("/api/files", "");
    assert_eq!(status, 200);
    let files: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(files["manifest"], true);
    assert_eq!(
        files["shards"],
        serde_json::json!(["shard-000-of-001.json"])
    );
    for table in [
        &TOKENS,
        &GENERATIONS,
        &PREDICTIONS,
        &LENS,
        &SALIENCY,
        &ATTENTION,
    ]
    .map(|t| t.name)
    {
        let parts = files["tables"][table].as_array().unwrap();
        assert!(!parts.is_empty(), "{table}");
        for p in parts {
            let path = p["path"].as_str().unwrap();
            assert!(path.starts_with(&format!("{table}/part-")), "{path}");
            let size = std::fs::metadata(run.join(path)).unwrap().len();
            assert_eq!(p["size"].as_u64(), Some(size));
        }
    }
    assert!(!String::from_utf8_lossy(&body).contains(".tmp"));
    assert_eq!(v.get("/run/tokens/.part-000-99999.parquet.tmp", "").0, 403);
    std::fs::remove_file(run.join("tokens/.part-000-99999.parquet.tmp")).unwrap();

    // Keep-alive: two requests on one connection.
    let mut s = TcpStream::connect(("127.0.0.1", v.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        b"GET /run/manifest.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\
          GET /viewer.css HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out)
            .matches("HTTP/1.1 200 OK")
            .count(),
        2
    );
}

#[test]
fn view_refuses_paths_outside_the_run() {
    let run = copy_of_tiny_run("view-traversal");
    // A secret next to the run, and symlinks inside the run pointing to it.
    let outside = run.parent().unwrap();
    std::fs::write(outside.join("secret.txt"), "SECRET").unwrap();
    let _ = std::fs::remove_file(run.join("link.txt"));
    let _ = std::fs::remove_file(run.join("linkdir"));
    std::os::unix::fs::symlink(outside.join("secret.txt"), run.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(outside, run.join("linkdir")).unwrap();
    let v = Viewer::start(&run);
    for path in [
        "/run/../secret.txt",
        "/run/../../secret.txt",
        "/../secret.txt",
        "/run/tokens/../../secret.txt",
        "/run/%2e%2e/secret.txt",
        "/run/%2E%2E/secret.txt",
        "/run/.%2e/secret.txt",
        "/run/..%2fsecret.txt",
        "/run/%2e%2e%2fsecret.txt",
        "/run%2f..%2fsecret.txt",
        "/run/..\\secret.txt",
        "/run/%5c..%5csecret.txt",
        "/run/..%5csecret.txt",
        "/run//secret.txt",
        "/run/%252e%252e/secret.txt",
        "/run/%2e%2e/view-traversal/secret.txt",
        "/run/link.txt",
        "/run/linkdir/secret.txt",
        "/run/%00/secret.txt",
        "http://127.0.0.1/run/../secret.txt",
        "/run/.%2E/.%2E/etc/passwd",
        "/run//etc/passwd",
        "/run/%2fetc%2fpasswd",
    ] {
        let (status, _, body) = v.get(path, "");
        eprintln!("{path} -> {status}");
        assert!(
            status == 403 || status == 404 || status == 400,
            "{path}: status {status}"
        );
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains("SECRET") && !body.contains("root:"),
            "{path}"
        );
    }
    // Other hosts (DNS rebinding) and methods.
    assert_eq!(
        v.raw(b"GET /run/manifest.json HTTP/1.1\r\nHost: evil.example:80\r\n\r\n")
            .0,
        403
    );
    let (status, head, _) = v
        .raw(b"POST /run/manifest.json HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(status, 405);
    assert_eq!(header(&head, "allow"), Some("GET, HEAD"));
    std::fs::remove_file(run.join("link.txt")).unwrap();
    std::fs::remove_file(run.join("linkdir")).unwrap();
}

#[test]
fn view_answers_garbage_without_dying() {
    let run = tiny_run();
    let v = Viewer::start(&run);
    let long_header = format!(
        "GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let garbage: Vec<Vec<u8>> = vec![
        b"\r\n\r\n".to_vec(),
        b"HELLO\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1 extra\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n".to_vec(),
        vec![0xff, 0xfe, 0x00, b'\r', b'\n', b'\r', b'\n'],
        long_header.into_bytes(),
        b"GET /run/manifest.json HTTP/1.1\r\nRange: bytes=99999999999999999999999-\r\n\r\n"
            .to_vec(),
        b"GET /run/manifest.json HTTP/1.1\r\nRange: bytes=-99999999999999999999999\r\n\r\n"
            .to_vec(),
    ];
    for g in &garbage {
        let mut s = TcpStream::connect(("127.0.0.1", v.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(g);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let shown = String::from_utf8_lossy(&g[..g.len().min(40)]).into_owned();
        // Blank lines alone are no request (RFC 9112 2.2): the server just closes. Everything
        // else is answered; a connection closed without an answer is a handler that died.
        if g.iter().all(|&b| b == b'\r' || b == b'\n') {
            assert!(out.is_empty(), "{shown:?}: answered {out:?}");
            continue;
        }
        assert!(!out.is_empty(), "{shown:?}: closed without an answer");
        let (status, _, _) = parse_response(&out);
        eprintln!("{shown:?} -> {status}");
        assert!(
            status == 200 || (400..500).contains(&status),
            "{shown:?} -> {status}"
        );
    }
    // A connection that sends half a request and hangs up.
    drop(TcpStream::connect(("127.0.0.1", v.port)).map(|mut s| s.write_all(b"GET / HT")));
    // Still serving, after every one of them.
    let (status, _, body) = v.get("/run/manifest.json", "");
    assert_eq!(status, 200);
    assert_eq!(body, std::fs::read(run.join("manifest.json")).unwrap());
    let (status, _, body) = v.get("/", "");
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    // And no handler thread panicked (the server would go on serving after one).
    std::thread::sleep(Duration::from_millis(200));
    let err = v.stderr();
    assert!(!err.contains("panicked"), "the server panicked: {err}");
}

#[test]
fn view_refuses_what_is_not_a_run() {
    let dir = scratch("view-not-a-run");
    for (arg, msg) in [
        (dir.to_str().unwrap().to_string(), "not a run directory"),
        (
            dir.join("missing").to_str().unwrap().to_string(),
            "not a directory",
        ),
    ] {
        let o = Tokenlens::PLAIN.output(&["view", &arg, "--no-open", "--port", "0"]);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(msg) && !err.contains("panicked"), "{err}");
    }
}

#[test]
fn export_html_inlines_the_viewer_and_the_run() {
    use base64::Engine;
    let run = tiny_run();
    let out = scratch("view-export").join("run.html");
    let o = Tokenlens::PLAIN.output(&["export-html", run.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("wrote "));
    let html = std::fs::read_to_string(&out).unwrap();
    // Self-contained: no reference to the server's paths; only our two inline scripts.
    assert!(!html.contains("src=\"/viewer.js\"") && !html.contains("href=\"/viewer.css\""));
    assert_eq!(html.matches("</script>").count(), 2);
    assert!(html.contains("window.TOKENLENS_EMBED = {"));
    let js = std::str::from_utf8(tokenlens::view::ASSETS[1].2).unwrap();
    assert!(html.contains(js));
    // Every part of the viewed tables, byte for byte.
    for table in [&TOKENS, &GENERATIONS, &PREDICTIONS, &SALIENCY, &ATTENTION].map(|t| t.name) {
        let part = first_part(&run, table);
        let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&part).unwrap());
        assert!(html.contains(&b64), "{table}");
    }
    // Too large for one file: refused, nothing written.
    let o = Tokenlens::PLAIN.output(&[
        "export-html",
        run.to_str().unwrap(),
        "/nonexistent/x.html",
        "--max-mb",
        "0.001",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("more than --max-mb"), "{err}");
}

/// The tiny run plus *synthetic* `nmf_factors` and `nmf_top_contexts` tables (the runner does not
/// write NMF yet), so the NMF view can be exercised: `scratch/view-nmf/run`.
pub fn tiny_run_with_nmf() -> PathBuf {
    use tokenlens::store::schema::{NmfFactors, NmfFactorsRow, NmfTopContexts, NmfTopContextsRow};
    use tokenlens::store::{RunDir, TableOptions, TableWriter, WriterOptions};
    let dir = copy_of_tiny_run("view-nmf");
    let run = RunDir::open(&dir).unwrap();
    let (topts, wopts) = (TableOptions::default(), WriterOptions::default());
    let docs: Vec<(String, i32)> = DATA
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["id"].as_str().unwrap().to_string(), 0)
        })
        .collect();
    let mut w = TableWriter::<NmfFactors>::create(&run, &topts, &wopts).unwrap();
    let mut top = Vec::new();
    for (doc, _) in &docs {
        for position in 0..8 {
            for factor in 0..3 {
                let value = ((position * (factor + 1)) % 5) as f32 / 4.0;
                w.append(NmfFactorsRow {
                    doc_id: doc,
                    position,
                    factor,
                    value,
                })
                .unwrap();
                top.push((factor, value, doc.clone(), position));
            }
        }
    }
    w.finish().unwrap();
    top.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let mut w = TableWriter::<NmfTopContexts>::create(&run, &topts, &wopts).unwrap();
    for factor in 0..3 {
        for (rank, (f, value, doc, position)) in
            top.iter().filter(|t| t.0 == factor).take(3).enumerate()
        {
            w.append(NmfTopContextsRow {
                factor: *f,
                rank: rank as i32 + 1,
                doc_id: doc,
                position: *position,
                value: *value,
                context: "synthetic context",
            })
            .unwrap();
        }
    }
    w.finish().unwrap();
    dir
}

#[test]
fn view_lists_nmf_tables() {
    let run = tiny_run_with_nmf();
    let v = Viewer::start(&run);
    let (status, _, body) = v.get("/api/files", "");
    assert_eq!(status, 200);
    let files: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for t in [&NMF_FACTORS, &NMF_TOP_CONTEXTS].map(|t| t.name) {
        assert_eq!(files["tables"][t].as_array().map(Vec::len), Some(1), "{t}");
    }
}
