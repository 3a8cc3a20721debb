//! Every kernel against Burn's own op on Flex: values and gradients, random shapes, strides,
//! paddings and dilations. Tolerance: f32 sums of up to a few thousand terms in another order, so
//! `max |ours - burn| <= 2e-5 * (1 + max |burn|)`.

use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use ddpm_kernels::{MatRef, conv2d, matmul, product_of};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn assert_close<const D: usize>(ours: Tensor<D>, reference: Tensor<D>, what: &str) {
    assert_close_at_scale(ours, reference, 0.0, what);
}

/// [`assert_close`] for a result summed from terms as large as `terms` (when larger than the
/// result itself): the terms' f32 round-off stays in the sum where they cancel.
fn assert_close_at_scale<const D: usize>(ours: Tensor<D>, reference: Tensor<D>, terms: f32, what: &str) {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shapes differ");
    let ours: Vec<f32> = ours.into_data().try_to_vec::<f32>().expect("f32");
    let reference: Vec<f32> = reference.into_data().try_to_vec::<f32>().expect("f32");
    let scale = reference.iter().fold(terms, |m, v| m.max(v.abs()));
    let err = ours.iter().zip(&reference).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= 2e-5 * (1.0 + scale), "{what}: max error {err} (reference magnitude {scale})");
}

#[derive(Debug, Clone, Copy)]
struct Case {
    batch: usize,
    c_in: usize,
    c_out: usize,
    size: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [(usize, usize); 2],
    dilation: [usize; 2],
    bias: bool,
}

