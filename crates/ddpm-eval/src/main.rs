//! `ddpm-eval`: the feature-space metrics from the command line.
//!
//! Inputs are feature files (`.npy`, `[N, d]`, float32 or float64, one row per sample) and, for
//! FID, pytorch-fid statistics (`.npz` with `mu` and `sigma`). Every command prints one
//! human-readable line, or with `--json` one JSON object, on stdout; progress goes to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ddpm_eval::progress::ProgressMode;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use ddpm_eval::frechet::{FeatureStats, frechet_terms};
use ddpm_eval::kid::{KidOptions, kid_with_progress};
use ddpm_eval::prdc::{DEFAULT_NEAREST_K, prdc_with_progress};
use ddpm_eval::stats::{FeatureArray, load_or_compute_stats, read_features_npy, write_stats_npz};
use ddpm_eval::toy::{ModeSet, energy_distance, mode_coverage};
use ddpm_eval::{EvalError, Result};

#[derive(Parser)]
#[command(
    name = "ddpm-eval",
    version,
    about = "Feature-space metrics for generative models: FID, FLD, precision/recall/density/coverage, KID, toy-set metrics",
    long_about = "Feature-space metrics for generative models: FID (Frechet distance), precision/recall/density/coverage, \
                  KID, and the 2-D toy-set metrics.\n\n\
                  Inputs are feature files (.npy [N, d], float32 or float64, one row per sample) and, for FID, \
                  pytorch-fid statistics (.npz with `mu` [d] and `sigma` [d, d]). `fid` and `stats` also take \
                  folders of images, which go through pytorch-fid's Inception-v3 (2048-d pool features; \
                  --weights, $DDPM_INCEPTION_WEIGHTS, or downloaded once into ~/.cache/ddpm-rs/weights). `fld` \
                  trains a LeNet-5 on labelled real images and needs no download. Bits/dim of a trained model: \
                  `ddpm-train nll` (it reads the model's checkpoint and config).\n\n\
                  Each command prints one line, or with --json one JSON object, on stdout."
)]
struct Cli {
    /// Print one JSON object on stdout instead of a human-readable line.
    #[arg(long, global = true)]
    json: bool,
    /// No progress output (results are still printed).
    #[arg(long, global = true)]
    quiet: bool,
    /// Without a terminal, print a progress line (on stderr) at most every this many seconds.
    #[arg(long, global = true, default_value_t = 30.0)]
    progress_seconds: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Frechet distance between two feature sets or statistics (FID when they are Inception pool features).
    Fid(FidArgs),
    /// Precision, recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020) of fake features against real ones.
    Prdc(PrdcArgs),
    /// Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets.
    Kid(KidArgs),
    /// Mean and covariance of a feature file, written as pytorch-fid statistics (.npz with mu, sigma).
    Stats(StatsArgs),
    /// Frechet LeNet Distance: the Frechet distance of LeNet-5 features (84-d), with a classifier trained here on
    /// the labelled real images (class sub-folders) and saved for reuse. Needs no download.
    Fld(FldArgs),
    /// 2-D toy-set metrics: mode coverage on gaussian8/gaussian25 and the energy distance to a reference sample.
    Toy(ToyArgs),
}

#[derive(Args)]
struct FidArgs {
    /// Real set: a folder of images, features (.npy [N, d]) or statistics (.npz with mu, sigma, e.g. from
    /// pytorch-fid --save-stats or `ddpm-eval stats`).
    #[arg(long, value_name = "DIR|FEATURES.npy|STATS.npz")]
    real: PathBuf,
    /// Generated set: a folder of images, features (.npy [N, d]) or statistics (.npz).
    #[arg(long, value_name = "DIR|FEATURES.npy|STATS.npz")]
    fake: PathBuf,
    #[command(flatten)]
    inception: InceptionArgs,
}

/// How image folders become features: pytorch-fid's Inception-v3 (2048-d pool features).
#[derive(Args)]
struct InceptionArgs {
    /// Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth or the same as .safetensors.
    /// Default: $DDPM_INCEPTION_WEIGHTS, else the file in PyTorch hub's cache (where pytorch-fid keeps
    /// it) or ours (~/.cache/ddpm-rs/weights), else downloaded there once (SHA-256 checked).
    /// Needed only for image folders.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Never download the Inception weights; fail with instructions instead.
    #[arg(long)]
    no_download: bool,
    /// Images per network call.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Device for the network: flex, wgpu, vulkan, cuda:N, ...
    #[arg(long, default_value = "flex")]
    device: String,
}

