//! Output buffers for kernels that write every element themselves: allocated uninitialized
//! (`uninit`), viewed as floats once written (`written`, `init`), and a raw pointer that
//! parallel tasks writing disjoint regions of one buffer may share (`SharedMut`).

use std::mem::MaybeUninit;

/// An output buffer the kernel fully writes before `init` (no zeroing pass: with the heap kept
/// by `tune_allocator`, zeroing every activation costs ~5% of a forward pass).
pub(crate) fn uninit(n: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: MaybeUninit needs no initialization.
    unsafe { v.set_len(n) };
    v
}

/// # Safety
/// Every element of `v` has been written.
pub(crate) unsafe fn init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, MaybeUninit<f32> has the layout of f32, all elements written.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut f32, v.len(), v.capacity()) }
}

/// A written chunk of an uninit buffer, as floats.
///
/// # Safety
/// Every element of `c` has been written.
pub(crate) unsafe fn written(c: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: layout-compatible, all elements written (caller's promise).
    unsafe { std::slice::from_raw_parts_mut(c.as_mut_ptr() as *mut f32, c.len()) }
}

/// A raw pointer that may be shared by tasks writing disjoint regions.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: users write disjoint regions only (see `model::kernels::attention`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}