fn check(case: Case) {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::random([case.batch, case.c_in, case.size[0], case.size[1]], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<4>::random([case.c_out, case.c_in, case.kernel[0], case.kernel[1]], Distribution::Normal(0.0, 0.3), &device);
    let b = Tensor::<1>::random([case.c_out], Distribution::Normal(0.0, 1.0), &device);
    let options = ConvOptions::new_with_padding(case.stride, case.padding, case.dilation, 1);
    let out = [0, 1].map(|d| (case.size[d] + case.padding[d].0 + case.padding[d].1 - case.dilation[d] * (case.kernel[d] - 1) - 1) / case.stride[d] + 1);
    // A weighted sum, so every output position gets its own gradient.
    let weights = Tensor::<4>::random([case.batch, case.c_out, out[0], out[1]], Distribution::Normal(0.0, 1.0), &device);
    let run = |ours: bool| {
        let (x, w, b) = (x.clone().require_grad(), w.clone().require_grad(), b.clone().require_grad());
        let bias = case.bias.then(|| b.clone());
        let y = if ours { conv2d(x.clone(), w.clone(), bias, options.clone()) } else { burn_conv2d(x.clone(), w.clone(), bias, options.clone()) };
        let grads = (y.clone() * weights.clone()).sum().backward();
        let db = case.bias.then(|| b.grad(&grads).expect("bias gradient"));
        (y.inner(), x.grad(&grads).expect("input gradient"), w.grad(&grads).expect("weight gradient"), db)
    };
    let (y, dx, dw, db) = run(true);
    let (y_ref, dx_ref, dw_ref, db_ref) = run(false);
    let what = format!("{case:?}");
    assert_close(y, y_ref, &format!("forward {what}"));
    assert_close(dx, dx_ref, &format!("input gradient {what}"));
    assert_close(dw, dw_ref, &format!("weight gradient {what}"));
    if let (Some(db), Some(db_ref)) = (db, db_ref) {
        assert_close(db, db_ref, &format!("bias gradient {what}"));
    }
}

#[test]
fn conv2d_matches_burn_on_the_networks_shapes() {
    let same = |k: usize| [((k - 1) / 2, (k - 1) / 2); 2];
    for case in [
        // U-Net 3x3 at 32x32 and 4x4, 1x1 projections, the 1-D U-Net's [1, k] kernels, the strided
        // width-4 down-sampling.
        Case { batch: 3, c_in: 8, c_out: 16, size: [16, 16], kernel: [3, 3], stride: [1, 1], padding: same(3), dilation: [1, 1], bias: true },
        Case { batch: 4, c_in: 32, c_out: 24, size: [4, 4], kernel: [3, 3], stride: [1, 1], padding: same(3), dilation: [1, 1], bias: true },
        Case { batch: 2, c_in: 12, c_out: 36, size: [8, 8], kernel: [1, 1], stride: [1, 1], padding: [(0, 0); 2], dilation: [1, 1], bias: false },
        Case { batch: 2, c_in: 6, c_out: 5, size: [1, 32], kernel: [1, 3], stride: [1, 1], padding: [(0, 0), (1, 1)], dilation: [1, 1], bias: true },
        Case { batch: 2, c_in: 6, c_out: 7, size: [1, 32], kernel: [1, 4], stride: [1, 2], padding: [(0, 0), (1, 1)], dilation: [1, 1], bias: true },
        Case { batch: 2, c_in: 4, c_out: 6, size: [9, 9], kernel: [4, 4], stride: [2, 2], padding: [(1, 1); 2], dilation: [1, 1], bias: true },
        Case { batch: 1, c_in: 3, c_out: 4, size: [7, 9], kernel: [7, 7], stride: [1, 1], padding: same(7), dilation: [1, 1], bias: true },
    ] {
        check(case);
    }
}

/// 3x3 "same" convolutions with 64 or more channels each way and at least two tiles of 4x4 per
/// channel in the batch take Winograd's F(4x4, 3x3); other ones with 128 or more channels take
/// F(2x2, 3x3). Odd and even sides, sides that are not a multiple of the tile, a 1x1 and a 1x2
/// image, several image groups, with and without bias.
#[test]
fn winograd_convolutions_match_burn() {
    use ddpm_kernels::WinogradTiling::{F2, F4};
    let forced = std::env::var("DDPM_CONV").ok();
    for (batch, c_in, c_out, size, bias, tiling) in [
        (2, 64, 64, [32, 32], true, F4),
        // Sides not a multiple of 4; 96 rows of 3 tiles per plane, in two bands of at most 256
        // tiles (85 rows: the first band ends inside an image and with a partial group of 8).
        (24, 64, 72, [13, 11], false, F4),
        (8, 32, 48, [16, 16], true, F4),
        // 128 tiles for 128 channels: F(4x4) (one tile per channel of the wider side).
        (8, 96, 128, [16, 16], false, F4),
        (2, 128, 128, [8, 8], true, F2),
        (3, 128, 160, [5, 7], false, F2),
        (2, 512, 512, [4, 4], true, F2),
        (2, 130, 128, [6, 9], true, F2),
        (1, 192, 128, [1, 1], true, F2),
        (2, 128, 136, [1, 2], true, F2),
        (2, 129, 161, [3, 2], true, F2),
        (4, 256, 128, [16, 16], true, F2),
        // 3 images per group of transformed F(4x4) tiles: ten groups.
        (30, 128, 128, [32, 32], false, F4),
    ] {
        let case = Case { batch, c_in, c_out, size, kernel: [3, 3], stride: [1, 1], padding: [(1, 1); 2], dilation: [1, 1], bias };
        let geometry = ddpm_kernels::ConvGeometry { batch, c_in, height: size[0], width: size[1], c_out, kernel: [3, 3], stride: [1, 1], pad: [1, 1], dilation: [1, 1], out: size };
        let expected = match forced.as_deref() {
            Some("im2col" | "by-image") => None,
            // F(2x2) alone takes 128+ channels each way.
            Some("winograd2") => (c_in.min(c_out) >= 128).then_some(F2),
            _ => Some(tiling),
        };
        assert_eq!(ddpm_kernels::winograd_tiling(&geometry), expected, "{case:?} takes {expected:?}");
        check(case);
    }
}

/// 3x3 "same" convolutions with channel counts in multiples of 4 that Winograd does not take run
/// on the direct tiles (forward and input gradient; the weight gradient by patch-matrix GEMMs):
/// 16x16, 8x8 and 4x4 as in the quickstart, sides that leave a partial tile (5x7, 3x9, 1x1), an
/// uneven split of images over 2 threads, more output than input channels and the reverse.
#[test]
fn direct_convolutions_match_burn() {
    // The tiles need FMA: every aarch64 CPU, x86-64 ones since 2013.
    #[cfg(target_arch = "x86_64")]
    let fma = std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let fma = cfg!(target_arch = "aarch64");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool of 2 threads");
    pool.install(|| {
        for (batch, c_in, c_out, size, bias) in [
            (4, 16, 16, [16, 16], true),
            (5, 48, 32, [8, 8], false),
            (3, 32, 32, [4, 4], true),
            (2, 4, 12, [5, 7], true),
            (3, 20, 8, [3, 9], false),
            (2, 8, 8, [1, 1], true),
        ] {
            let case = Case { batch, c_in, c_out, size, kernel: [3, 3], stride: [1, 1], padding: [(1, 1); 2], dilation: [1, 1], bias };
            let geometry = ddpm_kernels::ConvGeometry { batch, c_in, height: size[0], width: size[1], c_out, kernel: [3, 3], stride: [1, 1], pad: [1, 1], dilation: [1, 1], out: size };
            assert_eq!(ddpm_kernels::direct_conv_applies(&geometry), fma, "{case:?} takes the direct tiles where the CPU has FMA");
            assert_eq!(ddpm_kernels::winograd_tiling(&geometry), None, "{case:?} is not Winograd's");
            check(case);
        }
    });
}

/// Batches of at least one image per thread with 8x8 outputs or larger run image by image: 3x3 at
/// 16x16 and 8x8 (channel counts the direct tiles leave alone), an uneven split (5 images on 2
/// threads), the 1x1 projections that skip im2col, the strided down-sampling conv and the 7x7 stem.
#[test]
fn image_by_image_convolutions_match_burn() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool of 2 threads");
    pool.install(|| {
        for (batch, c_in, c_out, size, kernel, stride, pad, bias) in [
            (4, 6, 16, [16, 16], 3, 1, 1, true),
            (5, 24, 18, [8, 8], 3, 1, 1, false),
            (3, 12, 36, [8, 8], 1, 1, 0, false),
            (2, 16, 8, [16, 12], 1, 1, 0, true),
            (4, 6, 10, [18, 18], 4, 2, 1, true),
            (2, 3, 4, [9, 9], 7, 1, 3, true),
        ] {
            let case = Case { batch, c_in, c_out, size, kernel: [kernel; 2], stride: [stride; 2], padding: [(pad, pad); 2], dilation: [1, 1], bias };
            let out = size.map(|s| (s + 2 * pad - kernel) / stride + 1);
            let geometry = ddpm_kernels::ConvGeometry { batch, c_in, height: size[0], width: size[1], c_out, kernel: [kernel; 2], stride: [stride; 2], pad: [pad; 2], dilation: [1, 1], out };
            assert!(ddpm_kernels::conv_by_image_applies(&geometry) || std::env::var("DDPM_CONV").is_ok_and(|v| v == "im2col" || v == "batched"), "{case:?} runs image by image");
            assert!(!ddpm_kernels::direct_conv_applies(&geometry), "{case:?} is not the direct tiles'");
            check(case);
        }
    });
}

