//! Device names: unknown names and backends missing from the build are errors naming the fix.

use ddpm_io::device::{DEVICE_NAMES, compiled_backends, parse_device};

#[test]
fn an_unknown_device_lists_the_known_names() {
    let e = parse_device("tpu").unwrap_err().to_string();
    assert!(e.contains("tpu") && e.contains("flex"), "{e}");
    for (name, _) in DEVICE_NAMES {
        assert!(e.contains(name), "{e} should list {name}");
    }
}

#[test]
fn a_backend_missing_from_the_build_names_its_feature() {
    for (name, feature) in [("cuda:0", "cuda"), ("rocm", "rocm"), ("metal", "metal")] {
        if compiled_backends().contains(&feature) {
            eprintln!("skipped {name}: the `{feature}` backend is compiled into this build");
            continue;
        }
        let e = parse_device(name).unwrap_err().to_string();
        assert!(e.contains(&format!("--features {feature}")), "{e}");
    }
    let e = parse_device("cuda:x").unwrap_err().to_string();
    assert!(e.contains("not a device index"), "{e}");
}
