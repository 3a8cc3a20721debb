//! The patch matrices a tracked convolution keeps for its backward pass are given back to the
//! process-wide budget, whether the backward pass runs or the graph is dropped. Its own test
//! binary: the budget is one counter for the process, which other tests' convolutions would move.

use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use ddpm_kernels::{conv2d, kept_patch_values};

#[test]
fn kept_patches_are_given_back_after_backward_and_when_the_graph_is_dropped() {
    let device = Device::flex().autodiff();
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let w = Tensor::<4>::random([4, 3, 3, 3], Distribution::Normal(0.0, 1.0), &device).require_grad();
    assert_eq!(kept_patch_values(), 0);

    let y = conv2d(x.clone(), w.clone(), None, options.clone());
    // One patch matrix: 3 x 3 x 3 rows, one column per output pixel of both images.
    assert_eq!(kept_patch_values(), 27 * 2 * 64);
    let grads = y.sum().backward();
    assert!(w.grad(&grads).is_some());
    assert_eq!(kept_patch_values(), 0, "the backward pass gives its patches back");

    let y = conv2d(x.clone(), w.clone(), None, options.clone());
    assert_eq!(kept_patch_values(), 27 * 2 * 64);
    drop(y);
    // Burn sweeps unreachable graphs after each backward pass.
    let _ = (x.clone() * 2.0).sum().backward();
    assert_eq!(kept_patch_values(), 0, "a dropped graph gives its patches back");

    // Without autodiff nothing is kept.
    let plain = conv2d(x.inner(), w.inner(), None, options);
    assert_eq!(plain.dims(), [2, 4, 8, 8]);
    assert_eq!(kept_patch_values(), 0);
}
