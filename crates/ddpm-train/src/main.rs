//! `ddpm-train`: train a diffusion model from a TOML config, sample from its checkpoints (or from a
//! denoising-diffusion-pytorch Trainer checkpoint), and measure a config's cost.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ddpm_train::bench::{BenchOptions, BenchReport, bench};
use ddpm_train::pipeline::{ExportFormat, LoadOptions, Pipeline, SampleOptions, Source};
use ddpm_train::sample::{Weights, parse_seeds, run_config_of, shard};
use ddpm_train::sample_job::{SampleJob, write_samples};
use ddpm_train::{RunOptions, TrainError, load_config};

#[derive(Parser, Debug)]
#[command(
    name = "ddpm-train",
    version,
    about = "Train denoising diffusion models, sample from them, measure them",
    long_about = "Train denoising diffusion models, sample from them, measure them.\n\n\
                  `ddpm-train --config configs/quickstart.toml` trains (the `train` subcommand may be omitted).\n\
                  Every config key is documented in configs/README.md and in the config files themselves.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train (the default when no subcommand is given).
    Train(TrainArgs),
    /// Check a config; `--print` shows it resolved, with every default.
    Config(ConfigCmdArgs),
    /// Draw samples from a checkpoint: one PNG per seed, a grid, optionally a .npy.
    Sample(Box<SampleArgs>),
    /// Write a checkpoint's weights for PyTorch: denoising-diffusion-pytorch's key names, a diffusers
    /// DDPMPipeline folder, or plain safetensors.
    Export(ExportArgs),
    /// Turn PyTorch weights (a Trainer checkpoint, a state dict, a diffusers folder) into a ddpm-train
    /// checkpoint folder.
    Import(ImportArgs),
    /// Measure a config's network: parameters, training-step and forward time, samples/s, memory (JSON on stdout).
    Bench(BenchArgs),
    /// Negative log-likelihood bound in bits/dim of the data's first items under a checkpoint (images).
    Nll(NllArgs),
    /// EDM2's post-hoc EMA: build the EMA of any width from a run's stored power-function averages
    /// (train.post_hoc_ema); the output folder samples like a checkpoint.
    PostHocEma(PostHocArgs),
    /// Train the noise-aware classifier of classifier guidance on the config's labelled data and
    /// diffusion ([classifier] section); saved in RUN/classifier for `sample --classifier-scale`.
    Classifier(ClassifierArgs),
    /// Draw a run's plots from its metrics.jsonl into the run folder: loss.png, lr.png, and eval.png
    /// / nll.png when the log has such lines (also while the run trains); prints the paths written.
    Plot(PlotArgs),
}

#[derive(Args, Debug)]
struct PlotArgs {
    /// The run folder (its metrics.jsonl); the plots are written there.
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
}

#[derive(Args, Debug)]
struct ClassifierArgs {
    /// The run's TOML config (its data, diffusion and [classifier] settings).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    common: ConfigArgs,
}

#[derive(Args, Debug)]
struct PostHocArgs {
    /// The run folder (its config.toml and post-hoc/ snapshots).
    #[arg(long, value_name = "DIR")]
    run: PathBuf,
    /// Width of the wanted average, in (0, 0.3] (EDM2's best are usually 0.05-0.2).
    #[arg(long)]
    sigma_rel: f64,
    /// The stored step to reconstruct at (default: the last snapshot).
    #[arg(long)]
    step: Option<usize>,
    /// Output folder (default: RUN/post-hoc/sigma_rel-S-step-N).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct NllArgs {
    /// A ddpm-train checkpoint folder, a reference Trainer checkpoint (.pt) or a .safetensors state dict.
    #[arg(long, value_name = "PATH")]
    checkpoint: PathBuf,
    /// The config (default: the one saved with a ddpm-train checkpoint).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    common: ConfigArgs,
    /// Items of the data set (the first, in data order).
    #[arg(long, default_value_t = 64)]
    num: usize,
    /// Seed of the noise of the bound's terms.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// ema or model.
    #[arg(long, default_value = "ema")]
    weights: String,
    /// Print one JSON object instead of a line.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ConfigArgs {
    /// Override a config key, e.g. `--set train.lr=1e-4` (repeatable; values are TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Device: flex, cpu, ndarray, wgpu[:N|:cpu], vulkan[:N], metal, cuda[:N], rocm[:N]. Default: run.device (flex).
    /// A comma-separated list (cuda:0,cuda:1) trains data-parallel on all of them.
    #[arg(long)]
    device: Option<String>,
    /// No progress output: neither the bar on a terminal nor the plain lines (every
    /// run.progress_seconds, default 30) printed otherwise.
    #[arg(long, short)]
    quiet: bool,
}

