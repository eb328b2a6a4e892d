//! Winograd minimal-filtering 3x3 convolution on the CPU (`F(m x m, 3 x 3)`, Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", CVPR 2016, §4).
//!
//! Each `m x m` output tile is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` of the `(m + 2) x (m + 2)` input
//! patch `d` and the 3x3 filter `g`. Over channels the element-wise product becomes
//! `(m + 2)²` independent matrix products `V_ξ [tiles, C_in] · U_ξ [C_in, C_out]`, which cost
//! `(m + 2)² / m²` multiply-adds per output and input channel instead of im2col's 9: 2.25 for
//! `m = 4`, 4x fewer (the transforms and memory traffic eat part of that: measured 2x).
//!
//! Layout: the input is turned channels-last once; tiles are processed in blocks (one block per
//! task on rayon's pool) so that a block's transformed patches, products and the filter plane
//! of one `ξ` stay in cache; the products run on the `gemm` crate (the one Burn's CPU backend
//! uses). Numerics: f32 throughout; the transforms for `m = 4` (interpolation points
//! `0, ±1, ±2, ∞`) amplify rounding by about 10x over a direct convolution, still ~1e-6 relative
//! (see the tests, against Burn's `conv2d`).

use rayon::prelude::*;

/// A Winograd transform `F(m x m, 3 x 3)`: the matrices `Bᵀ [α, α]`, `G [α, 3]`, `Aᵀ [m, α]`,
/// row-major, `α = m + 2`.
#[derive(Debug, Clone, Copy)]
pub struct WinogradTransform {
    /// Output tile side `m`.
    pub m: usize,
    bt: &'static [f32],
    g: &'static [f32],
    at: &'static [f32],
}

impl WinogradTransform {
    /// `F(2x2, 3x3)`: 16 products per 4 outputs, exact up to f32 rounding of ±1 and 0.5.
    pub const F2: Self = Self {
        m: 2,
        bt: &[
            1.0, 0.0, -1.0, 0.0, //
            0.0, 1.0, 1.0, 0.0, //
            0.0, -1.0, 1.0, 0.0, //
            0.0, 1.0, 0.0, -1.0,
        ],
        g: &[
            1.0, 0.0, 0.0, //
            0.5, 0.5, 0.5, //
            0.5, -0.5, 0.5, //
            0.0, 0.0, 1.0,
        ],
        at: &[
            1.0, 1.0, 1.0, 0.0, //
            0.0, 1.0, -1.0, -1.0,
        ],
    };

    /// `F(4x4, 3x3)`: 36 products per 16 outputs (Lavin & Gray's matrices).
    pub const F4: Self = Self {
        m: 4,
        bt: &[
            4.0, 0.0, -5.0, 0.0, 1.0, 0.0, //
            0.0, -4.0, -4.0, 1.0, 1.0, 0.0, //
            0.0, 4.0, -4.0, -1.0, 1.0, 0.0, //
            0.0, -2.0, -1.0, 2.0, 1.0, 0.0, //
            0.0, 2.0, -1.0, -2.0, 1.0, 0.0, //
            0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
        ],
        g: &[
            1.0 / 4.0,
            0.0,
            0.0, //
            -1.0 / 6.0,
            -1.0 / 6.0,
            -1.0 / 6.0, //
            -1.0 / 6.0,
            1.0 / 6.0,
            -1.0 / 6.0, //
            1.0 / 24.0,
            1.0 / 12.0,
            1.0 / 6.0, //
            1.0 / 24.0,
            -1.0 / 12.0,
            1.0 / 6.0, //
            0.0,
            0.0,
            1.0,
        ],
        at: &[
            1.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
            0.0, 1.0, -1.0, 2.0, -2.0, 0.0, //
            0.0, 1.0, 1.0, 4.0, 4.0, 0.0, //
            0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
        ],
    };

    /// Input patch side `α = m + 2`.
    pub fn alpha(&self) -> usize {
        self.m + 2
    }
}

/// Tiles per block (one task on the pool) when there are many.
const BLOCK_TILES: usize = 64;
/// Up to this many tiles, all go in one block and the products are parallel instead.
const FEW_TILES: usize = 256;

/// Shape of an NCHW convolution input: `[batch, C_in, height, width]`.
pub type Nchw = [usize; 4];

