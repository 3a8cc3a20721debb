//! Every option of every network is settable from TOML. The `[model]` table is laid over the
//! network's own config in ddpm-models, so for each kind each field of that config (but those the
//! trainer sets from the data) gets a value other than its default here, is parsed from a config
//! file and must come out in the network's config. A field added to a network without a value
//! below fails the test, and so does an option configs/README.md does not list.

use ddpm_train::config::{ModelConfig, ModelKind, NetworkConfig};
use ddpm_train::parse_config;

/// A value other than the default for each option name any network has.
fn sample_value(field: &str) -> Option<toml::Value> {
    let v = |s: &str| -> toml::Value { toml::from_str::<toml::Table>(&format!("v = {s}")).unwrap().remove("v").unwrap() };
    Some(match field {
        "dim" => v("24"),
        "init_dim" => v("12"),
        "dim_mults" => v("[1, 3]"),
        "self_condition" | "learned_sinusoidal_cond" | "random_fourier_features" | "flash_attn" | "attn_flash" => v("true"),
        "learned_sinusoidal_dim" => v("8"),
        "sinusoidal_pos_emb_theta" => v("500.0"),
        "dropout" => v("0.25"),
        "attn_heads" => v("3"),
        "attn_dim_head" => v("8"),
        "full_attn" => v("[true, false]"),
        "num_classes" => v("7"),
        "ch" => v("64"),
        "ch_mult" => v("[1, 2]"),
        "num_res_blocks" => v("1"),
        "attn_resolutions" => v("[8]"),
        "norm_num_groups" => v("8"),
        "norm_eps" => v("1e-5"),
        "time_frequencies" => v("\"diffusers\""),
        "vit_depth" => v("2"),
        "vit_dropout" => v("0.05"),
        "ff_mult" => v("2"),
        "dim_max" => v("256"),
        "num_downsamples" => v("2"),
        "num_blocks_per_stage" => v("2"),
        "attn_res" => v("[8]"),
        "fourier_dim" => v("32"),
        "mp_cat_t" => v("0.4"),
        "mp_add_emb_t" => v("0.6"),
        "attn_res_mp_add_t" => v("0.2"),
        "resnet_mp_add_t" => v("0.25"),
        "hidden" => v("64"),
        "num_layers" => v("2"),
        _ => return None,
    })
}

/// The network config as a TOML table (its serialised fields).
fn fields(n: &NetworkConfig) -> toml::Table {
    match n {
        NetworkConfig::Unet(c) => toml::Table::try_from(c),
        NetworkConfig::Unet1d(c) => toml::Table::try_from(c),
        NetworkConfig::DdpmUnet(c) => toml::Table::try_from(c),
        NetworkConfig::Uvit(c) => toml::Table::try_from(c),
        NetworkConfig::KarrasUnet(c) => toml::Table::try_from(c),
        NetworkConfig::Mlp(c) => toml::Table::try_from(c),
    }
    .unwrap()
}

fn config_text(kind: ModelKind, options: &toml::Table) -> String {
    let mut model = options.clone();
    model.insert("kind".into(), kind.name().into());
    let mut doc: toml::Table = toml::from_str("[data]\nkind = \"shapes\"\nimage_size = 8\n").unwrap();
    doc.insert("model".into(), toml::Value::Table(model));
    toml::to_string(&doc).unwrap()
}

#[test]
fn every_option_of_every_network_is_settable_from_toml() {
    for kind in ModelKind::ALL {
        let mut options = toml::Table::new();
        for field in kind.options() {
            let value = sample_value(field).unwrap_or_else(|| panic!("give `{}.{field}` a value in this test", kind.name()));
            options.insert(field.to_owned(), value);
        }
        let defaults = {
            let required = kind.required().iter().fold(ModelConfig::new(kind), |m, k| m.with(k, options[*k].clone()));
            fields(&required.network().unwrap())
        };
        let cfg = parse_config(&config_text(kind, &options), "options.toml", &[]).unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        assert_eq!(cfg.model.kind, kind);
        let got = fields(&cfg.model.network().unwrap());
        for (field, value) in &options {
            // One value where the default is a list is a list of one.
            let want = match (&defaults.get(field), value) {
                (Some(toml::Value::Array(_)), v) if !v.is_array() => toml::Value::Array(vec![v.clone()]),
                _ => value.clone(),
            };
            assert_eq!(got.get(field), Some(&want), "{}.{field}", kind.name());
            if !kind.required().contains(&field.as_str()) {
                assert_ne!(defaults.get(field), Some(&want), "{}.{field}: the test's value is the default", kind.name());
            }
        }
        // The file's config round-trips through its own serialisation (a run folder's config.toml).
        let again = parse_config(&toml::to_string(&cfg).unwrap(), "again.toml", &[]).unwrap();
        assert_eq!(again.model, cfg.model);
    }
}

#[test]
fn fields_the_data_decides_and_missing_required_fields_are_refused() {
    let e = parse_config(&config_text(ModelKind::Unet, &toml::from_str("dim = 8\nchannels = 1").unwrap()), "c.toml", &[]).unwrap_err().to_string();
    assert!(e.contains("model.channels") && e.contains("from the data"), "{e}");
    let e = parse_config(&config_text(ModelKind::Uvit, &toml::Table::new()), "c.toml", &[]).unwrap_err().to_string();
    assert!(e.contains("missing field `dim`"), "{e}");
    let e = parse_config(&config_text(ModelKind::Mlp, &toml::from_str("hidden = \"wide\"").unwrap()), "c.toml", &[]).unwrap_err().to_string();
    assert!(e.contains("model.hidden") && e.contains("invalid type"), "{e}");
}

