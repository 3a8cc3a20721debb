//! Matrix products over slices, on the `gemm` crate (the GEMM burn-flex uses).

use rayon::prelude::*;

/// A read-only matrix view: `rows x cols`, element `(r, c)` at `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose, without moving data.
    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    fn last_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 { 0 } else { (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride }
    }
}

/// A product with an inner dimension this long, and several times longer than the outer ones (the
/// weight gradient of a convolution: `C_in k k x (N H W) x C_out`), is split along it.
const SPLIT_K_MIN: usize = 2048;

/// Below this many multiply-adds one thread is faster than handing work to rayon.
const PARALLEL_FLOPS: usize = 1 << 21;

/// `dst = a b` (or `dst += a b` with `accumulate`); `dst` is the contiguous row-major
/// `a.rows x b.cols` result.
pub fn matmul(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    if !prepare(dst, a, b, accumulate) {
        return;
    }
    match threading(a, b) {
        Some(parallelism) => product(dst, a, b, accumulate, parallelism),
        None => split_k(dst, a, b, accumulate, rayon::current_num_threads()),
    }
}

/// How [`matmul`] runs `a b`: gemm's own threads for a large output, one thread for a small
/// product, or `None` for [`split_k`].
fn threading(a: MatRef<'_>, b: MatRef<'_>) -> Option<gemm::Parallelism> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if rayon::current_num_threads() > 1 && k >= SPLIT_K_MIN && k >= 8 * m.max(n) {
        return None;
    }
    Some(if m * n * k >= PARALLEL_FLOPS { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None })
}

/// `a b` in a new row-major `a.rows x b.cols` buffer that the product writes without it being
/// zeroed first (zeroing was 5% of a toy MLP step: every linear layer's output and gradients).
pub fn product_of(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let parallelism = match threading(a, b) {
        Some(parallelism) if k > 0 && m > 0 && n > 0 => parallelism,
        _ => {
            let mut dst = vec![0.0; m * n];
            matmul(&mut dst, a, b, false);
            return dst;
        }
    };
    assert_eq!(k, b.rows, "matmul: inner dimensions {k} and {} differ", b.rows);
    assert!(a.last_index() < a.data.len() && b.last_index() < b.data.len(), "matmul: a view reaches past its slice");
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the asserts above keep the views inside their slices; `dst` has capacity for
    // exactly m x n values and aliases nothing. With `accumulate` false gemm zeroes its alpha and
    // stores `a b` into every element without reading it (burn-flex hands gemm uninitialised
    // outputs the same way), so all m n values are initialised before `set_len`. `tests/kernels.rs`
    // checks the result against a naive product in memory the allocator hands back full of NaN
    // (a read of the old contents would turn the result into NaN).
    unsafe {
        gemm_raw(dst.as_mut_ptr(), a, b, false, parallelism);
        dst.set_len(m * n);
    }
    dst
}

/// [`matmul`] on the calling thread alone, for callers that run several products in parallel.
pub fn matmul_serial(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    if prepare(dst, a, b, accumulate) {
        product(dst, a, b, accumulate, gemm::Parallelism::None);
    }
}

/// Checks the shapes and does the products with nothing to multiply; whether a product is left.
fn prepare(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul: inner dimensions {k} and {} differ", b.rows);
    assert_eq!(dst.len(), m * n, "matmul: destination holds {} values, not {m} x {n}", dst.len());
    if m == 0 || n == 0 {
        return false;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return false;
    }
    assert!(a.last_index() < a.data.len() && b.last_index() < b.data.len(), "matmul: a view reaches past its slice");
    true
}

/// `gemm` parallelises over the output only, and an output of a few thousand values leaves threads
/// idle while each packs thousands of inner steps: give every thread its own slice of the inner
/// dimension and add the partial products.
fn split_k(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, accumulate: bool, threads: usize) {
    let k = a.cols;
    let chunk = k.div_ceil(threads);
    let starts: Vec<usize> = (0..k).step_by(chunk).collect();
    let partials: Vec<Vec<f32>> = starts
        .into_par_iter()
        .map(|start| {
            let len = chunk.min(k - start);
            let a_part = MatRef { data: &a.data[start * a.col_stride..], cols: len, ..a };
            let b_part = MatRef { data: &b.data[start * b.row_stride..], rows: len, ..b };
            let mut out = vec![0.0; dst.len()];
            product(&mut out, a_part, b_part, false, gemm::Parallelism::None);
            out
        })
        .collect();
    if !accumulate {
        dst.fill(0.0);
    }
    for part in &partials {
        dst.par_iter_mut().zip(part.par_iter()).with_min_len(super::per_task(1)).for_each(|(d, p)| *d += p);
    }
}

/// The checked product itself.
fn product(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, accumulate: bool, parallelism: gemm::Parallelism) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    debug_assert!(dst.len() == m * n && b.rows == k && a.last_index() < a.data.len() && b.last_index() < b.data.len());
    // SAFETY: `prepare`'s asserts (and `split_k`'s sub-views, which only shorten the inner dimension
    // and start inside the same slices) keep every index the strides can form inside `a.data`,
    // `b.data` (largest index < len) and `dst` (exactly m x n, row-major); `dst` is borrowed
    // mutably, so it aliases neither input. `tests/kernels.rs` runs this against a naive product
    // with transposed views and split inner dimensions.
    unsafe { gemm_raw(dst.as_mut_ptr(), a, b, accumulate, parallelism) }
}

/// `dst = a b` (or `dst += a b`) on gemm, `dst` the row-major `a.rows x b.cols` buffer.
///
/// # Safety
/// `dst` is valid for writes of `a.rows * b.cols` values (and holds initialised ones when
/// `accumulate`), aliases neither operand, and every index the views' strides form lies inside
/// their slices.
unsafe fn gemm_raw(dst: *mut f32, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool, parallelism: gemm::Parallelism) {
    // SAFETY: the caller's contract above is gemm's.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst,
            1,
            b.cols as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}
