//! `tokenlens view`: serves the viewer for a run directory on 127.0.0.1, prints the URL and
//! opens a browser unless told not to.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokenlens::store::Manifest;
use tokenlens::view::Server;

#[derive(Args)]
pub struct ViewArgs {
    /// The run directory (output.dir of the pipeline).
    run_dir: PathBuf,
    /// Port to listen on (0: any free port). Default: 8470, or a free port if it is taken.
    #[arg(long)]
    port: Option<u16>,
    /// Do not open a browser.
    #[arg(long)]
    no_open: bool,
}

/// Binds, prints the URL, optionally opens a browser, serves until killed.
pub fn run(a: ViewArgs) -> Result<()> {
    let run_dir = &a.run_dir;
    if !run_dir.is_dir() {
        bail!("{}: not a directory", run_dir.display());
    }
    let comparison = run_dir.join("comparison.json");
    let runs = if comparison.is_file() {
        compared_runs(&comparison)?
    } else if Manifest::path(run_dir).is_file() {
        vec![]
    } else {
        bail!(
            "{}: not a run directory (no manifest.json) nor a comparison (no comparison.json); \
             give the output.dir of a pipeline or the --out of `tokenlens compare`",
            run_dir.display()
        );
    };
    let mut server = match a.port {
        Some(p) => Server::bind(run_dir, p)
            .with_context(|| format!("listening on 127.0.0.1:{p} (--port 0 picks a free port)"))?,
        None => Server::bind(run_dir, 8470)
            .or_else(|_| Server::bind(run_dir, 0))
            .context("listening on 127.0.0.1")?,
    };
    // A comparison's runs are served under /a/ and /b/ (its document pages show them side by
    // side); a run that has moved away is left out, and its pages say so.
    for (name, dir) in runs {
        if let Err(e) = server.mount(name, &dir) {
            eprintln!(
                "warning: run {} of the comparison ({}) is not served: {e}",
                name.to_uppercase(),
                dir.display()
            );
        }
    }
    let url = format!("http://127.0.0.1:{}/", server.port());
    println!("viewing {} at {url}", run_dir.display());
    std::io::stdout().flush()?;
    if !a.no_open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        // Best effort: no browser (a server, ssh) is fine, the URL is printed.
        let _ = std::process::Command::new(opener)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    server.run();
    Ok(())
}

/// The runs of a comparison directory's comparison.json: ("a", run A's path) and, when
/// there is one, ("b", run B's).
fn compared_runs(file: &std::path::Path) -> Result<Vec<(&'static str, PathBuf)>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
    let mut runs = vec![];
    for (name, key) in [("a", "run_a"), ("b", "run_b")] {
        if v[key].is_null() {
            continue;
        }
        let Some(p) = v[key]["path"].as_str() else {
            bail!("{}: `{key}.path` is missing", file.display());
        };
        runs.push((name, PathBuf::from(p)));
    }
    Ok(runs)
}
