//! The README's example, end to end: a user-written Burn module trained and sampled with ddpm-core
//! alone must learn the 8-Gaussians distribution.

#[path = "../examples/custom_denoiser.rs"]
mod example;

#[test]
fn a_user_module_trains_and_samples_near_the_modes() {
    let device = ddpm::io::device::device_from_env().unwrap();
    let report = example::run(&device, 3000, 1000, 1, false).unwrap();
    // After 3000 steps (the example's default is 8000), seeded, DDPM puts 84% of samples within 3 sigma
    // of a mode and DDIM-50 57%; untrained, almost none land there.
    for (name, (points, q), min) in [("ddim", &report.ddim, 0.3), ("ddpm", &report.ddpm, 0.6)] {
        assert_eq!(points.len(), 2000);
        eprintln!("{name}: {:.1}% near a mode, {} modes", 100.0 * q.near_mode, q.modes_hit);
        assert!(q.near_mode > min, "{name}: only {:.1}% of samples near a mode", 100.0 * q.near_mode);
        assert!(q.modes_hit >= 7, "{name}: only {}/8 modes covered", q.modes_hit);
    }
    // An untrained network must fail the same check, or the check proves nothing.
    let untrained = example::run(&device, 0, 1000, 1, false).unwrap();
    assert!(untrained.ddim.1.near_mode < 0.15, "untrained: {:.2}", untrained.ddim.1.near_mode);
    let png = std::env::temp_dir().join(format!("ddpm-custom-denoiser-{}.png", std::process::id()));
    example::scatter_png(png.to_str().unwrap(), &report.ddim.0, &report.ddpm.0).unwrap();
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (512, 256));
    std::fs::remove_file(png).ok();
}
