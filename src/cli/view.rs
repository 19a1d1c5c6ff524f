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
    if !Manifest::path(run_dir).is_file() {
        bail!(
            "{}: not a run directory (no manifest.json); give the output.dir of a pipeline",
            run_dir.display()
        );
    }
    let server = match a.port {
        Some(p) => Server::bind(run_dir, p)
            .with_context(|| format!("listening on 127.0.0.1:{p} (--port 0 picks a free port)"))?,
        None => Server::bind(run_dir, 8470)
            .or_else(|_| Server::bind(run_dir, 0))
            .context("listening on 127.0.0.1")?,
    };
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