impl ConfigArgs {
    fn overrides(&self) -> Vec<String> {
        let mut set = self.set.clone();
        if let Some(d) = &self.device {
            let list: Vec<&str> = d.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            set.push(format!("run.device=\"{}\"", list.first().copied().unwrap_or(d)));
            if list.len() > 1 {
                let quoted: Vec<String> = list.iter().map(|s| format!("\"{s}\"")).collect();
                set.push(format!("run.devices=[{}]", quoted.join(", ")));
            }
        }
        set
    }
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// The TOML config (see configs/).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    common: ConfigArgs,
    /// Continue from the newest complete checkpoint of the run folder (`--resume`), or from the
    /// checkpoint folder given.
    #[arg(long, value_name = "CHECKPOINT", num_args = 0..=1, default_missing_value = "latest")]
    resume: Option<PathBuf>,
    /// Start a fresh run even if run.out_dir holds one: the old run is moved aside to
    /// OUT_DIR.replaced-DATE-TIME (nothing is deleted). Without it a fresh run refuses a folder
    /// that holds another run.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Check everything without writing a byte: the config, the data (counting unreadable items),
    /// the network, one training step in memory (its time and peak memory), and what the run would
    /// do in its folder; prints the resolved config.
    #[arg(long)]
    dry_run: bool,
    /// Progress display: `auto` (burn-train's terminal dashboard when standard output is a
    /// terminal, else a plain line every run.progress_seconds), `tui`, `plain` or `none`
    /// (evaluation results only). The dashboard's `q` stops the run after a checkpoint.
    #[arg(long, value_enum, default_value_t = ddpm_train::dashboard::Dashboard::Auto)]
    dashboard: ddpm_train::dashboard::Dashboard,
}

#[derive(Args, Debug)]
struct ConfigCmdArgs {
    /// The TOML config.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    common: ConfigArgs,
    /// Print the resolved config with every default filled in (TOML).
    #[arg(long)]
    print: bool,
}

