//! `RUST_LOG` as the binaries read it (`progress::log_filter`).

use ddpm_io::progress::log_filter;
use tracing::Level;

#[test]
fn unset_or_empty_shows_info_and_above() {
    for value in [None, Some(""), Some("  ")] {
        let filter = log_filter(value).expect("default");
        assert!(filter.would_enable("ddpm_train::trainer", &Level::INFO), "{value:?}");
        assert!(filter.would_enable("burn_train", &Level::WARN), "{value:?}");
        assert!(!filter.would_enable("ddpm_train::trainer", &Level::DEBUG), "{value:?}");
    }
}

#[test]
fn a_level_and_target_directives_filter_by_module_path() {
    let warn = log_filter(Some("warn")).expect("warn");
    assert!(warn.would_enable("ddpm_eval", &Level::WARN));
    assert!(!warn.would_enable("ddpm_eval", &Level::INFO));

    let debug = log_filter(Some("info,ddpm_train=debug")).expect("directives");
    assert!(debug.would_enable("ddpm_train::data", &Level::DEBUG));
    assert!(!debug.would_enable("ddpm_train::data", &Level::TRACE));
    assert!(!debug.would_enable("ddpm_eval", &Level::DEBUG));
    assert!(debug.would_enable("ddpm_eval", &Level::INFO));
}

#[test]
fn a_bad_value_is_named_with_the_syntax() {
    let why = log_filter(Some("ddpm_train=loud")).expect_err("not a level");
    assert!(why.contains("RUST_LOG=`ddpm_train=loud`"), "{why}");
    assert!(why.contains("RUST_LOG=warn"), "{why}");
}
