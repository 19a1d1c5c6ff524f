//! bf16 matrix products on Intel AMX (Advanced Matrix Extensions: the tile unit of Sapphire
//! Rapids and later Xeons), for the opt-in `bf16` compute precision: dst (+)= lhs . rhs with both
//! operands rounded to bf16 (round to nearest even) and the products accumulated in f32 by
//! `tdpbf16ps`, which is what torch's bf16 matmul does on the same CPUs.
//!
//! Why hand-written: neither the gemm crate nor candle has AMX kernels, and Rust's AMX intrinsics
//! are unstable, so the five instructions used (`ldtilecfg`, `tilezero`, `tileloadd`,
//! `tdpbf16ps`, `tilestored`) are inline assembly. [`available`] checks the CPU (CPUID leaf 7:
//! AMX-TILE and AMX-BF16) and asks Linux for the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`),
//! once per process; everything else runs only when it said yes.
//!
//! Layout: lhs is rounded and copied into rows of `kp` bf16 (k padded to 32 with zeros, rows to
//! 32); rhs into VNNI blocks of 16 output columns, `[kp / 2][16][2]` (pairs of consecutive k
//! per column, as `tdpbf16ps` reads its second operand). The micro-kernel keeps a 32 x 32 block
//! of the output in four tiles (tmm0-3) and walks k 32 at a time through two lhs tiles (tmm4-5)
//! and two rhs tiles (tmm6-7). Output columns are taken in groups whose packed rhs fits in L2,
//! rows are split over the threads.

use half::bf16;
use rayon::prelude::*;

use super::buffer::SharedMut;
use super::wmat::WSlice;

/// True when this CPU and kernel let the process use AMX tiles with bf16 products.
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    if !(amx_bf16 && amx_tile) {
        return false;
    }
    // Linux keeps the 8 KB tile state off until the process asks for it (kernel 5.16+).
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    rc == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Rows and depth of one micro-kernel step, and columns of one rhs block.
const BLOCK: usize = 32;
/// Bytes of packed rhs per column group: half of a 2 MB L2, so the lhs rows streamed past it fit too.
const GROUP_BYTES: usize = 1 << 20;

/// f32 -> bf16 bits, round to nearest even (NaN stays NaN: its payload is not all in the low bits).
#[inline(always)]
fn round_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// bf16 bits whose first element sits on a 64-byte boundary (a cache line): with rows of a
/// multiple of 64 bytes, every tile row then loads from one line instead of straddling two (a
/// plain `Vec<u16>` is only 16-byte aligned, and then the kernel ran at up to 1.6x slower,
/// depending on where the allocator put it).
struct Aligned {
    buf: Vec<u16>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn zeroed(len: usize) -> Aligned {
        let buf = vec![0u16; len + 32];
        let off = buf.as_ptr().align_offset(64);
        assert!(off < 32, "a u16 buffer is 2-byte aligned");
        Aligned { buf, off, len }
    }
}