#[derive(Args, Debug)]
struct SampleArgs {
    /// The weights, in any of these forms (detected, and said which): a run folder (its newest
    /// checkpoint), a checkpoint folder, a checkpoint's ema.safetensors, a denoising-diffusion-pytorch
    /// Trainer checkpoint (model-N.pt), a plain state dict (.pt/.pth/.bin/.safetensors, the
    /// reference's or diffusers' key names), a diffusers pipeline folder (model_index.json) or a
    /// diffusers UNet2DModel folder.
    #[arg(long, value_name = "PATH")]
    checkpoint: PathBuf,
    /// The config (default: the run's config.toml next to a ddpm-train checkpoint; required for state
    /// dicts; diffusers folders need none).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    common: ConfigArgs,
    /// Number of samples, seeds `--seed`..`--seed + N - 1` (default: train.num_samples, 25; 16 for diffusers folders).
    #[arg(long)]
    num: Option<usize>,
    /// Explicit seeds instead of --num: `0-49999`, `1,5,7`, `0-9,100-109`.
    #[arg(long, value_name = "LIST", conflicts_with = "num")]
    seeds: Option<String>,
    /// Take part i of n of the seeds (0-based, contiguous), e.g. `--shard 3/8`, to spread a run over processes.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// First seed for --num (default 0).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The sampler (default: sample.sampler, ddim).
    #[arg(long, long_help = format!("The sampler (default: sample.sampler, ddim). {}.", ddpm_train::config::sampler_help()))]
    sampler: Option<String>,
    /// Steps of DDIM and the sigma-space solvers (default: sample.steps, 50).
    #[arg(long)]
    steps: Option<usize>,
    /// Noise scale: DDIM's eta (default 0), or of the stochastic solvers (euler_ancestral, dpmpp_*_sde; default 1).
    #[arg(long)]
    eta: Option<f64>,
    /// Samples per network call (default: sample.batch_size, 64).
    #[arg(long)]
    batch: Option<usize>,
    /// Class-conditional models: the class of every sample (default: sample.class, else sample i
    /// takes class i mod num_classes).
    #[arg(long)]
    class: Option<usize>,
    /// Class-conditional models: classifier-free guidance scale (default: sample.cond_scale, 1 =
    /// the conditional model; with --cfg-pp, CFG++'s lambda in [0, 1]).
    #[arg(long)]
    cond_scale: Option<f64>,
    /// Guide with CFG++ (ddim, euler and euler_ancestral) instead of plain guidance.
    #[arg(long)]
    cfg_pp: bool,
    /// Classifier guidance scale with the run's noise-aware classifier (`ddpm-train classifier`);
    /// default: sample.classifier_scale, 0 = off.
    #[arg(long)]
    classifier_scale: Option<f64>,
    /// The classifier folder (default: sample.classifier, else RUN/classifier).
    #[arg(long, value_name = "DIR")]
    classifier: Option<PathBuf>,
    /// ema or model.
    #[arg(long, default_value = "ema")]
    weights: String,
    /// Initial noise: a float32 .npy of shape [N, C, H, W] (N = number of seeds).
    #[arg(long, value_name = "FILE.npy")]
    init_noise: Option<PathBuf>,
    /// Partially denoise given data instead of sampling from noise (SDEdit): a .npy [N, ..item]
    /// (images in [0, 1]), an image file or a folder of images; N must equal the number of seeds.
    #[arg(long, value_name = "FILE|DIR", requires = "strength")]
    from: Option<PathBuf>,
    /// Noise level for --from, in (0, 1]: 0.3 keeps much of the input, 1 keeps little.
    #[arg(long, requires = "from")]
    strength: Option<f64>,
    /// Inpaint with RePaint (Lugmayr et al. 2022, Algorithm 1): the data to complete, as for --from
    /// (one item serves every seed). Runs RePaint's ancestral walk over all timesteps whatever
    /// --sampler says.
    #[arg(long, value_name = "FILE|DIR", requires = "mask", conflicts_with = "from")]
    inpaint: Option<PathBuf>,
    /// The inpainting mask: an image (white = keep, black = fill in; resized like the data) or a .npy of
    /// the item shape with 1 = keep.
    #[arg(long, value_name = "FILE", requires = "inpaint")]
    mask: Option<PathBuf>,
    /// RePaint: timesteps each jump goes back up.
    #[arg(long, default_value_t = 10)]
    jump_length: usize,
    /// RePaint: how often each jump point is passed (1: no resampling).
    #[arg(long, default_value_t = 10)]
    resample: usize,
    /// Also save the samples as float32 .npy [N, C, H, W] in [0, 1] (vectors: as sampled).
    #[arg(long, value_name = "FILE.npy")]
    save_npy: Option<PathBuf>,
    /// Also write OUT/trajectory.png: the x0 estimate of the first 4 seeds at 10 steps spread over
    /// the run (one row per seed, noise to sample from left to right). Images, from noise.
    #[arg(long)]
    trajectory: bool,
    /// Output folder: {seed:06}.png per image and grid.png.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// The weights to export, in any form `sample --checkpoint` takes.
    #[arg(long, value_name = "PATH")]
    checkpoint: PathBuf,
    /// lucidrains (denoising-diffusion-pytorch key names, a .safetensors file), diffusers (a
    /// DDPMPipeline folder; the DDPM paper's network) or safetensors (Burn parameter paths).
    #[arg(long, value_name = "FORMAT")]
    to: String,
    /// Output file (lucidrains, safetensors) or folder (diffusers).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    #[command(flatten)]
    source: SourceArgs,
}

