//! tokenlens: Ecco-style interpretability for whole prompt datasets.
//!
//! Data flows one way: `model` (checkpoints, forward passes, captures, gradients) ->
//! analyses -> store (Parquet) -> viewer; `compare` reads finished runs and writes comparison
//! directories.

pub mod analysis;
pub mod compare;
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

/// Returns the heap's free pages to the OS (glibc's `malloc_trim(0)`; a no-op elsewhere).
/// [`tune_allocator`] keeps freed memory in the heap, and a large block freed in its middle (a
/// model's weights) stays resident: a phase that frees much and then allocates differently (the
/// pipeline's NMF stage after the model is released) calls this in between, so the two do not
/// add up.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only gives the allocator's free pages back (madvise); live
    // allocations are untouched.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// RssAnon of this process, in KiB.
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn release_free_memory_returns_a_freed_block_in_the_heap() {
        const CHILD: &str = "TOKENLENS_TEST_RELEASE_CHILD";
        const NAME: &str = "tests::release_free_memory_returns_a_freed_block_in_the_heap";
        // The allocator's settings are process-wide and other tests allocate in parallel: the
        // measurement runs in a child process running only this test.
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--test-threads=1", "--nocapture"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && log.contains("1 passed"), "{log}");
            return;
        }
        super::tune_allocator();
        // Like a model's weights: 64 blocks of 4 MiB, each followed by a small live allocation,
        // so that freeing the blocks leaves holes in the heap rather than a free top.
        let mut blocks = Vec::new();
        let mut pins = Vec::new();
        for i in 0..64u8 {
            blocks.push(std::hint::black_box(vec![i | 1; 4 << 20]));
            pins.push(std::hint::black_box(vec![i; 64]));
        }
        drop(blocks);
        let before = rss_anon_kib();
        super::release_free_memory();
        let after = rss_anon_kib();
        drop(pins);
        eprintln!("RssAnon {before} KiB -> {after} KiB");
        assert!(
            before.saturating_sub(after) > 200 << 10,
            "RssAnon {before} KiB -> {after} KiB"
        );
    }
}
