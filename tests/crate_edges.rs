//! The crates fan out as ARCHITECTURE.md draws them, read from their manifests: ddpm-core is math
//! (no ddpm crate, no backend feature), ddpm-kernels and ddpm-io depend on no ddpm crate, ddpm-eval
//! does not depend on ddpm-models, and ddpm-train takes ddpm-eval (and ddpm-io's HTTP client) only
//! through default features an embedder can turn off.

use std::path::PathBuf;

fn manifest(name: &str) -> toml::Table {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crates").join(name).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ddpm_dependencies(m: &toml::Table) -> Vec<String> {
    m.get("dependencies").and_then(|d| d.as_table()).map(|d| d.keys().filter(|k| k.starts_with("ddpm-")).cloned().collect()).unwrap_or_default()
}

fn features(m: &toml::Table) -> toml::Table {
    m.get("features").and_then(|f| f.as_table()).cloned().unwrap_or_default()
}

#[test]
fn the_bottom_crates_depend_on_no_other_ddpm_crate() {
    for name in ["ddpm-core", "ddpm-kernels", "ddpm-io"] {
        assert_eq!(ddpm_dependencies(&manifest(name)), Vec::<String>::new(), "{name}");
    }
    let core = features(&manifest("ddpm-core"));
    assert!(core.is_empty(), "ddpm-core has no features (backends are chosen by ddpm-io and the binaries): {core:?}");
}

#[test]
fn ddpm_eval_does_not_depend_on_the_networks() {
    let deps = ddpm_dependencies(&manifest("ddpm-eval"));
    assert!(!deps.contains(&"ddpm-models".to_string()), "{deps:?}");
}

#[test]
fn an_embedder_of_ddpm_train_can_leave_out_evaluation_and_http() {
    let train = manifest("ddpm-train");
    let eval = &train["dependencies"]["ddpm-eval"];
    assert_eq!(eval.get("optional").and_then(|o| o.as_bool()), Some(true), "ddpm-eval is optional in ddpm-train: {eval:?}");
    let f = features(&train);
    let default: Vec<&str> = f["default"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(default.contains(&"eval") && default.contains(&"download"), "{default:?}");
    let io = manifest("ddpm-io");
    assert_eq!(io["dependencies"]["ureq"].get("optional").and_then(|o| o.as_bool()), Some(true), "ddpm-io's HTTP client is optional");
    let io_deps = &train["dependencies"]["ddpm-io"];
    assert!(io_deps.get("features").is_none(), "ddpm-train turns on ddpm-io's features only through its own: {io_deps:?}");
}
