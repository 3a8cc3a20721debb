//! Times the parts of one convolution (im2col, GEMM, layout) and our whole convolution (by the path
//! it takes: Winograd F4 or F2, direct tiles, or im2col) against Burn's conv2d on Flex.
//!
//!     cargo run --release -p ddpm-kernels --features flex --example conv_parts [BxCxS | BxCixCoxS ...]
//!
//! Each `BxCxS` is one case: batch B, C channels in and out, S x S pixels (default: 16x64x32,
//! 16x256x8 and 16x512x4, unet64's; the quickstart's are 16x16x16, 16x32x8 and 16x32x4);
//! `BxCixCoxS` has Ci channels in and Co out. `DDPM_CONV=by-image` (or `im2col`, `winograd2`)
//! times "ours" by another path, to compare.

use std::time::Instant;

use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use ddpm_kernels::{ConvGeometry, MatRef, conv2d, matmul};

fn best(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..iters).map(|_| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    }).fold(f64::INFINITY, f64::min)
}

fn main() {
    let device = Device::flex();
    let cases: Vec<(usize, usize, usize, usize)> = std::env::args()
        .skip(1)
        .map(|a| match a.split('x').map(str::parse).collect::<Result<Vec<usize>, _>>().as_deref() {
            Ok(&[b, c, s]) if b > 0 && c > 0 && s > 0 => (b, c, c, s),
            Ok(&[b, ci, co, s]) if b > 0 && ci > 0 && co > 0 && s > 0 => (b, ci, co, s),
            _ => {
                eprintln!("error: `{a}` is not a case; write BxCxS (batch, channels, side), e.g. 16x64x32, or BxCixCoxS, e.g. 32x96x32x32");
                std::process::exit(2)
            }
        })
        .collect();
    let cases = if cases.is_empty() { vec![(16, 64, 64, 32), (16, 256, 256, 8), (16, 512, 512, 4)] } else { cases };
    for (batch, c, co, size) in cases {
        let g = ConvGeometry { batch, c_in: c, height: size, width: size, c_out: co, kernel: [3, 3], stride: [1, 1], pad: [1, 1], dilation: [1, 1], out: [size, size] };
        let flops = 2.0 * (g.c_out * g.patch() * g.columns()) as f64;
        let x: Vec<f32> = (0..batch * c * size * size).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..co * g.patch()).map(|i| (i % 5) as f32 * 0.01).collect();
        let mut cols = vec![0.0; g.patch() * g.columns()];
        let t_im2col = best(5, || ddpm_kernels::im2col(&x, &g, &mut cols));
        let mut y = vec![0.0; co * g.columns()];
        let t_gemm = best(5, || matmul(&mut y, MatRef::row_major(&w, co, g.patch()), MatRef::row_major(&cols, g.patch(), g.columns()), false));
        let t_ours_slices = best(5, || { ddpm_kernels::conv2d_forward_slices(&x, &w, None, &g); });
        let xt = Tensor::<4>::random([batch, c, size, size], Distribution::Normal(0.0, 1.0), &device);
        let wt = Tensor::<4>::random([co, c, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let t_ours = best(5, || { conv2d(xt.clone(), wt.clone(), None, opts.clone()).into_data(); });
        let t_burn = best(5, || { burn_conv2d(xt.clone(), wt.clone(), None, opts.clone()).into_data(); });
        let dy: Vec<f32> = (0..batch * co * size * size).map(|i| (i % 3) as f32 * 0.1).collect();
        let all = ddpm_kernels::Wanted { input: true, weight: true, bias: true };
        let t_back = best(5, || { ddpm_kernels::conv2d_backward_slices(&x, &w, &dy, &g, all); });
        let xa = xt.clone().autodiff().require_grad();
        let wa = wt.clone().autodiff().require_grad();
        let t_burn_step = best(5, || { let g = burn_conv2d(xa.clone(), wa.clone(), None, opts.clone()).sum().backward(); let _ = wa.grad(&g).unwrap().into_data(); });
        let t_ours_step = best(5, || { let g = conv2d(xa.clone(), wa.clone(), None, opts.clone()).sum().backward(); let _ = wa.grad(&g).unwrap().into_data(); });
        let (k, p) = (g.patch(), g.columns());
        let dyc: Vec<f32> = (0..co * p).map(|i| (i % 3) as f32).collect();
        let mut dw = vec![0.0; co * k];
        let t_dw = best(3, || matmul(&mut dw, MatRef::row_major(&cols, k, p), MatRef::row_major(&dyc, p, co), false));
        let mut dcols = vec![0.0; k * p];
        let t_dcols = best(3, || matmul(&mut dcols, MatRef::row_major(&w, co, k).t(), MatRef::row_major(&dyc, co, p), false));
        let mut dx = vec![0.0; x.len()];
        let t_col2im = best(3, || ddpm_kernels::col2im(&mut dcols, &g, &mut dx));
        println!("  dW gemm {:.2} ms, dcols gemm {:.2} ms, col2im {:.2} ms", t_dw * 1e3, t_dcols * 1e3, t_col2im * 1e3);
        println!("  backward (slices) {:.2} ms ({:.0} GFLOP/s); forward+backward through autodiff: ours {:.2} ms, burn {:.2} ms", t_back * 1e3, 2.0 * flops / t_back / 1e9, t_ours_step * 1e3, t_burn_step * 1e3);
        println!(
            "{batch}x{c}->{co}x{size}x{size} 3x3 (ours by {}): im2col {:.2} ms, gemm {:.2} ms ({:.0} GFLOP/s), ours {:.2} ms (slices {:.2}), burn {:.2} ms ({:.0} GFLOP/s)",
            match (ddpm_kernels::winograd_tiling(&g), ddpm_kernels::direct_conv_applies(&g)) {
                (Some(t), _) => format!("Winograd {t:?}"),
                (None, true) => "direct tiles, unless DDPM_CONV says otherwise".to_string(),
                (None, false) => "im2col".to_string(),
            },
            t_im2col * 1e3, t_gemm * 1e3, flops / t_gemm / 1e9, t_ours * 1e3, t_ours_slices * 1e3, t_burn * 1e3, flops / t_burn / 1e9
        );
    }
}