impl std::ops::Deref for Aligned {
    type Target = [u16];
    fn deref(&self) -> &[u16] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [u16] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// The output block the tiles are stored to, on a cache line like the operands.
#[repr(C, align(64))]
struct Block([f32; BLOCK * BLOCK]);

/// The value of lhs[i, kk] at `lhs[i * lrs + kk * lcs]`, rounded to bf16, packed as rows of `kp`.
fn pack_lhs(m: usize, k: usize, kp: usize, lhs: &[f32], lrs: usize, lcs: usize) -> Aligned {
    let mp = m.div_ceil(BLOCK) * BLOCK;
    let mut out = Aligned::zeroed(mp * kp);
    out.par_chunks_mut(kp * BLOCK)
        .enumerate()
        .for_each(|(b, rows)| {
            for (r, row) in rows.chunks_mut(kp).enumerate() {
                let i = b * BLOCK + r;
                if i >= m {
                    break;
                }
                let src = &lhs[i * lrs..];
                if lcs == 1 {
                    for (d, &s) in row[..k].iter_mut().zip(&src[..k]) {
                        *d = round_bf16(s);
                    }
                } else {
                    for (kk, d) in row[..k].iter_mut().enumerate() {
                        *d = round_bf16(src[kk * lcs]);
                    }
                }
            }
        });
    out
}

/// rhs[kk, j] at `rhs[kk * rrs + j * rcs]`, rounded to bf16, in VNNI blocks of 16 columns:
/// block `jb` holds `[kp / 2][16][2]` at `jb * kp * 16`.
fn pack_rhs(n: usize, k: usize, kp: usize, rhs: WSlice, rrs: usize, rcs: usize) -> Aligned {
    let nblocks = n.div_ceil(16);
    let mut out = Aligned::zeroed(nblocks * kp * 16);
    out.par_chunks_mut(kp * 16)
        .enumerate()
        .for_each(|(jb, block)| {
            let cols = (n - jb * 16).min(16);
            if rcs == 1 {
                // [k, n] rows: 16 consecutive values of each row kk.
                let mut row = [0f32; 16];
                for kk in 0..k {
                    rhs.widen(kk * rrs + jb * 16, &mut row[..cols]);
                    for (c, &v) in row[..cols].iter().enumerate() {
                        block[(kk / 2) * 32 + c * 2 + (kk & 1)] = round_bf16(v);
                    }
                }
            } else {
                // [n, k] rows (rrs == 1): column j is k consecutive values.
                assert!(rrs == 1, "amx: rhs must be row-major one way round");
                let mut col = vec![0f32; k];
                for c in 0..cols {
                    rhs.widen((jb * 16 + c) * rcs, &mut col);
                    for (kk, &v) in col.iter().enumerate() {
                        block[(kk / 2) * 32 + c * 2 + (kk & 1)] = round_bf16(v);
                    }
                }
            }
        });
    out
}

/// The tile configuration: palette 1, eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

fn tile_config() -> TileConfig {
    let mut c = [0u8; 64];
    c[0] = 1;
    for t in 0..8 {
        c[16 + 2 * t] = 64; // colsb, little-endian u16
        c[48 + t] = 16; // rows
    }
    TileConfig(c)
}

/// out[32 x 32] (row stride 32) = a[32 rows, stride `sa` bytes] . b, over `steps` steps of 32 k:
/// b0 and b1 are two VNNI rhs blocks (16 columns each).
///
/// # Safety
/// AMX must be available and the tile configuration loaded on this thread; the pointers must
/// address `steps` steps of their operands and 32 x 32 f32 of output.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn kernel(
    a: *const u16,
    sa: usize,
    b0: *const u16,
    b1: *const u16,
    steps: usize,
    out: *mut f32,
) {
    let a1 = unsafe { a.byte_add(16 * sa) };
    // SAFETY: per the function's contract.
    unsafe {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {sb}*1]",
            "tileloadd tmm7, [{b1} + {sb}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a1}, 64",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {n}",
            "jnz 2b",
            "tilestored [{c0} + {sc}*1], tmm0",
            "tilestored [{c1} + {sc}*1], tmm1",
            "tilestored [{c2} + {sc}*1], tmm2",
            "tilestored [{c3} + {sc}*1], tmm3",
            a0 = inout(reg) a => _,
            a1 = inout(reg) a1 => _,
            b0 = inout(reg) b0 => _,
            b1 = inout(reg) b1 => _,
            n = inout(reg) steps => _,
            sa = in(reg) sa,
            sb = in(reg) 64usize,
            sc = in(reg) 128usize,
            c0 = in(reg) out,
            c1 = in(reg) out.add(16),
            c2 = in(reg) out.add(16 * 32),
            c3 = in(reg) out.add(16 * 32 + 16),
            options(nostack),
        );
    }
}

/// Loads the tile configuration on this thread.
///
/// # Safety
/// AMX must be available.
#[cfg(target_arch = "x86_64")]
unsafe fn load_config(cfg: &TileConfig) {
    // SAFETY: per the function's contract; the configuration is valid for palette 1.
    unsafe {
        std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly))
    };
}

/// Releases this thread's tiles (so the OS need not save them on a context switch).
#[cfg(target_arch = "x86_64")]
unsafe fn release() {
    // SAFETY: valid whenever AMX is available.
    unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
}

