//! Kernels over plain `f32` slices: no Burn types, so they can be tested and reused on their own.

pub mod activation;
pub mod attention;
pub mod adam;
pub mod conv;
pub mod geometry;
pub mod group_norm;
pub mod linear;
pub mod norm;
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