/// How weights from elsewhere are read.
#[derive(Args, Debug)]
struct SourceArgs {
    /// The config of the network the weights belong to, where they carry none (state dicts,
    /// Trainer checkpoints); ddpm-train runs and diffusers folders need none.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    common: ConfigArgs,
    /// ema or model (ddpm-train and Trainer checkpoints hold both).
    #[arg(long, default_value = "ema")]
    weights: String,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// Weights from elsewhere: a denoising-diffusion-pytorch Trainer checkpoint or state dict (with
    /// --config), or a diffusers pipeline / UNet2DModel folder (no config needed).
    #[arg(long, value_name = "PATH")]
    from: PathBuf,
    #[command(flatten)]
    source: SourceArgs,
    /// The checkpoint folder to write (ema.bpk = model.bpk = the weights, config.toml, state.json
    /// at step 0); sample, evaluate or export it like any checkpoint.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// The TOML config whose data shape, network, batch size and sampler are measured.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    common: ConfigArgs,
    /// Untimed iterations before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed iterations (the median is reported).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// JSON (one object per line, per case) instead of the tables.
    #[arg(long)]
    json: bool,
    /// Measure how the cost grows with the work: batch 1, 8, 16, 32, 64, and for image data sizes
    /// 32 and 64 (each a `--set train.batch_size=..`, `--set data.image_size=..` of the config).
    #[arg(long)]
    sweep: bool,
    /// The batch sizes to sweep (comma-separated); implies --sweep.
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    batches: Vec<usize>,
    /// The image sizes to sweep (comma-separated, image data only); implies --sweep.
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    sizes: Vec<usize>,
}

