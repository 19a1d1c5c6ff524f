//! The viewer's built files embedded in the binary (viewer/dist, committed; rebuilt with
//! `npm ci && npm run build` in viewer/), looked up by the path they are served at, and the hash
//! viewer/build.mjs records in BUILD-HASH (checked by the freshness test in `view::tests`).

/// The viewer's built files (viewer/dist, committed; rebuilt with `npm ci && npm run build` in
/// viewer/): path served, content type, bytes.
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../viewer/dist/index.html"),
    ),
    (
        "/viewer.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../viewer/dist/viewer.js"),
    ),
    (
        "/viewer.css",
        "text/css; charset=utf-8",
        include_bytes!("../../viewer/dist/viewer.css"),
    ),
    (
        "/BUILD-HASH",
        "text/plain; charset=utf-8",
        include_bytes!("../../viewer/dist/BUILD-HASH"),
    ),
];

/// The embedded file served at `path`: (content type, bytes).
pub(super) fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|&(_, ty, bytes)| (ty, bytes))
}

/// The embedded file served at `path` as text (empty if absent or not UTF-8).
pub(super) fn asset_text(path: &str) -> &'static str {
    asset(path)
        .and_then(|(_, b)| std::str::from_utf8(b).ok())
        .unwrap_or_default()
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
