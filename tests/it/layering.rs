//! The direction of imports (docs/architecture.md): model -> analysis -> pipeline -> store ->
//! view, `compare` beside the pipeline over the store, with the CLI on top. A file that names a
//! part it must not depend on fails this test, so the engine keeps building without the
//! pipeline, the store, the comparisons or the CLI. Also a check on the
//! viewer's browser test source: no check that passes whatever the page shows.

use std::path::{Path, PathBuf};

/// The parts a source folder (or file) under src/ must not name, and why.
const RULES: &[(&str, &[&str])] = &[
    (
        "error.rs",
        &[
            "numerics", "model", "analysis", "pipeline", "store", "view", "cli", "compare",
        ],
    ),
    (
        "numerics",
        &[
            "model", "analysis", "pipeline", "store", "view", "cli", "compare",
        ],
    ),
    (
        "model",
        &["analysis", "pipeline", "store", "view", "cli", "compare"],
    ),
    ("analysis", &["pipeline", "store", "view", "cli", "compare"]),
    (
        "store",
        &["model", "analysis", "pipeline", "view", "cli", "compare"],
    ),
    ("pipeline", &["view", "cli"]),
    ("view", &["model", "analysis", "pipeline", "cli", "compare"]),
    // Comparisons read finished runs: never the runner, the viewer or the command line.
    ("compare", &["pipeline", "view", "cli"]),
];

/// Parts a source folder may name only through some of their paths: the pipeline's similarity
/// stage is `tokenlens compare`'s layer similarity (one computation for a run's own table and a
/// comparison's), so `pipeline/` may name `compare::similarity` and its error, nothing else of
/// `compare` (which never names the pipeline: no cycle).
const ONLY_THROUGH: &[(&str, &str, &[&str])] = &[(
    "pipeline",
    "compare",
    &["compare::similarity", "compare::CompareError"],
)];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    for e in std::fs::read_dir(path).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The crate-level parts a line of code names: `crate::x`, `tokenlens::x`, `crate::{x, ..}`.
fn named_parts(line: &str) -> Vec<String> {
    named_paths(line)
        .into_iter()
        .map(|p| p.split("::").next().unwrap_or("").to_string())
        .collect()
}

/// The crate-level paths a line of code names, as far as they go before a `{` or the end:
/// `crate::x::y::Z` gives `x::y::Z`, `crate::{x::y, z}` gives `x::y` and `z`,
/// `crate::x::{y, z}` gives `x::`.
fn named_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut parts = Vec::new();
    for root in ["crate::", "tokenlens::"] {
        let mut rest = code;
        while let Some(i) = rest.find(root) {
            let after = &rest[i + root.len()..];
            let before = rest[..i].chars().last();
            if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                if let Some(group) = after.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or("");
                    for item in group.split(',') {
                        parts.push(item.trim().to_string());
                    }
                } else {
                    let name: String = after
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    parts.push(name);
                }
            }
            rest = after;
        }
    }
    parts
}

#[test]
fn imports_follow_the_data_flow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    let mut checked = 0;
    for (part, forbidden) in RULES {
        let root = src.join(part);
        assert!(
            root.exists(),
            "{} is gone: update the rules",
            root.display()
        );
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            checked += 1;
            for (n, line) in text.lines().enumerate() {
                // `super::super::...` chains that climb out of a part name it by another road.
                if line.contains("super::super::super::") {
                    bad.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
                for path in named_paths(line) {
                    let name = path.split("::").next().unwrap_or("");
                    if forbidden.contains(&name) {
                        bad.push(format!(
                            "{}:{}: {part} must not import {name}: {}",
                            f.display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                    for (p, other, through) in ONLY_THROUGH {
                        let allowed = |t: &&str| {
                            path.strip_prefix(*t)
                                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
                        };
                        if p == part && name == *other && !through.iter().any(allowed) {
                            bad.push(format!(
                                "{}:{}: {part} may name {other} only as {}: {}",
                                f.display(),
                                n + 1,
                                through.join(" or "),
                                line.trim()
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} files checked");
    assert!(
        bad.is_empty(),
        "imports against the data flow:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checker_sees_every_form_of_import() {
    assert_eq!(named_parts("use crate::store::schema::TOKENS;"), ["store"]);
    assert_eq!(
        named_parts("    let x = crate::pipeline::spec::f();"),
        ["pipeline"]
    );
    assert_eq!(
        named_parts("use crate::{model::Model, store::Manifest};"),
        ["model", "store"]
    );
    assert_eq!(named_parts("use tokenlens::view::Server;"), ["view"]);
    assert!(named_parts("// crate::store in a comment").is_empty());
    assert!(named_parts("use mycrate::store;").is_empty());
    assert_eq!(
        named_paths("use crate::compare::similarity::{Pairs, within_run};"),
        ["compare::similarity::"]
    );
    assert_eq!(
        named_paths("use crate::{compare::CompareError, store::Manifest};"),
        ["compare::CompareError", "store::Manifest"]
    );
    assert_eq!(
        named_paths("crate::compare::diff::f()"),
        ["compare::diff::f"]
    );
}

/// The viewer's browser test (viewer/test/browser.mjs, run by scripts/test.sh) asserts what each
/// line claims: no `check(true, ...)` or other constant condition that passes whatever the page
/// shows.
#[test]
fn the_browser_test_has_no_vacuous_checks() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("viewer/test/browser.mjs");
    let js = std::fs::read_to_string(&path).unwrap();
    let vacuous: Vec<(usize, &str)> = js
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.replace(' ', "");
            ["check(true", "check(1,", "check(!0", "check(!false"]
                .iter()
                .any(|c| l.contains(c))
        })
        .map(|(i, l)| (i + 1, l.trim()))
        .collect();
    assert!(
        vacuous.is_empty(),
        "{}: vacuous checks {vacuous:?}",
        path.display()
    );
}
