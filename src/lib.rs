//! tokenlens: Ecco-style interpretability for whole prompt datasets.
//!
//! Data flows one way: `model` (checkpoints, forward passes, captures, gradients) ->
//! analyses -> store (Parquet) -> viewer.

pub mod analysis;
pub mod error;
pub mod model;
pub mod numerics;
pub mod pipeline;
pub mod store;
pub mod view;

pub use error::{Error, Result};

/// Process-wide tuning for large tensor workloads: keeps freed memory in the heap instead of
/// returning it to the OS after every tensor, so the next forward pass does not page-fault its
/// buffers in again (~15% of a forward pass otherwise). Called by the CLI and the benchmarks;
/// library users may call it once at start-up.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before heavy allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        // One arena: worker threads' large buffers come from the same retained heap instead of
        // fresh (kernel-zeroed) mappings.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