/// 3x3 convolution, stride 1, padding 1 on every side (zero), no dilation, one group, of
/// `x` (`[batch, C_in, H, W]`, NCHW, row-major) with `weight` (`[C_out, C_in, 3, 3]`, PyTorch
/// layout) and an optional `bias` (`[C_out]`). Returns the output `[batch, C_out, H, W]`
/// (NCHW), computed with `transform` on rayon's global pool.
///
/// # Panics
/// When the slice lengths do not match the shapes.
pub fn conv3x3_winograd(
    x: &[f32],
    [batch, cin, h, w]: Nchw,
    weight: &[f32],
    cout: usize,
    bias: Option<&[f32]>,
    transform: WinogradTransform,
) -> Vec<f32> {
    assert_eq!(x.len(), batch * cin * h * w, "input length");
    assert_eq!(weight.len(), cout * cin * 9, "weight length");
    if let Some(b) = bias {
        assert_eq!(b.len(), cout, "bias length");
    }
    let (m, alpha) = (transform.m, transform.alpha());
    let planes = alpha * alpha;
    if batch * h * w * cout == 0 {
        return vec![0.0; batch * cout * h * w];
    }

    // Stage 1: filters -> U [C_in, α², C_out].
    let u = transform_filters(weight, cin, cout, transform);
    // Stage 2: input -> channels-last [batch, H, W, C_in].
    let x_nhwc = to_channels_last(x, cin, h * w);

    // Stage 3: tiles in blocks: input transform, α² products, output transform.
    let (tiles_h, tiles_w) = (h.div_ceil(m), w.div_ceil(m));
    let tiles = batch * tiles_h * tiles_w;
    // Many tiles: blocks of 64 on the pool, one thread per block. Few tiles (small images):
    // one block, and the products themselves run on the pool.
    let (block, parallelism) =
        if tiles <= FEW_TILES { (tiles, gemm::Parallelism::Rayon(0)) } else { (BLOCK_TILES, gemm::Parallelism::None) };
    let mut out_nhwc = vec![0.0f32; batch * h * w * cout];
    let out_ptr = SendPtr(out_nhwc.as_mut_ptr());
    let blocks = tiles.div_ceil(block);
    (0..blocks).into_par_iter().for_each_init(
        || Scratch::new(planes, block, cin, cout),
        |s, bi| {
            let first = bi * block;
            let count = block.min(tiles - first);
            // Input transform: V[ξ][t][c] = (Bᵀ d_t B)[ξ][c].
            for t in 0..count {
                let (b, ty, tx) = tile_position(first + t, tiles_h, tiles_w);
                gather_patch(&mut s.patch, &x_nhwc, b, ty * m, tx * m, h, w, cin, alpha);
                input_transform(s, t, block, cin, transform);
            }
            // Products: M_ξ [count, C_out] = V_ξ [count, C_in] · U_ξ [C_in, C_out].
            for xi in 0..planes {
                let v = &s.v[xi * block * cin..];
                let u_xi = &u[xi * cout..];
                let dst = &mut s.prod[xi * block * cout..];
                // SAFETY: `dst` holds `count x cout` and `v` `count x cin` (row-major); `u_xi`
                // is `cin x cout` with row stride `planes * cout`, inside `u`.
                unsafe {
                    gemm::gemm(
                        count,
                        cout,
                        cin,
                        dst.as_mut_ptr(),
                        1,
                        cout as isize,
                        false,
                        v.as_ptr(),
                        1,
                        cin as isize,
                        u_xi.as_ptr(),
                        1,
                        (planes * cout) as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism,
                    );
                }
            }
            // Output transform: Y_t = Aᵀ M_t A (+ bias), written channels-last.
            for t in 0..count {
                let (b, ty, tx) = tile_position(first + t, tiles_h, tiles_w);
                output_transform(s, t, block, cout, transform);
                for r in 0..m.min(h - ty * m) {
                    for c in 0..m.min(w - tx * m) {
                        let y = &s.out_tile[(r * m + c) * cout..(r * m + c + 1) * cout];
                        let pixel = (b * h + ty * m + r) * w + tx * m + c;
                        // SAFETY: every (tile, r, c) names a distinct output pixel, so blocks
                        // write disjoint `cout`-long runs of `out_nhwc`.
                        let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(pixel * cout), cout) };
                        match bias {
                            Some(bias) => dst.iter_mut().zip(y).zip(bias).for_each(|((o, &v), &b)| *o = v + b),
                            None => dst.copy_from_slice(y),
                        }
                    }
                }
            }
        },
    );

    // Stage 4: channels-last -> NCHW.
    to_channels_first(&out_nhwc, batch, cout, h * w)
}

/// A raw pointer that rayon tasks may share (they write disjoint ranges).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only for disjoint writes, see the call site.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Per-task buffers.
struct Scratch {
    /// Input patch `[α, α, C_in]`.
    patch: Vec<f32>,
    /// Row-transformed patch `[α, α, C]` (also reused by the output transform).
    tmp: Vec<f32>,
    /// `V [α², block, C_in]`.
    v: Vec<f32>,
    /// `M [α², block, C_out]`.
    prod: Vec<f32>,
    /// One output tile `[m, m, C_out]`.
    out_tile: Vec<f32>,
}