#[test]
fn the_configs_readme_lists_every_process_option() {
    use ddpm_train::overlay::field_names;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/README.md")).unwrap();
    let trainers = ["self_condition", "rho", "num_sample_steps", "s_churn", "s_tmin", "s_tmax", "s_noise"];
    for f in field_names::<ddpm_core::GaussianDiffusionConfig>().iter().chain(field_names::<ddpm_core::EdmConfig>()) {
        assert!(trainers.contains(f) || readme.contains(&format!("`{f}`")), "configs/README.md does not list `{f}`");
    }
}

#[test]
fn the_configs_readme_lists_every_option() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/README.md")).unwrap();
    for kind in ModelKind::ALL {
        let row = readme.lines().find(|l| l.starts_with(&format!("| `{}`", kind.name()))).unwrap_or_else(|| panic!("configs/README.md has no row for `{}`", kind.name()));
        for field in kind.options() {
            assert!(row.contains(&format!("`{field}`")), "configs/README.md's `{}` row does not list `{field}`", kind.name());
        }
    }
}

/// A value other than the default for each field of ddpm-core's process configs.
fn process_value(field: &str) -> Option<toml::Value> {
    let v = |s: &str| -> toml::Value { toml::from_str::<toml::Table>(&format!("v = {s}")).unwrap().remove("v").unwrap() };
    Some(match field {
        "timesteps" => v("500"),
        "beta_schedule" => v("{ kind = \"linear\", beta_start = 0.0002, beta_end = 0.03 }"),
        "zero_terminal_snr" | "immiscible" => v("true"),
        "objective" => v("\"pred_noise\""),
        "variance" => v("\"learned_range\""),
        "loss_type" => v("\"l1\""),
        "min_snr_gamma" => v("5.0"),
        "offset_noise_strength" => v("0.1"),
        "vlb_lambda" => v("0.01"),
        "pred_noise_loss_weight" => v("0.2"),
        "pred_x0_loss_weight" => v("0.3"),
        "sigma_min" => v("0.01"),
        "sigma_max" => v("60.0"),
        "sigma_data" => v("0.6"),
        "p_mean" => v("-1.0"),
        "p_std" => v("1.4"),
        _ => return None,
    })
}

#[test]
fn every_option_of_the_processes_is_settable_from_toml() {
    use ddpm_train::overlay::field_names;
    // The trainer's: self-conditioning follows the network, EDM's grid and sampler are [sample]'s.
    let trainers = ["self_condition", "rho", "num_sample_steps", "s_churn", "s_tmin", "s_tmax", "s_noise"];
    let gaussian: Vec<&str> = field_names::<ddpm_core::GaussianDiffusionConfig>().iter().copied().filter(|f| !trainers.contains(f)).collect();
    let edm: Vec<&str> = field_names::<ddpm_core::EdmConfig>().iter().copied().filter(|f| !trainers.contains(f)).collect();
    let mut diffusion = toml::Table::new();
    for f in &gaussian {
        diffusion.insert(f.to_string(), process_value(f).unwrap_or_else(|| panic!("give `diffusion.{f}` a value in this test")));
    }
    let mut edm_table = toml::Table::new();
    for f in &edm {
        edm_table.insert(f.to_string(), process_value(f).unwrap_or_else(|| panic!("give `diffusion.edm.{f}` a value in this test")));
    }
    let mut doc: toml::Table = toml::from_str("[data]\nkind = \"shapes\"\nimage_size = 8\n[model]\nkind = \"unet\"\ndim = 8\n").unwrap();
    let mut section = diffusion.clone();
    section.insert("edm".into(), toml::Value::Table(edm_table.clone()));
    doc.insert("diffusion".into(), toml::Value::Table(section));
    let cfg = parse_config(&toml::to_string(&doc).unwrap(), "process.toml", &[]).unwrap();
    let (got_gaussian, got_edm) = (toml::Table::try_from(&cfg.diffusion.gaussian).unwrap(), toml::Table::try_from(&cfg.diffusion.edm).unwrap());
    let (default_gaussian, default_edm) = (toml::Table::try_from(ddpm_core::GaussianDiffusionConfig::new()).unwrap(), toml::Table::try_from(ddpm_core::EdmConfig::new()).unwrap());
    for (got, defaults, given, section) in [(&got_gaussian, &default_gaussian, &diffusion, "diffusion"), (&got_edm, &default_edm, &edm_table, "diffusion.edm")] {
        for (field, value) in given {
            assert_eq!(got.get(field), Some(value), "{section}.{field}");
            assert_ne!(defaults.get(field), Some(value), "{section}.{field}: the test's value is the default");
        }
    }
    // The config round-trips through its own serialisation; a schedule by name is that schedule
    // with its parameters; the trainer's keys are refused.
    let again = parse_config(&toml::to_string(&cfg).unwrap(), "again.toml", &[]).unwrap();
    assert_eq!(again.diffusion, cfg.diffusion);
    let by_name = parse_config("[data]\nkind = \"shapes\"\n[model]\nkind = \"unet\"\ndim = 8\n[diffusion]\nbeta_schedule = \"cosine\"\n", "n.toml", &[]).unwrap();
    assert_eq!(by_name.diffusion.gaussian.beta_schedule, ddpm_core::BetaSchedule::cosine());
    let e = parse_config("[data]\nkind = \"shapes\"\n[model]\nkind = \"unet\"\ndim = 8\n[diffusion.edm]\nrho = 5.0\n", "r.toml", &[]).unwrap_err().to_string();
    assert!(e.contains("diffusion.edm.rho") && e.contains("set by the trainer"), "{e}");
}
