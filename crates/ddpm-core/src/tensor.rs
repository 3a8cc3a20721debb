//! Small tensor helpers shared by the process, the losses and the samplers.

use burn::tensor::{Tensor, TensorCreationOptions, TensorData};

use crate::error::{Error, Result};

/// Creation options that put a new tensor beside `like`: same device, same float dtype.
pub fn options_like<const D: usize>(like: &Tensor<D>) -> TensorCreationOptions {
    TensorCreationOptions::new(like.device()).with_dtype(like.dtype())
}

/// A host f64 buffer as a tensor of `shape` with `like`'s device and dtype.
pub fn from_f64<const D: usize, const E: usize>(
    values: Vec<f64>,
    shape: [usize; E],
    like: &Tensor<D>,
) -> Tensor<E> {
    Tensor::from_data(TensorData::new(values, shape), options_like(like))
}

/// One value per batch element, shaped `[B, 1, .., 1]` so that it broadcasts against `like`.
pub fn per_sample<const D: usize>(values: Vec<f64>, like: &Tensor<D>) -> Tensor<D> {
    let mut shape = [1usize; D];
    shape[0] = values.len();
    from_f64(values, shape, like)
}

/// `table[t_i]` for each batch element, shaped `[B, 1, .., 1]` (the reference's `extract`).
pub fn extract<const D: usize>(table: &[f64], t: &[usize], like: &Tensor<D>) -> Tensor<D> {
    per_sample(t.iter().map(|&i| table[i]).collect(), like)
}

/// The mean over every dimension but the first: `[B, ..] -> [B]`.
pub fn mean_flat<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    let b = x.dims()[0];
    let n = x.shape().num_elements() / b.max(1);
    x.reshape([b, n]).mean_dim(1).reshape([b])
}

/// Timesteps as the float tensor a network takes, with `like`'s device and dtype.
pub fn time_tensor<const D: usize>(t: &[usize], like: &Tensor<D>) -> Tensor<1> {
    from_f64(t.iter().map(|&v| v as f64).collect(), [t.len()], like)
}

/// Checks that the batch has one timestep per element and that every timestep is below `num`.
pub fn check_timesteps(t: &[usize], batch: usize, num: usize) -> Result<()> {
    if t.len() != batch {
        return Err(Error::Shape { what: "timesteps (one per batch element)".into(), expected: vec![batch], got: vec![t.len()] });
    }
    if let Some(&bad) = t.iter().find(|&&v| v >= num) {
        return Err(Error::invalid("t", bad, format!("timesteps run from 0 to {}", num - 1)));
    }
    Ok(())
}

/// Checks that two tensors have the same shape.
pub fn check_same_shape<const D: usize>(what: &str, expected: &Tensor<D>, got: &Tensor<D>) -> Result<()> {
    if expected.dims() != got.dims() {
        return Err(Error::Shape { what: what.into(), expected: expected.dims().to_vec(), got: got.dims().to_vec() });
    }
    Ok(())
}

/// The tensor's values as f64 on the host (for tests, thresholds and logging).
pub fn to_f64_vec<const D: usize>(x: &Tensor<D>) -> Vec<f64> {
    x.to_data().try_to_vec_as::<f64>().expect("float tensor data converts to f64")
}
