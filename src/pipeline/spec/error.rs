//! What is wrong with a spec: unreadable, not YAML of the spec's shape (with `file:line:column`),
//! or well-formed with values out of range (every problem listed with its key path).

use std::path::{Path, PathBuf};

/// Errors of loading and validating a pipeline spec. `path` is the spec file as given.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// Not valid YAML, or not the structure of a spec: unknown key, missing key, mistyped value.
    #[error("{}", parse_message(path, *location, msg))]
    Parse {
        path: PathBuf,
        /// 1-based line and column, when the YAML library knows them.
        location: Option<(usize, usize)>,
        msg: String,
    },
    /// Well-formed, but some values are out of range or contradict each other (all are listed).
    #[error("{}", problems_message(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// One semantic problem: the key path (`analyses.saliency.n_steps`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub msg: String,
}

fn parse_message(path: &Path, location: Option<(usize, usize)>, msg: &str) -> String {
    match location {
        Some((line, col)) => format!("{}:{line}:{col}: {msg}", path.display()),
        None => format!("{}: {msg}", path.display()),
    }
}

fn problems_message(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}: {}", path.display(), p.key, p.msg))
        .collect::<Vec<_>>()
        .join("\n")
}