impl InceptionArgs {
    /// A feature extractor for image folders; the network is loaded on first use.
    fn extractor(&self, progress: ProgressMode) -> impl Fn(&Path) -> Result<FeatureArray> + '_ {
        let network = std::cell::OnceCell::new();
        move |dir: &Path| {
            let device = ddpm_io::device::parse_device(&self.device)?;
            let model = match network.get() {
                Some(m) => m,
                None => {
                    let weights = ddpm_eval::inception::WeightsLookup::from_env(self.weights.as_deref(), !self.no_download).resolve()?;
                    let _ = network.set(ddpm_eval::inception::InceptionV3::from_file(&weights, &device)?);
                    network.get().expect("just set")
                }
            };
            let (values, rows) = ddpm_eval::inception::folder_features(model, dir, self.batch, &device, progress)?;
            let dim = values.len().checked_div(rows).unwrap_or(0);
            Ok(FeatureArray { values: values.into_iter().map(f64::from).collect(), rows, dim })
        }
    }
}

#[derive(Args)]
struct PrdcArgs {
    /// Real features (.npy [N, d]).
    #[arg(long, value_name = "FEATURES.npy")]
    real: PathBuf,
    /// Generated features (.npy [M, d]).
    #[arg(long, value_name = "FEATURES.npy")]
    fake: PathBuf,
    /// Neighbour whose distance is a sample's k-NN radius.
    #[arg(long, default_value_t = DEFAULT_NEAREST_K)]
    k: usize,
}

#[derive(Args)]
struct KidArgs {
    /// Real features (.npy [N, d]).
    #[arg(long, value_name = "FEATURES.npy")]
    real: PathBuf,
    /// Generated features (.npy [M, d]).
    #[arg(long, value_name = "FEATURES.npy")]
    fake: PathBuf,
    /// Number of random subsets averaged.
    #[arg(long, default_value_t = KidOptions::default().subsets)]
    subsets: usize,
    /// Samples drawn (without replacement) from each set per subset; at most the size of the smaller set.
    #[arg(long, default_value_t = KidOptions::default().subset_size)]
    subset_size: usize,
    /// Seed of the subset draws.
    #[arg(long, default_value_t = KidOptions::default().seed)]
    seed: u64,
}

#[derive(Args)]
struct StatsArgs {
    /// A folder of images (through Inception-v3) or features (.npy [N, d]).
    #[arg(long, value_name = "DIR|FEATURES.npy")]
    features: PathBuf,
    /// Statistics file to write (.npz with mu, sigma and n; pytorch-fid reads it). Compute it once for a
    /// data set and pass it to `fid --real`.
    #[arg(long, value_name = "STATS.npz")]
    out: PathBuf,
    /// Also write the features of an image folder (.npy [N, 2048], float32), e.g. for prdc and kid.
    #[arg(long, value_name = "FEATURES.npy")]
    save_features: Option<PathBuf>,
    #[command(flatten)]
    inception: InceptionArgs,
}