#[test]
fn conv2d_matches_burn_on_random_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for _ in 0..24 {
        let kernel: [usize; 2] = [rng.random_range(1..=4), rng.random_range(1..=4)];
        let dilation: [usize; 2] = [rng.random_range(1..=2), rng.random_range(1..=2)];
        let padding = [(rng.random_range(0..=2), rng.random_range(0..=2)), (rng.random_range(0..=2), rng.random_range(0..=2))];
        let size = [0, 1].map(|d| (dilation[d] * (kernel[d] - 1) + 1).saturating_sub(padding[d].0 + padding[d].1).max(1) + rng.random_range(0..6));
        check(Case {
            batch: rng.random_range(1..=3),
            c_in: rng.random_range(1..=6),
            c_out: rng.random_range(1..=6),
            size,
            kernel,
            stride: [rng.random_range(1..=3), rng.random_range(1..=3)],
            padding,
            dilation,
            bias: rng.random_bool(0.5),
        });
    }
}

#[test]
fn matmul_matches_a_naive_product_with_strided_views() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // The last two shapes take the split inner dimension (k >= 2048 and >= 8 max(m, n)).
    for (m, k, n) in [(1, 1, 1), (3, 5, 2), (17, 64, 33), (70, 90, 110), (5, 4099, 3), (40, 6000, 9)] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let expect: Vec<f32> = (0..m * n).map(|i| (0..k).map(|j| a[i / n * k + j] * b[j * n + i % n]).sum()).collect();
        let close = |got: &[f32], factor: f32, what: &str| {
            let tolerance = 1e-5 * (k as f32).sqrt() * 4.0;
            for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
                assert!((g - factor * e).abs() < tolerance, "{what} {m}x{k}x{n} at {i}: {g} vs {}", factor * e);
            }
        };
        let mut out = vec![0.0; m * n];
        matmul(&mut out, MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), false);
        close(&out, 1.0, "plain");
        // The same product with both operands stored transposed, accumulated onto itself.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        matmul(&mut out, MatRef::row_major(&at, k, m).t(), MatRef::row_major(&bt, n, k).t(), true);
        close(&out, 2.0, "transposed, accumulated");
        // Into memory that is not zeroed first: a buffer of NaN of the result's size is freed
        // just before, so the allocator hands that memory back, and a read of it would show.
        drop(vec![f32::NAN; m * n]);
        close(&product_of(MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n)), 1.0, "into fresh memory");
        drop(vec![f32::NAN; m * n]);
        close(&product_of(MatRef::row_major(&at, k, m).t(), MatRef::row_major(&bt, n, k).t()), 1.0, "transposed, into fresh memory");
    }
}

