//! `ddpm-train`: train a diffusion model from a TOML config, and sample from its checkpoints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ddpm_train::{RunOptions, load_config};

#[derive(Parser, Debug)]
#[command(name = "ddpm-train", version, about = "Train denoising diffusion models and sample from them", args_conflicts_with_subcommands = true)]
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
    /// Draw samples from a checkpoint into a PNG.
    Sample(SampleArgs),
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// The TOML config (see configs/).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set train.lr=1e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Device: flex (default), cpu, wgpu, vulkan, metal, cuda[:N], rocm[:N]; overrides run.device.
    #[arg(long)]
    device: Option<String>,
    /// Continue from the newest complete checkpoint of the run folder (`--resume` or
    /// `--resume latest`), or from the checkpoint folder given.
    #[arg(long, value_name = "CHECKPOINT", num_args = 0..=1, default_missing_value = "latest")]
    resume: Option<PathBuf>,
    /// Stop after the first optimiser step (checks the whole pipeline quickly).
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
struct SampleArgs {
    /// The run's config (the run folder holds the resolved one as config.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// A checkpoint folder (runs/NAME/checkpoints/step-NNNNNNN).
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Number of samples (default: train.num_samples).
    #[arg(long)]
    num: Option<usize>,
    /// ddpm or ddim (default: sample.sampler, ddim).
    #[arg(long)]
    sampler: Option<String>,
    /// DDIM steps (default: sample.steps, 50).
    #[arg(long)]
    steps: Option<usize>,
    /// DDIM eta (default: sample.eta, 0).
    #[arg(long)]
    eta: Option<f64>,
    /// Seed of the sampling noise (default: run.seed).
    #[arg(long)]
    seed: Option<u64>,
    /// ema (default) or model.
    #[arg(long, default_value = "ema")]
    weights: String,
    /// Output PNG.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Device (default: run.device).
    #[arg(long)]
    device: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Sample(args)) => sample(args),
        Some(Command::Train(args)) => train(args),
        None => train(cli.train),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn train(args: TrainArgs) -> Result<(), ddpm_train::TrainError> {
    let Some(path) = args.config else {
        return Err(ddpm_train::TrainError::config("--config", "give a config file, e.g. --config configs/quickstart.toml"));
    };
    let mut set = args.set;
    if let Some(d) = args.device {
        set.push(format!("run.device=\"{d}\""));
    }
    let cfg = load_config(&path, &set)?;
    let resume = match args.resume {
        None => None,
        Some(p) if p.as_os_str() == "latest" => Some(ddpm_train::checkpoint::latest(&cfg.run.out_dir)?),
        Some(p) => Some(p),
    };
    eprintln!("training {} -> {}", path.display(), cfg.run.out_dir.display());
    let summary = ddpm_train::run(&cfg, &RunOptions { resume, dry_run: args.dry_run, progress: true, stop_after: None })?;
    eprintln!(
        "done: {} steps in {:.1} s, loss {:.4}; samples in {}",
        summary.steps,
        summary.seconds,
        summary.final_loss,
        cfg.run.out_dir.join("samples").display()
    );
    Ok(())
}

fn sample(args: SampleArgs) -> Result<(), ddpm_train::TrainError> {
    let mut set = Vec::new();
    if let Some(n) = args.num {
        set.push(format!("train.num_samples={n}"));
    }
    if let Some(s) = args.sampler {
        set.push(format!("sample.sampler=\"{s}\""));
    }
    if let Some(s) = args.steps {
        set.push(format!("sample.steps={s}"));
    }
    if let Some(e) = args.eta {
        set.push(format!("sample.eta={e}"));
    }
    if let Some(s) = args.seed {
        set.push(format!("run.seed={s}"));
    }
    if let Some(d) = args.device {
        set.push(format!("run.device=\"{d}\""));
    }
    let ema = match args.weights.as_str() {
        "ema" => true,
        "model" => false,
        other => return Err(ddpm_train::TrainError::config("--weights", format!("`{other}`: use ema or model"))),
    };
    let cfg = load_config(&args.config, &set)?;
    ddpm_train::sample_checkpoint(&cfg, &args.checkpoint, ema, &args.out)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
