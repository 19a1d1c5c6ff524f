//! The viewer: `tokenlens view RUN_DIR` serves the browser viewer (built from viewer/ and
//! embedded in the binary) and the run's files on 127.0.0.1; `tokenlens export-html` writes the
//! same viewer with the run inlined as one file. [`server`] is the HTTP server, [`export`] the
//! one-file export, [`assets`] the embedded viewer build, [`listing`] what a run holds (shared by
//! both).

mod assets;
mod export;
mod listing;
mod server;
#[cfg(test)]
mod tests;

pub use assets::{ASSETS, build_hash};
pub use export::{VIEWED_TABLES, export_html};
pub use listing::files_listing;
pub use server::{Server, safe_segments};
