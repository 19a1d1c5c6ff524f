//! Unit tests of the viewer module: the server's parsing of request paths, byte ranges and Host
//! headers, and the freshness of the embedded viewer build (viewer/dist against viewer/src and
//! BUILD-HASH).

use std::path::Path;

use super::assets::{ASSETS, asset_text, build_hash};
use super::server::{host_allowed, parse_range, safe_segments};

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
    let recorded = asset_text("/BUILD-HASH");
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