/// A right-hand side [k, n] rounded to bf16 and packed for the kernel, made once per weight
/// matrix and orientation (`Packs`) and reused by every product with it.
pub struct PackedRhs {
    n: usize,
    k: usize,
    kp: usize,
    data: Aligned,
    /// Without AMX: the same bf16 values widened to f32 [k, n], for the f32 gemm.
    wide: std::sync::OnceLock<Vec<f32>>,
}

impl PackedRhs {
    /// rhs[kk, j] at `rhs[kk * rrs + j * rcs]`, which must be row-major one way round
    /// (`rcs == 1` or `rrs == 1`).
    ///
    /// # Panics
    /// If rhs is smaller than its strides say.
    pub fn new(n: usize, k: usize, rhs: WSlice, rrs: usize, rcs: usize) -> PackedRhs {
        assert!(
            n == 0 || k == 0 || rhs.len() > (k - 1) * rrs + (n - 1) * rcs,
            "amx: rhs size"
        );
        let kp = k.div_ceil(BLOCK) * BLOCK;
        let data = if n == 0 || k == 0 {
            Aligned::zeroed(0)
        } else {
            pack_rhs(n, k, kp, rhs, rrs, rcs)
        };
        PackedRhs {
            n,
            k,
            kp,
            data,
            wide: std::sync::OnceLock::new(),
        }
    }

    /// (k, n).
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    fn widened(&self) -> &[f32] {
        self.wide.get_or_init(|| {
            let mut out = vec![0f32; self.k * self.n];
            for j in 0..self.n {
                let block = &self.data[(j / 16) * self.kp * 16..];
                for kk in 0..self.k {
                    let v = block[(kk / 2) * 32 + (j % 16) * 2 + (kk & 1)];
                    out[kk * self.n + j] = bf16::from_bits(v).to_f32();
                }
            }
            out
        })
    }
}

/// A weight matrix's packed bf16 copies, made on first use: as stored (the forward's `x W`) and
/// transposed (the reverse pass's `dy W^T`).
#[derive(Default)]
pub struct Packs {
    pub forward: std::sync::OnceLock<PackedRhs>,
    pub transposed: std::sync::OnceLock<PackedRhs>,
}

impl Packs {
    /// The packed copy of rhs [k, n] (rhs[kk, j] at `rhs[kk * rrs + j * rcs]`) for products
    /// `x W`, made on first use.
    pub fn forward(&self, n: usize, k: usize, rhs: WSlice, rrs: usize, rcs: usize) -> &PackedRhs {
        self.forward
            .get_or_init(|| PackedRhs::new(n, k, rhs, rrs, rcs))
    }

    /// The same for the products `dy W^T` (the caller gives W^T's strides).
    pub fn transposed(
        &self,
        n: usize,
        k: usize,
        rhs: WSlice,
        rrs: usize,
        rcs: usize,
    ) -> &PackedRhs {
        self.transposed
            .get_or_init(|| PackedRhs::new(n, k, rhs, rrs, rcs))
    }
}

/// Threads for a product called here: all of rayon's outside its tasks, one inside them.
pub fn threads_here() -> usize {
    match rayon::current_thread_index() {
        None => rayon::current_num_threads(),
        Some(_) => 1,
    }
}

/// dst [m, n] (row stride `dst_rs`) = dst (if `acc`) + bf16(lhs) . rhs, accumulated in f32, for
/// lhs[i, kk] at `lhs[i * lrs + kk * lcs]` and a packed rhs [k, n] (`PackedRhs`, made once per
/// matrix); rows split over `threads` rayon tasks (1: this thread only). On AMX tiles when
/// [`available`], else the same bf16 values multiplied by the f32 gemm (the same numbers up to
/// the order of the f32 sums, at f32 speed).
///
/// # Panics
/// If an operand is smaller than its strides say.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed(
    m: usize,
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: &[f32],
    lrs: usize,
    lcs: usize,
    rhs: &PackedRhs,
    threads: usize,
) {
    gemm_packed_on(
        m,
        dst,
        dst_rs,
        acc,
        lhs,
        lrs,
        lcs,
        rhs,
        threads,
        available(),
    )
}

