//! Kernels over plain `f32` slices: no Burn types, so they can be tested and reused on their own.

pub mod activation;
pub mod adam;
pub mod conv;
pub mod norm;
pub mod matmul;