#[test]
fn other_devices_and_cases_take_burns_op() {
    // Grouped convolution is not ours: the call must still give Burn's result.
    let device = Device::flex();
    let x = Tensor::<4>::random([2, 4, 5, 5], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<4>::random([6, 2, 3, 3], Distribution::Normal(0.0, 1.0), &device);
    let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 2);
    assert_close(conv2d(x.clone(), w.clone(), None, options.clone()), burn_conv2d(x, w, None, options), "grouped");
    assert!(ddpm_kernels::on_flex(&Device::flex().autodiff()));
}

/// Burn's ops for `rms_norm`, written out as the reference does them.
fn rms_norm_reference(x: Tensor<4>, g: Tensor<4>, film: Option<(Tensor<4>, Tensor<4>)>, silu: bool) -> Tensor<4> {
    let c = x.dims()[1] as f64;
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    let mut y = x / norm * g * c.sqrt();
    if let Some((scale, shift)) = film {
        y = y * (scale + 1.0) + shift;
    }
    if silu { burn::tensor::activation::silu(y) } else { y }
}

#[test]
fn rms_norm_matches_burn_with_and_without_film_and_silu() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for case in 0..12 {
        let (b, c, h, w) = (rng.random_range(1..=4), rng.random_range(1..=70), rng.random_range(1..=9), rng.random_range(1..=40));
        let (film, silu) = (case % 2 == 0, case % 3 != 0);
        let x = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 2.0), &device);
        let g = Tensor::<4>::random([1, c, 1, 1], Distribution::Normal(1.0, 0.5), &device);
        let scale = Tensor::<4>::random([b, c, 1, 1], Distribution::Normal(0.0, 0.5), &device);
        let shift = Tensor::<4>::random([b, c, 1, 1], Distribution::Normal(0.0, 0.5), &device);
        let weights = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let (x, g, scale, shift) = (x.clone().require_grad(), g.clone().require_grad(), scale.clone().require_grad(), shift.clone().require_grad());
            let f = film.then(|| (scale.clone(), shift.clone()));
            let y = if ours { ddpm_kernels::rms_norm(x.clone(), g.clone(), f, silu) } else { rms_norm_reference(x.clone(), g.clone(), f, silu) };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let film_grads = film.then(|| (scale.grad(&grads).expect("scale gradient"), shift.grad(&grads).expect("shift gradient")));
            (y.inner(), x.grad(&grads).expect("x gradient"), g.grad(&grads).expect("g gradient"), film_grads)
        };
        let (y, dx, dg, dfilm) = run(true);
        let (y_ref, dx_ref, dg_ref, dfilm_ref) = run(false);
        let what = format!("[{b}, {c}, {h}, {w}] film {film} silu {silu}");
        assert_close(y, y_ref, &format!("forward {what}"));
        assert_close(dx, dx_ref, &format!("x gradient {what}"));
        assert_close(dg, dg_ref, &format!("g gradient {what}"));
        if let (Some((ds, dsh)), Some((ds_ref, dsh_ref))) = (dfilm, dfilm_ref) {
            assert_close(ds, ds_ref, &format!("scale gradient {what}"));
            assert_close(dsh, dsh_ref, &format!("shift gradient {what}"));
        }
    }
}

#[test]
fn rms_norm_of_a_zero_pixel_is_zero_with_a_finite_gradient() {
    // F.normalize clamps the norm at 1e-12: an all-zero pixel maps to 0 and passes a gradient of
    // g sqrt(C) / 1e-12 times the upstream one, with no projection term.
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::zeros([1, 3, 1, 2], &device).require_grad();
    let g = Tensor::<4>::ones([1, 3, 1, 1], &device);
    let y = ddpm_kernels::rms_norm(x.clone(), g, None, false);
    let y_values: Vec<f32> = y.clone().inner().into_data().try_to_vec().expect("f32");
    assert!(y_values.iter().all(|v| *v == 0.0));
    let dx: Vec<f32> = x.grad(&(y * 1e-12).sum().backward()).expect("gradient").into_data().try_to_vec().expect("f32");
    let expect = 3f32.sqrt();
    assert!(dx.iter().all(|v| (v - expect).abs() < 1e-5), "{dx:?}");
}