/// `gemm_packed` on AMX tiles (`amx`, which must be [`available`]) or the f32 gemm.
#[allow(clippy::too_many_arguments)]
fn gemm_packed_on(
    m: usize,
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: &[f32],
    lrs: usize,
    lcs: usize,
    rhs: &PackedRhs,
    threads: usize,
    amx: bool,
) {
    let (n, k, kp) = (rhs.n, rhs.k, rhs.kp);
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n, "amx: dst size");
    if k == 0 {
        if !acc {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    assert!(lhs.len() > (m - 1) * lrs + (k - 1) * lcs, "amx: lhs size");
    if !amx {
        let mut a = vec![0f32; m * k];
        for i in 0..m {
            for kk in 0..k {
                a[i * k + kk] = to_bf16(lhs[i * lrs + kk * lcs]);
            }
        }
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: dst holds m rows of stride dst_rs (checked above), a is m x k, the widened
        // rhs k x n, all row-major.
        unsafe {
            super::matrix::gemm_raw(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                dst_rs,
                acc,
                a.as_ptr(),
                k,
                1,
                rhs.widened().as_ptr(),
                n,
                1,
                1.0,
                par,
            )
        };
        return;
    }
    let a = pack_lhs(m, k, kp, lhs, lrs, lcs);
    let b = &rhs.data;
    let row_blocks = m.div_ceil(BLOCK);
    let col_blocks = n.div_ceil(BLOCK);
    // Column blocks per group: packed rhs of a group within GROUP_BYTES.
    let group = (GROUP_BYTES / (kp * BLOCK * 2)).clamp(1, col_blocks);
    let out = SharedMut(dst.as_mut_ptr());
    let tasks = threads.clamp(1, row_blocks);
    let per_task = row_blocks.div_ceil(tasks);
    let run = |t: usize| {
        let (r0, r1) = (t * per_task, ((t + 1) * per_task).min(row_blocks));
        let cfg = tile_config();
        let mut tmp = Block([0f32; BLOCK * BLOCK]);
        assert!(available(), "amx: AMX is not available on this CPU");
        // SAFETY: AMX is available (asserted).
        unsafe { load_config(&cfg) };
        for g0 in (0..col_blocks).step_by(group) {
            for rb in r0..r1 {
                let arow = &a[rb * BLOCK * kp..];
                for cb in g0..(g0 + group).min(col_blocks) {
                    let b0 = &b[2 * cb * kp * 16..];
                    // A last block of 16 columns has no second half: multiply the first twice.
                    let b1 = if 2 * cb + 1 < n.div_ceil(16) {
                        &b[(2 * cb + 1) * kp * 16..]
                    } else {
                        b0
                    };
                    // SAFETY: a holds 32 rows of kp from rb * 32, b0/b1 kp / 2 rows of 16
                    // pairs; tmp is 32 x 32; the tiles are configured.
                    unsafe {
                        kernel(
                            arow.as_ptr(),
                            kp * 2,
                            b0.as_ptr(),
                            b1.as_ptr(),
                            kp / BLOCK,
                            tmp.0.as_mut_ptr(),
                        )
                    };
                    let rows = (m - rb * BLOCK).min(BLOCK);
                    let cols = (n - cb * BLOCK).min(BLOCK);
                    for r in 0..rows {
                        let i = rb * BLOCK + r;
                        // SAFETY: row i < m, columns cb * 32 .. + cols < n: inside dst (checked
                        // above); tasks write disjoint rows.
                        let d = unsafe {
                            std::slice::from_raw_parts_mut(
                                out.ptr().add(i * dst_rs + cb * BLOCK),
                                cols,
                            )
                        };
                        let s = &tmp.0[r * BLOCK..r * BLOCK + cols];
                        if acc {
                            d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
                        } else {
                            d.copy_from_slice(s);
                        }
                    }
                }
            }
        }
        // SAFETY: AMX is available.
        unsafe { release() };
    };
    if tasks > 1 {
        (0..tasks).into_par_iter().for_each(run);
    } else {
        run(0);
    }
}

/// Rounds an f32 to the nearest bf16 value (ties to even), as the products above do.
pub fn to_bf16(x: f32) -> f32 {
    bf16::from_bits(round_bf16(x)).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::rng::SplitMix64;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa, 1.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(to_bf16(-2.5), -2.5);
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0 + 1e-6), 1.0 + 1.0 / 128.0);
        assert!(to_bf16(f32::NAN).is_nan());
        assert_eq!(half::bf16::from_f32(0.1f32).to_f32(), to_bf16(0.1));
    }

    #[test]
    fn packed_buffers_start_on_a_cache_line() {
        for len in [0, 1, 31, 32, 1000, 1 << 20] {
            let a = Aligned::zeroed(len);
            assert_eq!(a.as_ptr() as usize % 64, 0, "len {len}");
            assert_eq!(a.len(), len);
            assert!(a.iter().all(|&v| v == 0));
        }
        let w: Vec<f32> = (0..70 * 33).map(|i| i as f32).collect();
        let p = PackedRhs::new(33, 70, WSlice::F32(&w), 33, 1);
        assert_eq!(p.data.as_ptr() as usize % 64, 0);
        let lhs = pack_lhs(5, 70, 96, &w, 70, 1);
        assert_eq!(lhs.as_ptr() as usize % 64, 0);
        assert_eq!(lhs.len(), 32 * 96);
    }

    /// The reference: the same bf16-rounded operands multiplied in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        lhs: &[f32],
        rhs: &[f32],
        rrs: usize,
        rcs: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|kk| {
                        to_bf16(lhs[i * k + kk]) as f64 * to_bf16(rhs[kk * rrs + j * rcs]) as f64
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn amx_products_match_bf16_rounded_operands() {
        // Without AMX this checks the f32 fallback, which must give the same numbers.
        eprintln!("AMX available: {}", available());
        let mut rng = SplitMix64::new(11);
        let mut normal = move || (rng.next_f64() * 2.0 - 1.0) as f32;
        // Ragged in every dimension (m, n, k not multiples of 16 or 32), one and several
        // column groups (k = 1100: 1 MB holds 9 blocks of 32 columns), both rhs orders, with
        // and without accumulation, one and two threads, f32 and bf16 weights.
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 17, 33),
            (40, 48, 64),
            (33, 300, 1100),
            (70, 577, 95),
        ] {
            for &transposed in &[false, true] {
                for &acc in &[false, true] {
                    for threads in [1, 2] {
                        let lhs: Vec<f32> = (0..m * k).map(|_| normal()).collect();
                        let rhs: Vec<f32> = (0..k * n).map(|_| normal()).collect();
                        let (rrs, rcs) = if transposed { (1, k) } else { (n, 1) };
                        let want = reference(m, n, k, &lhs, &rhs, rrs, rcs);
                        let init: Vec<f32> = (0..m * n).map(|_| normal()).collect();
                        let rhs_b: Vec<bf16> = rhs.iter().map(|&v| bf16::from_f32(v)).collect();
                        let paths = [false, true].into_iter().filter(|&amx| !amx || available());
                        for (w, amx) in [WSlice::F32(&rhs), WSlice::Bf16(&rhs_b)]
                            .into_iter()
                            .flat_map(|w| paths.clone().map(move |a| (w, a)))
                        {
                            // dst rows wider than n (a window of a wider matrix): the
                            // columns past n must stay as they were.
                            let ds = n + 3;
                            let mut dst: Vec<f32> = (0..m * ds)
                                .map(|i| {
                                    if i % ds < n {
                                        init[i / ds * n + i % ds]
                                    } else {
                                        7.0
                                    }
                                })
                                .collect();
                            let packed = PackedRhs::new(n, k, w, rrs, rcs);
                            gemm_packed_on(m, &mut dst, ds, acc, &lhs, k, 1, &packed, threads, amx);
                            assert!((0..m * ds).all(|i| i % ds < n || dst[i] == 7.0));
                            let dst: Vec<f32> =
                                (0..m * n).map(|i| dst[i / n * ds + i % n]).collect();
                            for i in 0..m * n {
                                let base = if acc { init[i] as f64 } else { 0.0 };
                                let err = (dst[i] as f64 - base - want[i]).abs();
                                // f32 accumulation of k exact products of size <= 1.
                                assert!(
                                    err <= 1e-6 * k as f64 + 1e-6,
                                    "{m}x{n}x{k} t{transposed} acc{acc} threads {threads} amx {amx}: [{i}] {} vs {}",
                                    dst[i] as f64 - base,
                                    want[i]
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