impl Scratch {
    fn new(planes: usize, block: usize, cin: usize, cout: usize) -> Self {
        Self {
            patch: vec![0.0; planes * cin],
            tmp: vec![0.0; planes * cin.max(cout)],
            v: vec![0.0; planes * block * cin],
            prod: vec![0.0; planes * block * cout],
            out_tile: vec![0.0; planes * cout],
        }
    }
}

/// `(image, tile row, tile column)` of tile number `t`.
fn tile_position(t: usize, tiles_h: usize, tiles_w: usize) -> (usize, usize, usize) {
    (t / (tiles_h * tiles_w), (t / tiles_w) % tiles_h, t % tiles_w)
}

/// `dst[i] += k * src[i]` (vectorised by the compiler).
#[inline]
fn axpy(dst: &mut [f32], k: f32, src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d += k * s);
}

/// Filters `[C_out, C_in, 3, 3]` -> `U [C_in, α², C_out]`, `U[ci][ξ][co] = (G g Gᵀ)[ξ]` for
/// `g = weight[co][ci]`. Parallel over input channels; each task reads its filters once and
/// writes one contiguous `[α², C_out]` slab (the products read plane `ξ` with row stride
/// `α² · C_out`).
fn transform_filters(weight: &[f32], cin: usize, cout: usize, t: WinogradTransform) -> Vec<f32> {
    let alpha = t.alpha();
    let planes = alpha * alpha;
    let mut u = vec![0.0f32; cin * planes * cout];
    u.par_chunks_mut(planes * cout).enumerate().for_each(|(ci, slab)| {
        for co in 0..cout {
            let g = &weight[(co * cin + ci) * 9..][..9];
            // gg[a][j] = Σ_i G[a][i] g[i][j]
            let mut gg = [0.0f32; 18];
            for a in 0..alpha {
                for j in 0..3 {
                    gg[a * 3 + j] = (0..3).map(|i| t.g[a * 3 + i] * g[i * 3 + j]).sum();
                }
            }
            for a in 0..alpha {
                for b in 0..alpha {
                    slab[(a * alpha + b) * cout + co] = (0..3).map(|j| gg[a * 3 + j] * t.g[b * 3 + j]).sum();
                }
            }
        }
    });
    u
}

/// `[batch, C, P]` -> `[batch, P, C]`, parallel over images and pixel rows of 64.
fn to_channels_last(x: &[f32], c: usize, pixels: usize) -> Vec<f32> {
    const ROW: usize = 64;
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(ROW * c).enumerate().for_each(|(chunk, dst)| {
        let start = chunk * ROW; // first pixel over all images
        for (k, d) in dst.chunks_mut(c).enumerate() {
            let (b, p) = ((start + k) / pixels, (start + k) % pixels);
            let src = &x[b * c * pixels + p..];
            for (ci, v) in d.iter_mut().enumerate() {
                *v = src[ci * pixels];
            }
        }
    });
    out
}

/// `[batch, P, C]` -> `[batch, C, P]`, parallel over (image, channel) planes.
fn to_channels_first(x: &[f32], batch: usize, c: usize, pixels: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(pixels).enumerate().for_each(|(plane, dst)| {
        let (b, ci) = (plane / c, plane % c);
        let src = &x[b * pixels * c + ci..];
        for (p, v) in dst.iter_mut().enumerate() {
            *v = src[p * c];
        }
    });
    debug_assert_eq!(out.len(), batch * c * pixels);
    out
}

/// Copies the `α x α x C_in` patch whose top-left input pixel is `(y0 - 1, x0 - 1)` (the
/// padding), zeros outside the image.
#[allow(clippy::too_many_arguments)]
fn gather_patch(
    patch: &mut [f32],
    x_nhwc: &[f32],
    b: usize,
    y0: usize,
    x0: usize,
    h: usize,
    w: usize,
    cin: usize,
    alpha: usize,
) {
    for i in 0..alpha {
        let row = &mut patch[i * alpha * cin..(i + 1) * alpha * cin];
        let y = (y0 + i).wrapping_sub(1);
        if y >= h {
            row.fill(0.0);
            continue;
        }
        // Columns x0 - 1 .. x0 - 1 + α, clipped to 0..w.
        let lo = x0.saturating_sub(1);
        let hi = (x0 + alpha - 1).min(w);
        let skip = lo + 1 - x0; // 1 when x0 == 0 (left padding), else 0
        let len = hi.saturating_sub(lo);
        row[..skip * cin].fill(0.0);
        let src = &x_nhwc[((b * h + y) * w + lo) * cin..][..len * cin];
        row[skip * cin..(skip + len) * cin].copy_from_slice(src);
        row[(skip + len) * cin..].fill(0.0);
    }
}