#[test]
fn fast_exp_is_within_a_few_ulp_of_exp() {
    let mut worst = 0f32;
    for i in -87_000..=88_000 {
        let x = i as f32 / 1000.0;
        let (ours, exact) = (ddpm_kernels::fast_exp(x), (x as f64).exp() as f32);
        worst = worst.max(((ours - exact) / exact).abs());
    }
    assert!(worst < 5e-7, "largest relative error {worst}");
    // Beyond the clamp the ends hold (and stay normal numbers).
    assert_eq!(ddpm_kernels::fast_exp(-1000.0), ddpm_kernels::fast_exp(-87.0));
    assert_eq!(ddpm_kernels::fast_exp(1000.0), ddpm_kernels::fast_exp(88.0));
    assert!(((ddpm_kernels::fast_exp(-87.0) as f64) / (-87f64).exp() - 1.0).abs() < 5e-7);
}

#[test]
fn silu_matches_burn() {
    let device = Device::flex().autodiff();
    for shape in [[1, 1], [7, 13], [300, 129]] {
        let x = Tensor::<2>::random(shape, Distribution::Normal(0.0, 4.0), &device);
        let weights = Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let x = x.clone().require_grad();
            let y = if ours { ddpm_kernels::silu(x.clone()) } else { burn::tensor::activation::silu(x.clone()) };
            let grads = (y.clone() * weights.clone()).sum().backward();
            (y.inner(), x.grad(&grads).expect("gradient"))
        };
        let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
        assert_close(y, y_ref, &format!("silu {shape:?}"));
        assert_close(dx, dx_ref, &format!("silu gradient {shape:?}"));
    }
}

