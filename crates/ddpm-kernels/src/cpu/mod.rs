//! Kernels over plain `f32` slices: no Burn types, so they can be tested and reused on their own.

/// Compiles the function once per SIMD level (AVX-512, AVX2 + FMA, SSE4.2 on x86-64; NEON on
/// aarch64) and picks the best the CPU has at run time. multiversion's `"simd"` preset leaves
/// AVX-512 out, which ran every element-wise loop at half width on AVX-512 machines.
macro_rules! per_simd_level {
    ($item:item) => {
        #[multiversion::multiversion(targets(
            "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
            "x86_64+avx2+fma",
            "x86_64+sse4.2",
            "aarch64+neon",
        ))]
        $item
    };
}

pub mod activation;
pub mod attention;
pub mod adam;
pub mod conv;
pub mod direct;
pub mod geometry;
pub mod group_norm;
pub mod linear;
pub mod norm;
pub mod pool;
pub mod matmul;
pub mod scratch;
pub mod winograd;

/// Items per rayon task so that each task handles at least this many values: below it, handing
/// work to another thread costs more than the work (a 16x16 U-Net's tensors are that small).
const TASK_VALUES: usize = 1 << 15;

/// The `with_min_len` for parallel items of `values_per_item` values each.
pub(crate) fn per_task(values_per_item: usize) -> usize {
    (TASK_VALUES / values_per_item.max(1)).max(1)
}