/// `V[ξ][t] = (Bᵀ d B)[ξ]` for the patch in `s.patch`.
fn input_transform(s: &mut Scratch, t: usize, block: usize, cin: usize, tr: WinogradTransform) {
    let alpha = tr.alpha();
    sandwich(tr.bt, alpha, alpha, cin, &mut s.tmp, &s.patch, |e| e * cin, &mut s.v, |e| (e * block + t) * cin);
}

/// `s.out_tile = Aᵀ M_t A` for tile `t` of the block.
fn output_transform(s: &mut Scratch, t: usize, block: usize, cout: usize, tr: WinogradTransform) {
    let (m, alpha) = (tr.m, tr.alpha());
    sandwich(tr.at, m, alpha, cout, &mut s.tmp, &s.prod, |e| (e * block + t) * cout, &mut s.out_tile, |e| e * cout);
}

/// The two-sided transform of both Winograd stages over vectors of `n` channels:
/// `dst[r][c] = Σ_p Σ_q mat[r][p] · src[p][q] · mat[c][q]`, `mat` `[rows, cols]` row-major, `src`
/// a `cols x cols` grid of vectors at offsets `src_at(p · cols + q)`, `dst` a `rows x rows`
/// grid at `dst_at(r · rows + c)`. Zero coefficients are skipped (the matrices are sparse).
#[allow(clippy::too_many_arguments)]
fn sandwich(
    mat: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
    tmp: &mut [f32],
    src: &[f32],
    src_at: impl Fn(usize) -> usize,
    dst: &mut [f32],
    dst_at: impl Fn(usize) -> usize,
) {
    // tmp[r][q] = Σ_p mat[r][p] src[p][q]
    let tmp = &mut tmp[..rows * cols * n];
    tmp.fill(0.0);
    for r in 0..rows {
        for p in 0..cols {
            let k = mat[r * cols + p];
            if k == 0.0 {
                continue;
            }
            for q in 0..cols {
                axpy(&mut tmp[(r * cols + q) * n..][..n], k, &src[src_at(p * cols + q)..][..n]);
            }
        }
    }
    // dst[r][c] = Σ_q tmp[r][q] mat[c][q]
    for r in 0..rows {
        for c in 0..rows {
            let d = &mut dst[dst_at(r * rows + c)..][..n];
            d.fill(0.0);
            for q in 0..cols {
                let k = mat[c * cols + q];
                if k != 0.0 {
                    axpy(d, k, &tmp[(r * cols + q) * n..][..n]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3x3 convolution, stride 1, padding 1, in f64: the definition.
    fn direct(x: &[f32], [n, cin, h, w]: Nchw, weight: &[f32], cout: usize, bias: Option<&[f32]>) -> Vec<f64> {
        let mut out = vec![0.0f64; n * cout * h * w];
        for b in 0..n {
            for co in 0..cout {
                for y in 0..h {
                    for xx in 0..w {
                        let mut acc = bias.map_or(0.0, |bb| f64::from(bb[co]));
                        for ci in 0..cin {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = ((y + ky).wrapping_sub(1), (xx + kx).wrapping_sub(1));
                                    if iy < h && ix < w {
                                        acc += f64::from(x[((b * cin + ci) * h + iy) * w + ix])
                                            * f64::from(weight[((co * cin + ci) * 3 + ky) * 3 + kx]);
                                    }
                                }
                            }
                        }
                        out[((b * cout + co) * h + y) * w + xx] = acc;
                    }
                }
            }
        }
        out
    }

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn both_transforms_match_the_direct_convolution_on_odd_sizes() {
        // Sizes that are not multiples of the tile, one image of 1 px, channel counts that are
        // not multiples of a SIMD width, with and without bias.
        for (shape, cout) in [([2, 5, 7, 9], 6), ([1, 3, 1, 1], 2), ([3, 17, 8, 8], 19), ([1, 8, 13, 4], 8)] {
            let [n, cin, h, w] = shape;
            let x = values(n * cin * h * w, 1);
            let wt = values(cout * cin * 9, 2);
            let bias = values(cout, 3);
            for bias in [None, Some(bias.as_slice())] {
                let want = direct(&x, shape, &wt, cout, bias);
                for tr in [WinogradTransform::F2, WinogradTransform::F4] {
                    let got = conv3x3_winograd(&x, shape, &wt, cout, bias, tr);
                    assert_eq!(got.len(), want.len());
                    let scale = (cin * 9) as f64; // |sum| bound for values in [-1, 1)
                    let worst = got.iter().zip(&want).map(|(&g, &w)| (f64::from(g) - w).abs()).fold(0.0, f64::max);
                    assert!(worst < 2e-6 * scale, "F({}) {shape:?} -> {cout}: max error {worst:e}", tr.m);
                }
            }
        }
    }
}