#[test]
fn attention_matches_burn() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // (batch, heads, queries, keys, key width, value width): the U-Net's innermost 4x4 stage with
    // its 4 memory key/values, a 16x16 map, keys != queries, value width != key width, and random.
    let mut cases = vec![(2, 4, 16, 20, 32, 32), (1, 2, 256, 260, 16, 16), (3, 1, 5, 9, 7, 3), (1, 1, 1, 1, 1, 1)];
    for _ in 0..6 {
        cases.push((rng.random_range(1..4), rng.random_range(1..4), rng.random_range(1..40), rng.random_range(1..40), rng.random_range(1..20), rng.random_range(1..20)));
    }
    for (b, h, n, m, d, e) in cases {
        // q and k arrive transposed, as the networks make them (`[b, h, d, n]` swapped).
        let q = Tensor::<4>::random([b, h, d, n], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<4>::random([b, h, d, m], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<4>::random([b, h, m, e], Distribution::Normal(0.0, 1.0), &device);
        let weights = Tensor::<4>::random([b, h, n, e], Distribution::Normal(0.0, 1.0), &device);
        let scale = (d as f64).powf(-0.5) * 2.0;
        let run = |ours: bool| {
            let (q, k, v) = (q.clone().require_grad(), k.clone().require_grad(), v.clone().require_grad());
            let (qt, kt) = (q.clone().swap_dims(2, 3), k.clone().swap_dims(2, 3));
            let y = if ours {
                ddpm_kernels::attention(qt, kt, v.clone(), scale)
            } else {
                burn::tensor::activation::softmax(qt.matmul(kt.swap_dims(2, 3)) * scale, 3).matmul(v.clone())
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            (y.inner(), q.grad(&grads).expect("q gradient"), k.grad(&grads).expect("k gradient"), v.grad(&grads).expect("v gradient"))
        };
        let ((y, dq, dk, dv), (y_ref, dq_ref, dk_ref, dv_ref)) = (run(true), run(false));
        let what = format!("attention b{b} h{h} n{n} m{m} d{d} e{e}");
        assert_close(y, y_ref, &what);
        assert_close(dq, dq_ref, &format!("{what}: q gradient"));
        assert_close(dk, dk_ref, &format!("{what}: k gradient"));
        assert_close(dv, dv_ref, &format!("{what}: v gradient"));
    }
    // A negative scale (the kernel takes the maximum of the scaled scores) gives Burn's values.
    let q = Tensor::<4>::random([1, 1, 3, 2], Distribution::Normal(0.0, 1.0), &device);
    let reference = burn::tensor::activation::softmax(q.clone().matmul(q.clone().swap_dims(2, 3)) * -1.0, 3).matmul(q.clone());
    assert_close(ddpm_kernels::attention(q.clone(), q.clone(), q, -1.0), reference, "negative scale");
}

#[test]
fn linear_attention_matches_burn() {
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    // (batch, heads, width d, queries, keys, value width): the quickstart's 16x16 stage with its 4
    // memory key/values, a 32x32 map, d != e, single values, and random.
    let mut cases = vec![(2, 2, 16, 256, 260, 16), (1, 4, 32, 1024, 1028, 32), (3, 1, 5, 7, 9, 3), (1, 1, 1, 1, 1, 1)];
    for _ in 0..6 {
        cases.push((rng.random_range(1..4), rng.random_range(1..4), rng.random_range(1..20), rng.random_range(1..40), rng.random_range(1..40), rng.random_range(1..20)));
    }
    for (b, h, d, n, m, e) in cases {
        let q = Tensor::<4>::random([b, h, d, n], Distribution::Normal(0.0, 2.0), &device);
        let k = Tensor::<4>::random([b, h, d, m], Distribution::Normal(0.0, 2.0), &device);
        // v arrives transposed, as after a concatenation with memory values in the network.
        let v = Tensor::<4>::random([b, h, m, e], Distribution::Normal(0.0, 1.0), &device);
        let weights = Tensor::<4>::random([b, h, e, n], Distribution::Normal(0.0, 1.0), &device);
        let scale = (d as f64).powf(-0.5);
        let run = |ours: bool| {
            let (q, k, v) = (q.clone().require_grad(), k.clone().require_grad(), v.clone().require_grad());
            let vt = v.clone().swap_dims(2, 3);
            let y = if ours {
                ddpm_kernels::linear_attention(q.clone(), k.clone(), vt, scale)
            } else {
                let qs = burn::tensor::activation::softmax(q.clone(), 2) * scale;
                let ks = burn::tensor::activation::softmax(k.clone(), 3);
                ks.matmul(vt.swap_dims(2, 3)).swap_dims(2, 3).matmul(qs)
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            (y.inner(), q.grad(&grads).expect("q gradient"), k.grad(&grads).expect("k gradient"), v.grad(&grads).expect("v gradient"))
        };
        let ((y, dq, dk, dv), (y_ref, dq_ref, dk_ref, dv_ref)) = (run(true), run(false));
        let what = format!("linear attention b{b} h{h} d{d} n{n} m{m} e{e}");
        assert_close(y, y_ref, &what);
        assert_close(dq, dq_ref, &format!("{what}: q gradient"));
        assert_close(dk, dk_ref, &format!("{what}: k gradient"));
        assert_close(dv, dv_ref, &format!("{what}: v gradient"));
    }
}

#[test]
fn group_norm_matches_burns_module_with_and_without_affine_and_silu() {
    use burn::nn::GroupNormConfig;
    use ddpm_kernels::NormForward;
    let device = Device::flex().autodiff();
    let mut rng = ChaCha8Rng::seed_from_u64(33);
    for case in 0..12 {
        let groups = [1, 2, 4, 8][case % 4];
        let (b, c, h, w) = (rng.random_range(1..=3), groups * rng.random_range(1..=6), rng.random_range(1..=9), rng.random_range(1..=20));
        let (affine, silu) = (case % 3 != 2, case % 2 == 0);
        let mut module = GroupNormConfig::new(groups, c).with_affine(affine).with_epsilon(1e-6).init(&device);
        if affine {
            // Off their 1 and 0 starting values, so that a swapped gamma and beta would show.
            module.gamma = module.gamma.map(|g| g.map(|_| Tensor::random([c], Distribution::Normal(1.0, 0.5), &device).require_grad()));
            module.beta = module.beta.map(|b| b.map(|_| Tensor::random([c], Distribution::Normal(0.0, 0.5), &device).require_grad()));
        }
        // A mean far from zero, as activations have: the variance must not cancel.
        let x = Tensor::<4>::random([b, c, h, w], Distribution::Normal(3.0, 2.0), &device);
        let weights = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let x = x.clone().require_grad();
            let y = if ours {
                module.norm(x.clone(), silu)
            } else {
                let y = module.forward(x.clone());
                if silu { burn::tensor::activation::silu(y) } else { y }
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let affine_grads = module.gamma.as_ref().zip(module.beta.as_ref()).map(|(g, b)| (g.grad(&grads).expect("gamma gradient"), b.grad(&grads).expect("beta gradient")));
            (y.inner(), x.grad(&grads).expect("x gradient"), affine_grads)
        };
        let (y, dx, daffine) = run(true);
        let (y_ref, dx_ref, daffine_ref) = run(false);
        let what = format!("[{b}, {c}, {h}, {w}] groups {groups} affine {affine} silu {silu}");
        assert_close(y, y_ref, &format!("forward {what}"));
        // The x gradient sums terms of size |gamma dy| / sigma over each group: a group of two
        // close values has a small sigma, large terms, and a gradient near zero that carries their
        // round-off (seen: [1, 8, 1, 1] in 4 groups, error 3.7e-5 on a gradient of 3e-3).
        let sigmas = group_sigmas(&x, groups, 1e-6);
        let gamma = module.gamma.as_ref().map_or(1.0, |g| max_abs(g.val()));
        let terms = 1.1 * gamma * max_abs(weights.clone()) / sigmas.iter().fold(f32::INFINITY, |m, &s| m.min(s));
        assert_close_at_scale(dx, dx_ref, terms, &format!("x gradient {what}"));
        if let (Some((dg, db)), Some((dg_ref, db_ref))) = (daffine, daffine_ref) {
            assert_close(dg, dg_ref, &format!("gamma gradient {what}"));
            assert_close(db, db_ref, &format!("beta gradient {what}"));
        }
    }
}

fn max_abs<const D: usize>(t: Tensor<D>) -> f32 {
    t.into_data().try_to_vec::<f32>().expect("f32").iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// `sqrt(var + eps)` of each (image, group) of `x[N, C, H, W]`, in f64.
fn group_sigmas(x: &Tensor<4>, groups: usize, eps: f64) -> Vec<f32> {
    let [n, c, h, w] = x.dims();
    let values: Vec<f32> = x.clone().into_data().try_to_vec::<f32>().expect("f32");
    let per_group = c / groups * h * w;
    assert_eq!(values.len(), n * groups * per_group);
    values
        .chunks_exact(per_group)
        .map(|g| {
            let mean = g.iter().map(|&v| v as f64).sum::<f64>() / per_group as f64;
            let var = g.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / per_group as f64;
            (var + eps).sqrt() as f32
        })
        .collect()
}

#[test]
fn layer_norm_matches_burns_module_with_and_without_silu() {
    use burn::nn::LayerNormConfig;
    let device = Device::flex().autodiff();
    for (shape, silu, bias) in [([1, 1, 1], false, true), ([2, 7, 13], true, true), ([1, 1000, 128], true, false), ([3, 5, 64], false, true)] {
        let features = shape[2];
        let mut module = LayerNormConfig::new(features).with_bias(bias).with_epsilon(1e-5).init(&device);
        module.gamma = module.gamma.map(|_| Tensor::random([features], Distribution::Normal(1.0, 0.5), &device).require_grad());
        module.beta = module.beta.map(|b| b.map(|_| Tensor::random([features], Distribution::Normal(0.0, 0.5), &device).require_grad()));
        let x = Tensor::<3>::random(shape, Distribution::Normal(-2.0, 3.0), &device);
        let weights = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let x = x.clone().require_grad();
            let beta = module.beta.as_ref().map(|b| b.val());
            let y = if ours {
                ddpm_kernels::layer_norm(x.clone(), module.gamma.val(), beta, 1e-5, silu)
            } else {
                let y = module.forward(x.clone());
                if silu { burn::tensor::activation::silu(y) } else { y }
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let db = module.beta.as_ref().map(|b| b.grad(&grads).expect("beta gradient"));
            (y.inner(), x.grad(&grads).expect("x gradient"), module.gamma.grad(&grads).expect("gamma gradient"), db)
        };
        let (y, dx, dg, db) = run(true);
        let (y_ref, dx_ref, dg_ref, db_ref) = run(false);
        let what = format!("{shape:?} silu {silu} bias {bias}");
        assert_close(y, y_ref, &format!("forward {what}"));
        assert_close(dx, dx_ref, &format!("x gradient {what}"));
        assert_close(dg, dg_ref, &format!("gamma gradient {what}"));
        if let (Some(db), Some(db_ref)) = (db, db_ref) {
            assert_close(db, db_ref, &format!("beta gradient {what}"));
        }
    }
}

#[test]
fn linear_matches_burn_with_and_without_bias() {
    let device = Device::flex().autodiff();
    for (shape, outputs, bias) in [([1, 1, 1], 1, true), ([2, 7, 13], 5, true), ([1, 1000, 128], 128, false), ([3, 40, 64], 200, true)] {
        let inputs = shape[2];
        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<2>::random([inputs, outputs], Distribution::Normal(0.0, 0.3), &device);
        let b = Tensor::<1>::random([outputs], Distribution::Normal(0.0, 1.0), &device);
        let weights = Tensor::<3>::random([shape[0], shape[1], outputs], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let (x, w, b) = (x.clone().require_grad(), w.clone().require_grad(), b.clone().require_grad());
            let b_in = bias.then(|| b.clone());
            let y = if ours { ddpm_kernels::linear(x.clone(), w.clone(), b_in) } else { burn::tensor::module::linear(x.clone(), w.clone(), b_in) };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let db = bias.then(|| b.grad(&grads).expect("bias gradient"));
            (y.inner(), x.grad(&grads).expect("input gradient"), w.grad(&grads).expect("weight gradient"), db)
        };
        let (y, dx, dw, db) = run(true);
        let (y_ref, dx_ref, dw_ref, db_ref) = run(false);
        let what = format!("{shape:?} -> {outputs} bias {bias}");
        assert_close(y, y_ref, &format!("forward {what}"));
        assert_close(dx, dx_ref, &format!("input gradient {what}"));
        assert_close(dw, dw_ref, &format!("weight gradient {what}"));
        if let (Some(db), Some(db_ref)) = (db, db_ref) {
            assert_close(db, db_ref, &format!("bias gradient {what}"));
        }
    }
}

/// glibc takes both allocator settings of `keep_freed_memory` (it refuses an out-of-range value,
/// such as an mmap threshold above 32 MiB), and allocation works on after them.
#[test]
fn keep_freed_memory_is_taken_by_glibc() {
    let taken = ddpm_kernels::keep_freed_memory();
    assert_eq!(taken, cfg!(all(target_os = "linux", target_env = "gnu")));
    for _ in 0..3 {
        let buffer = vec![1.0f32; 1 << 20];
        assert_eq!(buffer.iter().sum::<f32>(), (1 << 20) as f32);
    }
}

#[test]
fn pool3x3_matches_burns_max_and_valid_count_average_pools() {
    use burn::tensor::module::{avg_pool2d, max_pool2d};
    use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
    use ddpm_kernels::{PoolKind, PoolShape, pool3x3, pool3x3_slices};
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // The FID Inception's pools (stride 1 pad 1, stride 2 pad 0) and odd ones, on sides from 1.
    for case in 0..24 {
        let (stride, pad) = [(1, 1), (2, 0), (1, 0), (2, 1), (3, 2)][case % 5];
        let min_side = 3usize.saturating_sub(2 * pad).max(1);
        let (b, c, h, w) = (rng.random_range(1..=3), rng.random_range(1..=5), rng.random_range(min_side..=19), rng.random_range(min_side..=23));
        let x = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let what = format!("[{b}, {c}, {h}, {w}] stride {stride} pad {pad}");
        let max = max_pool2d(x.clone(), MaxPoolOptions::new([3, 3]).with_stride([stride, stride]).with_padding([pad, pad]));
        let mean = avg_pool2d(x.clone(), AvgPoolOptions::new([3, 3]).with_stride([stride, stride]).with_padding([pad, pad]).with_count_include_pad(false));
        // The same taps in the same order: equal, not merely close. Through the tensor op and
        // through the slice kernel itself (so that a dispatch back to Burn's op cannot pass).
        let shape = PoolShape { planes: b * c, height: h, width: w, stride, pad };
        let values: Vec<f32> = x.clone().into_data().try_to_vec().expect("f32");
        for (kind, reference) in [(PoolKind::Max, max), (PoolKind::Mean, mean)] {
            let reference: Vec<f32> = reference.into_data().try_to_vec().expect("f32");
            assert_eq!(pool3x3_slices(&values, &shape, kind), reference, "{kind:?} slices {what}");
            let ours: Vec<f32> = pool3x3(x.clone(), kind, stride, pad).into_data().try_to_vec().expect("f32");
            assert_eq!(ours, reference, "{kind:?} {what}");
        }
    }
}