fn main() -> ExitCode {
    // Each step frees its activations and allocates them again: reuse the memory, no page faults.
    ddpm_kernels::keep_freed_memory();
    let cli = Cli::parse();
    ddpm_train::progress::init_diagnostics();
    // The work runs on a rayon pool thread, so that every parallel op splits with it instead of
    // waking the pool and sleeping (see `ddpm_kernels::on_workers`).
    let result = ddpm_kernels::on_workers(move || match cli.command {
        Some(Command::Sample(args)) => sample(*args),
        Some(Command::Bench(args)) => run_bench(args),
        Some(Command::Nll(args)) => run_nll(args),
        Some(Command::PostHocEma(args)) => run_post_hoc(args),
        Some(Command::Classifier(args)) => run_classifier(args),
        Some(Command::Plot(args)) => run_plot(args),
        Some(Command::Train(args)) => train(args),
        Some(Command::Config(args)) => config_cmd(args),
        Some(Command::Export(args)) => export(args),
        Some(Command::Import(args)) => import(args),
        None => train(cli.train),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn train(args: TrainArgs) -> Result<(), TrainError> {
    let Some(path) = args.config else {
        return Err(TrainError::config("--config", "give a config file, e.g. --config configs/quickstart.toml"));
    };
    let cfg = load_config(&path, &args.common.overrides())?;
    if args.dry_run {
        let report = ddpm_train::dry_run::dry_run(&cfg, args.resume.is_some(), args.overwrite)?;
        print!("{}", ddpm_train::dry_run::render(&report));
        return Ok(());
    }
    let (resume, resume_latest) = match args.resume {
        None => (None, false),
        Some(p) if p.as_os_str() == "latest" => (None, true),
        Some(p) => (Some(p), false),
    };
    println!("training {} -> {} on {}", path.display(), cfg.run.out_dir.display(), cfg.run.device);
    let summary = ddpm_train::run(&cfg, &RunOptions { resume, resume_latest, overwrite: args.overwrite, progress: !args.common.quiet, stop_after: None, dashboard: args.dashboard })?;
    println!(
        "done: {} steps in {:.1} s, loss {:.4}; samples in {}, loss curve {}",
        summary.steps,
        summary.seconds,
        summary.final_loss,
        cfg.run.out_dir.join("samples").display(),
        cfg.run.out_dir.join("loss.png").display()
    );
    Ok(())
}

fn config_cmd(args: ConfigCmdArgs) -> Result<(), TrainError> {
    let cfg = load_config(&args.config, &args.common.overrides())?;
    if args.print {
        print!("{}", toml::to_string(&cfg).expect("a parsed config renders"));
    } else {
        println!("{}: valid ({} on {}, run folder {})", args.config.display(), cfg.model.kind(), cfg.run.device, cfg.run.out_dir.display());
    }
    Ok(())
}

/// The pipeline of `--checkpoint` with `--config` (or the config saved with the weights, or none
/// for a diffusers folder), `--set` and `--device`.
fn open_pipeline(checkpoint: &Path, config: Option<&Path>, common: &ConfigArgs, weights: Weights) -> Result<Pipeline, TrainError> {
    let source = Source::detect(checkpoint)?;
    tracing::info!("found {}", source.describe());
    let config = config.map(Path::to_path_buf).or_else(|| source.config_path());
    let pipe = match config {
        Some(path) => Pipeline::from_config(&load_config(&path, &common.overrides())?, source, weights)?,
        None if source.is_diffusers() => {
            if !common.set.is_empty() {
                return Err(TrainError::config("--set", "a diffusers folder has no TOML config to override; give --config to use one"));
            }
            Pipeline::load_with(checkpoint, &LoadOptions { device: common.device.clone(), weights: Some(weights), ..Default::default() })?
        }
        None => {
            return Err(TrainError::config(
                "--config",
                format!("{} carries no network settings; give --config with the data shape and the network it holds", checkpoint.display()),
            ));
        }
    };
    tracing::info!("loaded {}", pipe.describe());
    Ok(pipe)
}

fn sample(args: SampleArgs) -> Result<(), TrainError> {
    let weights = args.weights.parse::<Weights>()?;
    let pipe = open_pipeline(&args.checkpoint, args.config.as_deref(), &args.common, weights)?;
    let overrides = SampleOptions {
        sampler: args.sampler.clone(),
        steps: args.steps,
        eta: args.eta,
        class: args.class,
        cond_scale: args.cond_scale,
        cfg_pp: args.cfg_pp.then_some(true),
        classifier_scale: args.classifier_scale,
        classifier: args.classifier.clone(),
        trajectory: args.trajectory,
        ..SampleOptions::default()
    };
    let default_num = if pipe.source().is_diffusers() && args.config.is_none() { 16 } else { pipe.config().train.num_samples };
    let mut seeds = match &args.seeds {
        Some(list) => parse_seeds(list)?,
        None => (0..args.num.unwrap_or(default_num) as u64).map(|i| args.seed + i).collect(),
    };
    if let Some(spec) = &args.shard {
        seeds = shard(&seeds, spec)?;
    }
    let job = SampleJob {
        checkpoint: args.checkpoint,
        weights,
        seeds,
        batch_size: args.batch.unwrap_or(pipe.defaults.batch_size),
        init_noise: args.init_noise,
        from: args.from.zip(args.strength),
        inpaint: args.inpaint.zip(args.mask).map(|(image, mask)| ddpm_train::sample_job::Inpaint {
            image,
            mask,
            repaint: ddpm_core::RePaint { jump_length: args.jump_length, resample: args.resample },
        }),
        save_npy: args.save_npy.clone(),
        out_dir: args.out,
        progress: !args.common.quiet,
    };
    let report = write_samples(&pipe, &job, &overrides)?;
    println!("{} samples in {:.1} s; grid {}", report.count, report.seconds, report.grid.display());
    if args.trajectory {
        println!("sampling trajectory: {}", report.grid.with_file_name("trajectory.png").display());
    }
    if let Some(p) = args.save_npy {
        println!("samples saved to {}", p.display());
    }
    Ok(())
}

fn export(args: ExportArgs) -> Result<(), TrainError> {
    let format = args.to.parse::<ExportFormat>()?;
    let s = &args.source;
    let pipe = open_pipeline(&args.checkpoint, s.config.as_deref(), &s.common, s.weights.parse::<Weights>()?)?;
    pipe.export(format, &args.out)?;
    let how = match format {
        ExportFormat::Lucidrains => "load it with: unet.load_state_dict(safetensors.torch.load_file(PATH))",
        ExportFormat::Diffusers => "load it with: DDPMPipeline.from_pretrained(PATH)",
        ExportFormat::Safetensors => "load it with: ddpm-train sample --checkpoint PATH --config CONFIG",
    };
    println!("wrote {}; {how}", args.out.display());
    Ok(())
}

fn import(args: ImportArgs) -> Result<(), TrainError> {
    let s = &args.source;
    let pipe = open_pipeline(&args.from, s.config.as_deref(), &s.common, s.weights.parse::<Weights>()?)?;
    pipe.import_to(&args.out)?;
    println!("wrote the checkpoint {}; sample it with: ddpm-train sample --checkpoint {} --out samples/", args.out.display(), args.out.display());
    Ok(())
}

fn run_bench(args: BenchArgs) -> Result<(), TrainError> {
    let base = args.common.overrides();
    let opts = BenchOptions { warmup: args.warmup, iters: args.iters };
    if !(args.sweep || !args.batches.is_empty() || !args.sizes.is_empty()) {
        let report = bench(&load_config(&args.config, &base)?, opts)?;
        match args.json {
            true => println!("{}", serde_json::to_string(&report).expect("report serialises")),
            false => println!("{}", report.table()),
        }
        return Ok(());
    }
    let images = ddpm_train::data::item_shape(&load_config(&args.config, &base)?.data)?.len() == 3;
    let batches = if args.batches.is_empty() { vec![1, 8, 16, 32, 64] } else { args.batches.clone() };
    let sizes: Vec<Option<usize>> = match (images, args.sizes.is_empty()) {
        (true, true) => vec![Some(32), Some(64)],
        (true, false) => args.sizes.iter().copied().map(Some).collect(),
        (false, true) => vec![None],
        (false, false) => {
            return Err(TrainError::config("--sizes", format!("{} does not hold image data; sweep its batch size only (--batches)", args.config.display())));
        }
    };
    if !args.json {
        println!("{}", BenchReport::sweep_header());
    }
    for size in sizes {
        for &batch in &batches {
            let mut set = base.clone();
            set.push(format!("train.batch_size={batch}"));
            if let Some(size) = size {
                set.push(format!("data.image_size={size}"));
            }
            let report = bench(&load_config(&args.config, &set)?, opts)?;
            match args.json {
                true => println!("{}", serde_json::to_string(&report).expect("report serialises")),
                false => println!("{}", report.sweep_row()),
            }
        }
    }
    Ok(())
}

fn run_classifier(args: ClassifierArgs) -> Result<(), TrainError> {
    let cfg = load_config(&args.config, &args.common.overrides())?;
    let (folder, info) = ddpm_train::classifier::train_classifier(&cfg, !args.common.quiet)?;
    let acc: Vec<String> = info.accuracy.iter().map(|(t, a)| format!("t={t}: {:.1}%", 100.0 * a)).collect();
    println!(
        "classifier ({} classes, {} steps) -> {}; accuracy {}\nguide with: ddpm-train sample --checkpoint ... --classifier-scale 2 --class 0",
        info.num_classes,
        info.steps,
        folder.display(),
        acc.join(", ")
    );
    Ok(())
}

fn run_plot(args: PlotArgs) -> Result<(), TrainError> {
    for path in ddpm_train::plot::write_run_plots(&args.run)? {
        println!("{}", path.display());
    }
    Ok(())
}

fn run_post_hoc(args: PostHocArgs) -> Result<(), TrainError> {
    let job = ddpm_train::post_hoc::PostHocJob { run_dir: args.run, sigma_rel: args.sigma_rel, step: args.step, out_dir: args.out };
    let report = ddpm_train::post_hoc::reconstruct(&job)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serialises"));
    } else {
        println!(
            "EMA sigma_rel {} (gamma {:.3}) at step {} from {} stored averages (profile error {:.2e}) -> {}\nsample it with: ddpm-train sample --checkpoint {} --num 16 --out samples/",
            report.sigma_rel,
            report.gamma,
            report.step,
            report.shares.len(),
            report.relative_error,
            report.out_dir.display(),
            report.out_dir.display()
        );
    }
    Ok(())
}

fn run_nll(args: NllArgs) -> Result<(), TrainError> {
    let Some(config) = args.config.clone().or_else(|| run_config_of(&args.checkpoint)) else {
        return Err(TrainError::config("--config", format!("{} has no saved config; give --config", args.checkpoint.display())));
    };
    let cfg = load_config(&config, &args.common.overrides())?;
    let report = ddpm_train::nll::nll(&cfg, args.checkpoint.clone(), args.weights.parse::<Weights>()?, args.num, args.seed, !args.json && !args.common.quiet)?;
    if let Some(run) = ddpm_train::nll::record_in_run(&args.checkpoint, &report)? {
        tracing::info!("recorded in {} (nll.png)", run.join("metrics.jsonl").display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serialises"));
    } else {
        println!(
            "NLL <= {:.4} +- {:.4} bits/dim over {} items (prior term {:.5}; {:.1} s)",
            report.bits_per_dim, report.std_error, report.items, report.prior_bits_per_dim, report.seconds
        );
    }
    Ok(())
}