#[derive(Args)]
struct FldArgs {
    /// Real images: a folder (images directly in it, or one sub-folder per class) or LeNet statistics (.npz
    /// written by --save-real-stats with the same classifier).
    #[arg(long, value_name = "DIR|STATS.npz")]
    real: PathBuf,
    /// Generated images: a folder of images (sub-folders are read as for --real) or LeNet statistics (.npz).
    #[arg(long, value_name = "DIR|STATS.npz")]
    fake: PathBuf,
    /// The LeNet-5 classifier (.safetensors). Reused when the file exists; otherwise trained on --train
    /// (default: --real) and saved here. FLD values compare only under the same classifier.
    #[arg(long, value_name = "FILE")]
    classifier: PathBuf,
    /// Labelled images to train a new classifier on: one sub-folder per class, as torchvision's ImageFolder.
    /// Default: --real.
    #[arg(long, value_name = "DIR")]
    train: Option<PathBuf>,
    /// Epochs of classifier training (Adam, lr 1e-3, batch 128, 10% held out for the accuracy).
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Batch size of classifier training.
    #[arg(long, default_value_t = 128)]
    train_batch: usize,
    /// Channels of a new classifier: 1 or 3. Default: 1 when every training image is grey, else 3.
    #[arg(long)]
    channels: Option<usize>,
    /// Side every image is resized to for a new classifier.
    #[arg(long, default_value_t = 28)]
    image_size: usize,
    /// Seed of a new classifier's initialisation and batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the statistics of the real images' features here (.npz), to pass as --real next time.
    #[arg(long, value_name = "STATS.npz")]
    save_real_stats: Option<PathBuf>,
    /// Images per network call.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Device: flex, wgpu, vulkan, cuda:N, ...
    #[arg(long, default_value = "flex")]
    device: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum ToySet {
    /// 8 modes on the unit circle, std 0.05.
    Gaussian8,
    /// 5 x 5 grid on [-1, 1]^2, std 0.04.
    Gaussian25,
}

#[derive(Args)]
struct ToyArgs {
    /// Generated 2-D samples (.npy [N, 2]).
    #[arg(long, value_name = "SAMPLES.npy")]
    samples: PathBuf,
    /// Mixture whose mode coverage to measure.
    #[arg(long, value_enum, required_unless_present = "reference")]
    set: Option<ToySet>,
    /// Reference samples (.npy [M, 2]) for the energy distance (e.g. the training data).
    #[arg(long, value_name = "REFERENCE.npy")]
    reference: Option<PathBuf>,
    /// Samples within 3 std a mode needs to count as covered [default: 1% of its expected count, at least 1].
    #[arg(long)]
    min_count: Option<usize>,
}

fn main() -> ExitCode {
    // Each batch frees its activations and allocates them again: reuse the memory, no page faults.
    ddpm_kernels::keep_freed_memory();
    let cli = Cli::parse();
    ddpm_eval::progress::init_diagnostics();
    let progress = ProgressMode::new(cli.quiet, cli.progress_seconds);
    // On a rayon pool thread, so that parallel ops split with it (see `ddpm_kernels::on_workers`).
    let result = ddpm_kernels::on_workers(|| match &cli.command {
        Command::Fid(args) => fid(args, cli.json, progress),
        Command::Prdc(args) => prdc(args, cli.json),
        Command::Kid(args) => kid(args, cli.json),
        Command::Stats(args) => stats(args, cli.json, progress),
        Command::Toy(args) => toy(args, cli.json),
        Command::Fld(args) => fld(args, cli.json),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ddpm-eval: error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn fid(args: &FidArgs, json: bool, progress: ProgressMode) -> Result<()> {
    let extractor = args.inception.extractor(progress);
    let spinner = spinner(format!("statistics of {}", args.real.display()));
    let real = load_or_compute_stats(&args.real, Some(&extractor))?;
    spinner.set_message(format!("statistics of {}", args.fake.display()));
    let fake = load_or_compute_stats(&args.fake, Some(&extractor))?;
    spinner.set_message("Frechet distance");
    let terms = frechet_terms(&real, &fake).map_err(|e| EvalError::input(format!("{} vs {}: {e}", args.real.display(), args.fake.display())))?;
    spinner.finish_and_clear();
    let fid = terms.distance();
    if json {
        let describe = |path: &Path, stats: &FeatureStats| json!({ "path": path, "n": stats.n, "d": stats.d });
        print_json(json!({
            "metric": "fid",
            "fid": fid,
            "terms": terms,
            "real": describe(&args.real, &real),
            "fake": describe(&args.fake, &fake),
        }));
    } else {
        let describe = |stats: &FeatureStats| if stats.n > 0 { format!("{} x {}", stats.n, stats.d) } else { format!("d = {}", stats.d) };
        println!(
            "FID {fid:.6} (real: {}, {}; fake: {}, {})",
            args.real.display(),
            describe(&real),
            args.fake.display(),
            describe(&fake)
        );
    }
    Ok(())
}

fn prdc(args: &PrdcArgs, json: bool) -> Result<()> {
    let (real, fake) = read_feature_pair(&args.real, &args.fake)?;
    let bar = progress_bar("prdc distance tiles");
    let result = prdc_with_progress(&real.values, &fake.values, real.dim, args.k, &bar)?;
    bar.finish_and_clear();
    if json {
        print_json(json!({ "metric": "prdc", "real": args.real, "fake": args.fake, "dim": real.dim, "result": result }));
    } else {
        println!(
            "precision {:.4} recall {:.4} density {:.4} coverage {:.4} (k = {}; {} real, {} fake, d = {})",
            result.precision, result.recall, result.density, result.coverage, result.nearest_k, result.real_count, result.fake_count, real.dim
        );
    }
    Ok(())
}

fn kid(args: &KidArgs, json: bool) -> Result<()> {
    let (real, fake) = read_feature_pair(&args.real, &args.fake)?;
    let options = KidOptions { subsets: args.subsets, subset_size: args.subset_size, seed: args.seed };
    let bar = progress_bar("kid subsets");
    let result = kid_with_progress(&real.values, &fake.values, real.dim, &options, &bar)?;
    bar.finish_and_clear();
    if json {
        print_json(json!({ "metric": "kid", "real": args.real, "fake": args.fake, "dim": real.dim, "result": result }));
    } else {
        println!(
            "KID {:.6} ± {:.6} ({} subsets of {}, seed {}; {} real, {} fake, d = {})",
            result.mean, result.std, options.subsets, options.subset_size, options.seed, real.rows, fake.rows, real.dim
        );
    }
    Ok(())
}

fn stats(args: &StatsArgs, json: bool, progress: ProgressMode) -> Result<()> {
    let spinner = spinner(format!("statistics of {}", args.features.display()));
    let features = if args.features.is_dir() {
        let features = args.inception.extractor(progress)(&args.features)?;
        if let Some(path) = &args.save_features {
            let values: Vec<f32> = features.values.iter().map(|&v| v as f32).collect();
            ddpm_eval::stats::write_features_npy(path, &values, features.rows, features.dim)?;
        }
        features
    } else {
        read_features_npy(&args.features)?
    };
    let stats = FeatureStats::from_matrix(&features.matrix(&args.features.display().to_string())?)?;
    write_stats_npz(&args.out, &stats)?;
    spinner.finish_and_clear();
    if json {
        print_json(json!({ "metric": "stats", "features": args.features, "out": args.out, "n": stats.n, "d": stats.d }));
    } else {
        println!("wrote {} (mu, sigma of {} x {} features from {})", args.out.display(), stats.n, stats.d, args.features.display());
    }
    Ok(())
}

fn fld(args: &FldArgs, json: bool) -> Result<()> {
    use ddpm_eval::fld::{
        LeNet5Config, LeNetTrainingConfig, lenet_stats, load_lenet, read_image_folder, save_lenet,
        train_lenet,
    };
    let device = ddpm_io::device::parse_device(&args.device)?;
    let trained = if args.classifier.is_file() {
        load_lenet(&args.classifier, &device)?
    } else {
        let dir = args.train.as_ref().unwrap_or(&args.real);
        if !dir.is_dir() {
            return Err(EvalError::file(
                &args.classifier,
                format!(
                    "no such classifier, and {} is not a folder of labelled images to train one on; give --train DIR",
                    dir.display()
                ),
            ));
        }
        let spinner = spinner(format!("reading {}", dir.display()));
        let images = read_image_folder(dir)?;
        spinner.finish_and_clear();
        let channels = args
            .channels
            .unwrap_or(if images.is_grey() { 1 } else { 3 });
        let data = images.labelled(dir)?;
        let config = LeNet5Config::new()
            .with_channels(channels)
            .with_num_classes(data.num_classes)
            .with_image_size(args.image_size);
        let training = LeNetTrainingConfig::new()
            .with_epochs(args.epochs)
            .with_batch_size(args.train_batch)
            .with_seed(args.seed);
        let trained = train_lenet(&data, &config, &training, &device, true)?;
        save_lenet(&trained, &args.classifier)?;
        tracing::info!(
            "trained LeNet-5 on {} ({} images, {} classes): held-out accuracy {:.4}; saved {}",
            dir.display(),
            data.shape[0],
            data.num_classes,
            trained.accuracy,
            args.classifier.display()
        );
        trained
    };
    let stats_of = |path: &Path| -> Result<FeatureStats> {
        if path.is_dir() {
            let spinner = spinner(format!("LeNet features of {}", path.display()));
            let images = read_image_folder(path)?;
            let stats = lenet_stats(&trained, &images.values, images.shape, args.batch, &device)?;
            spinner.finish_and_clear();
            Ok(stats)
        } else {
            let stats = ddpm_eval::stats::read_stats_npz(path)?;
            if stats.d != ddpm_eval::fld::FEATURE_DIM {
                return Err(EvalError::file(
                    path,
                    format!(
                        "holds {}-d statistics; FLD's LeNet features are 84-d (write them with --save-real-stats)",
                        stats.d
                    ),
                ));
            }
            Ok(stats)
        }
    };
    let real = stats_of(&args.real)?;
    if let Some(out) = &args.save_real_stats {
        write_stats_npz(out, &real)?;
    }
    let fake = stats_of(&args.fake)?;
    let terms = frechet_terms(&real, &fake).map_err(|e| {
        EvalError::input(format!(
            "{} vs {}: {e}",
            args.real.display(),
            args.fake.display()
        ))
    })?;
    let fld = terms.distance();
    if json {
        print_json(json!({
            "metric": "fld",
            "fld": fld,
            "terms": terms,
            "classifier": { "path": args.classifier, "heldout_accuracy": trained.accuracy, "channels": trained.config.channels,
                            "num_classes": trained.config.num_classes, "image_size": trained.config.image_size },
            "real": { "path": args.real, "n": real.n },
            "fake": { "path": args.fake, "n": fake.n },
        }));
    } else {
        println!(
            "FLD {fld:.6} (real: {}, {} images; fake: {}, {} images; classifier {}, held-out accuracy {:.4})",
            args.real.display(),
            real.n,
            args.fake.display(),
            fake.n,
            args.classifier.display(),
            trained.accuracy
        );
    }
    Ok(())
}

fn toy(args: &ToyArgs, json: bool) -> Result<()> {
    let samples = read_points(&args.samples)?;
    let coverage = match args.set {
        Some(set) => {
            let modes = match set {
                ToySet::Gaussian8 => ModeSet::gaussian8(),
                ToySet::Gaussian25 => ModeSet::gaussian25(),
            };
            Some(mode_coverage(&samples.values, &modes, args.min_count)?)
        }
        None => None,
    };
    let energy = match &args.reference {
        Some(path) => Some(energy_distance(&samples.values, &read_points(path)?.values, 2)?),
        None => None,
    };
    let set_name = args.set.and_then(|s| s.to_possible_value()).map(|v| v.get_name().to_owned());
    if json {
        print_json(json!({
            "metric": "toy",
            "samples": args.samples,
            "n": samples.rows,
            "set": set_name,
            "mode_coverage": coverage,
            "reference": args.reference,
            "energy_distance": energy,
        }));
    } else {
        let mut parts = Vec::new();
        if let (Some(c), Some(name)) = (&coverage, &set_name) {
            parts.push(format!(
                "{name}: {}/{} modes hit ({:.4}), {:.4} of samples within 3 std of a mode (min count {})",
                c.modes_hit, c.modes_total, c.mode_coverage, c.near_mode_share, c.min_count
            ));
        }
        if let Some(e) = energy {
            parts.push(format!("energy distance {e:.6}"));
        }
        println!("{} ({} samples)", parts.join("; "), samples.rows);
    }
    Ok(())
}

/// Reads two feature files that must share their dimension.
fn read_feature_pair(real: &Path, fake: &Path) -> Result<(FeatureArray, FeatureArray)> {
    let (real_features, fake_features) = (read_features_npy(real)?, read_features_npy(fake)?);
    if real_features.dim != fake_features.dim {
        return Err(EvalError::input(format!(
            "{} has {}-d features but {} has {}-d ones; compare features of the same network layer",
            real.display(),
            real_features.dim,
            fake.display(),
            fake_features.dim
        )));
    }
    Ok((real_features, fake_features))
}

/// Reads `[N, 2]` points.
fn read_points(path: &Path) -> Result<FeatureArray> {
    let points = read_features_npy(path)?;
    if points.dim != 2 {
        return Err(EvalError::file(path, format!("holds {}-d rows; the toy metrics take 2-D points [N, 2]", points.dim)));
    }
    Ok(points)
}

fn progress_bar(message: &'static str) -> ProgressBar {
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ETA {eta}").expect("valid template").progress_chars("=> ");
    ProgressBar::new(0).with_style(style).with_message(message)
}

/// A spinner on stderr for work without countable steps (hidden when stderr is not a terminal).
fn spinner(message: String) -> ProgressBar {
    let spinner = ProgressBar::new_spinner().with_message(message);
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}

fn print_json(value: serde_json::Value) {
    println!("{value}");
}
