//! The `latentcam` command line. Parsing and exit codes only: the work is in the library.
//!
//! Exit codes: 0 ok, 2 bad input or configuration (the message names the bad thing), 1 internal failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use latentcam::config::{
    Mode, ModelConfig, ParamsConfig, PipelineConfig, SinkConfig, SourceConfig, View, display_available,
};
use latentcam::diffusion::scheduler::Lcm;
use latentcam::diffusion::{Diffusion, Params};
use latentcam::imaging::{self, Fit, OutputImage};
use latentcam::infer::{ExecutionProvider, Runtime, RuntimeOptions};
use latentcam::model::ModelFolder;
use latentcam::pipeline::stats::Snapshot;
use latentcam::pipeline::{self, BuildOptions, StopFlag};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "latentcam", version, about = "Real-time diffusion filter for video and webcams")]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct RuntimeArgs {
    /// ONNX Runtime library (libonnxruntime.so); default: .ort/ of this checkout (scripts/setup.sh).
    #[arg(long, env = "LATENTCAM_ORT_LIB", global = true, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    /// Where models run: cpu, cuda, tensorrt, or auto (the best this binary and library support, logged).
    #[arg(long, env = "LATENTCAM_EP", global = true, default_value = "auto", value_parser = parse_ep)]
    ep: ExecutionProvider,
    /// Threads inside each model operator (default: one per core).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
}

fn parse_ep(s: &str) -> Result<ExecutionProvider, String> {
    s.parse().map_err(|e: latentcam::Error| e.to_string())
}

#[derive(Subcommand)]
enum Command {
    /// Run img2img on one still image (PNG/JPEG in, PNG/JPEG out).
    Img2img(Img2ImgArgs),
    /// Print the LCM schedule (timesteps, alphas_cumprod, c_skip, c_out per step) as JSON.
    Schedule(ScheduleArgs),
    /// Model folders: check them.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Time each stage (text encoder, VAE encode, UNet step, VAE decode, whole frame).
    Bench(BenchArgs),
    /// Run a pipeline file (source -> diffusion -> sinks) until its source ends or Ctrl-C.
    Run(RunArgs),
    /// Check a pipeline file without running it.
    Check(CheckArgs),
    /// Video to video: every input frame becomes one output frame, same timestamps, audio kept.
    Convert(ConvertArgs),
    /// List cameras and v4l2loopback outputs.
    Devices,
}

#[derive(Args)]
struct RunArgs {
    pipeline: PathBuf,
    /// Override a value of the file: params.prompt="a cat", sink.0.path=out.mp4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Write the final statistics (fps, per-stage ms, drops, latency p50/p95) here as JSON.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    pipeline: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(Args)]
struct ConvertArgs {
    /// A video file (anything GStreamer decodes).
    input: PathBuf,
    /// .mp4, .mkv or .mov (H.264).
    output: PathBuf,
    #[command(flatten)]
    diffusion: DiffusionArgs,
    /// Working size WxH (default: the input's size cropped to the model's size multiple).
    #[arg(long, value_name = "WxH")]
    size: Option<String>,
    /// x264 quality, 0-50 (lower is better).
    #[arg(long, default_value_t = 21)]
    quality: u32,
    /// Do not carry the audio over.
    #[arg(long)]
    no_audio: bool,
    /// Write the final statistics here as JSON.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Load every file of each model folder, check the I/O contracts, print a summary.
    Check {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
}

/// Options shared by every command that runs diffusion.
#[derive(Args, Clone)]
struct DiffusionArgs {
    /// Model folder (model.toml + ONNX files), or a name looked up in ./models and the checkout's models/.
    /// Default: the first of sd-turbo, sd15-lcm-lora, lcm-dreamshaper-v7 there, else the tiny test model
    /// tiny-sd-turbo.
    #[arg(long, env = "LATENTCAM_MODEL", value_name = "DIR")]
    model: Option<PathBuf>,
    /// What to turn the image into.
    #[arg(long, default_value = "")]
    prompt: String,
    /// What to steer away from (classifier-free guidance only).
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Denoising steps, 1 to 8 (default: the model's).
    #[arg(long)]
    steps: Option<usize>,
    /// How much of the input to replace, 0 to 1; 0 runs the VAE only (default: the model's).
    #[arg(long, conflicts_with = "timesteps", allow_negative_numbers = true)]
    strength: Option<f64>,
    /// Guidance scale, 0 to 10; 1.0-2.5 is the useful range (default: the model's).
    #[arg(long, allow_negative_numbers = true)]
    guidance: Option<f64>,
    /// Noise seed: the same seed gives the same output.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Explicit descending timesteps, e.g. 999,499 (replaces --steps/--strength).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    timesteps: Option<Vec<u32>>,
}

impl DiffusionArgs {
    fn folder(&self) -> anyhow::Result<ModelFolder> {
        let dir = pipeline::build::model_folder(self.model.as_deref())?;
        Ok(ModelFolder::open(&dir)?)
    }

    fn params_config(&self) -> ParamsConfig {
        ParamsConfig {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps,
            strength: self.strength,
            guidance: self.guidance,
            seed: self.seed,
            timesteps: self.timesteps.clone(),
        }
    }

    fn params(&self, folder: &ModelFolder) -> Params {
        self.params_config().resolve(folder)
    }
}

#[derive(Args)]
struct Img2ImgArgs {
    input: PathBuf,
    output: PathBuf,
    #[command(flatten)]
    diffusion: DiffusionArgs,
    /// Resize to WxH (cover + center crop) instead of center-cropping to the model's size multiple.
    #[arg(long, value_name = "WxH")]
    size: Option<String>,
}

#[derive(Args)]
struct ScheduleArgs {
    /// Denoising steps, 1 to 8.
    #[arg(long, default_value_t = 1)]
    steps: usize,
    /// Strength, 0 to 1 (LCM img2img rule).
    #[arg(long, default_value_t = 0.5, conflicts_with = "timesteps", allow_negative_numbers = true)]
    strength: f64,
    /// Explicit descending timesteps instead of steps/strength.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    timesteps: Option<Vec<u32>>,
    /// Take the scheduler config from this model folder (default: diffusers' LCMScheduler defaults).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    diffusion: DiffusionArgs,
    /// Image sizes to time, WxH (repeat or comma-separate).
    #[arg(long = "size", value_delimiter = ',', default_values_t = ["256x256".to_string(), "512x512".to_string()])]
    sizes: Vec<String>,
    /// Timed iterations per stage.
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Also write the reports as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Interrupted>() => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e:#}");
            let bad_input = e.chain().any(|c| c.downcast_ref::<latentcam::Error>().is_some_and(|e| e.is_bad_input()));
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "latentcam=info,warn",
        (false, 1) => "latentcam=debug,info",
        _ => "latentcam=trace,debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn runtime(args: &RuntimeArgs) -> anyhow::Result<Runtime> {
    Ok(Runtime::new(RuntimeOptions {
        library: args.ort_lib.clone(),
        execution_provider: args.ep,
        intra_op_threads: args.threads,
    })?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Img2img(args) => img2img(&cli.runtime, args),
        Command::Schedule(args) => schedule(args),
        Command::Models(ModelsCommand::Check { dirs }) => models_check(&cli.runtime, &dirs),
        Command::Bench(args) => bench(&cli.runtime, args),
        Command::Run(args) => run_pipeline(&cli.runtime, args),
        Command::Check(args) => check_pipeline(&args),
        Command::Convert(args) => convert(&cli.runtime, args),
        Command::Devices => devices(),
    }
}

/// Ctrl-C (and SIGTERM) ask the pipeline to stop and finalize its outputs; a second one exits at once.
fn stop_on_signal() -> StopFlag {
    let stop: StopFlag = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("interrupted again: exiting without finalizing");
            std::process::exit(130);
        }
        eprintln!("stopping: finishing the outputs (press Ctrl-C again to quit at once)");
    });
    if let Err(e) = installed {
        tracing::warn!(error = %e, "cannot catch Ctrl-C; outputs may not be finalized when interrupted");
    }
    stop
}

/// Signals an interrupted run that did finalize its outputs: exit code 130, like a shell.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}
impl std::error::Error for Interrupted {}

fn write_stats(path: Option<&Path>, stats: &latentcam::pipeline::stats::Snapshot) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(stats)?)
            .map_err(|e| latentcam::Error::Output { path: path.to_path_buf(), problem: e.to_string() })?;
    }
    Ok(())
}

fn run_pipeline(rt: &RuntimeArgs, args: RunArgs) -> anyhow::Result<()> {
    let config = PipelineConfig::load(&args.pipeline, &args.overrides)?;
    let runtime = runtime(rt)?;
    let built = pipeline::build(&config, &BuildOptions { runtime: &runtime, display: display_available() })?;
    tracing::info!(source = %built.source, model = %built.model, size = ?built.size, mode = ?config.mode, "running");
    let interval = Duration::from_secs_f64(config.stats_interval_s);
    let mut last_log = Instant::now();
    let mut tick = |s: &Snapshot| {
        if !interval.is_zero() && last_log.elapsed() >= interval {
            tracing::info!("{}", s.line());
            last_log = Instant::now();
        }
    };
    let report = pipeline::run(built.parts, stop_on_signal(), &mut tick)?;
    tracing::info!("done: {}", report.stats.line());
    write_stats(args.stats_json.as_deref(), &report.stats)
}

fn check_pipeline(args: &CheckArgs) -> anyhow::Result<()> {
    let config = PipelineConfig::load(&args.pipeline, &args.overrides)?;
    let folder = ModelFolder::open(&pipeline::build::model_folder(config.model.dir.as_deref())?)?;
    let params = config.params.resolve(&folder);
    check_schedule(&folder, &params)?;
    if let Some([w, h]) = config.model.size {
        let multiple = if params.strength == 0.0 && params.timesteps.is_none() { 8 } else { folder.size_multiple };
        if w % multiple != 0 || h % multiple != 0 {
            return Err(latentcam::Error::invalid(
                "size",
                format!("[model] size {w}x{h}: model {} needs multiples of {multiple}", folder.name),
            )
            .into());
        }
    }
    let sinks: Vec<String> = config
        .sinks
        .iter()
        .map(|s| match s.only_when() {
            Some(w) => format!("{} (only when {w:?})", s.kind()),
            None => s.kind().to_string(),
        })
        .collect();
    println!(
        "{}: ok — {:?} mode, source {}, model {}, sinks: {}",
        args.pipeline.display(),
        config.mode,
        config.source.kind(),
        folder.dir.display(),
        sinks.join(", ")
    );
    Ok(())
}

fn convert(rt: &RuntimeArgs, args: ConvertArgs) -> anyhow::Result<()> {
    let size = args.size.as_deref().map(imaging::parse_size).transpose()?;
    if let (Ok(a), Ok(b)) = (args.input.canonicalize(), args.output.canonicalize())
        && a == b
    {
        return Err(latentcam::Error::Output {
            path: args.output.clone(),
            problem: "is the input file: writing it would destroy what is being read".into(),
        }
        .into());
    }
    let d = &args.diffusion;
    let config = PipelineConfig {
        mode: Mode::Offline,
        source: SourceConfig::Gstreamer {
            uri: Some(args.input.display().to_string()),
            pipeline: None,
            audio: !args.no_audio,
        },
        model: ModelConfig { dir: d.model.clone(), size: size.map(|(w, h)| [w, h]) },
        params: d.params_config(),
        sinks: vec![SinkConfig::File {
            path: args.output.clone(),
            view: View::Output,
            audio: !args.no_audio,
            quality: args.quality,
            only_when: None,
        }],
        stats_interval_s: 0.0,
    };
    config.validate().map_err(|problem| latentcam::Error::invalid("convert", problem))?;
    let runtime = runtime(rt)?;
    let built = pipeline::build(&config, &BuildOptions { runtime: &runtime, display: false })?;
    tracing::info!(source = %built.source, model = %built.model, size = ?built.size, "converting");
    let progress = Progress::new(built.total_frames);
    let mut tick = |s: &Snapshot| progress.update(s);
    let report = pipeline::run(built.parts, stop_on_signal(), &mut tick)?;
    progress.finish(&report.stats);
    write_stats(args.stats_json.as_deref(), &report.stats)?;
    let frames = report.stats.frames_delivered.values().copied().max().unwrap_or(0);
    if report.interrupted {
        eprintln!("interrupted: {} holds the first {frames} frames and is playable", args.output.display());
        return Err(Interrupted.into());
    }
    tracing::info!(output = %args.output.display(), frames, "{}", report.stats.line());
    Ok(())
}

/// A progress bar with ETA on a terminal; a plain line every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: Option<u64>,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = match total {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} frames ({msg}, ETA {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress { bar, total, last_line: std::cell::Cell::new(Instant::now()) }
    }

    fn update(&self, s: &Snapshot) {
        let done = s.frames_delivered.values().copied().max().unwrap_or(0);
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(format!("{:.1} fps", s.output_fps));
            }
            None if self.last_line.get().elapsed() >= Duration::from_secs(5) => {
                let of = self.total.map_or(String::new(), |t| format!(" of {t}"));
                eprintln!("converted {done}{of} frames ({:.1} fps)", s.output_fps);
                self.last_line.set(Instant::now());
            }
            None => {}
        }
    }

    fn finish(&self, s: &Snapshot) {
        if let Some(bar) = &self.bar {
            bar.set_position(s.frames_delivered.values().copied().max().unwrap_or(0));
            bar.finish();
        }
    }
}

fn devices() -> anyhow::Result<()> {
    print!("{}", latentcam::devices::report());
    Ok(())
}

/// Validate steps/strength/timesteps against the folder's scheduler before any model loads.
fn check_schedule(folder: &ModelFolder, params: &Params) -> anyhow::Result<Vec<u32>> {
    let lcm = Lcm::new(folder.scheduler.clone());
    Ok(match &params.timesteps {
        Some(t) => {
            lcm.check_timesteps(t)?;
            t.clone()
        }
        None => lcm.timesteps(params.steps, params.strength)?,
    })
}

fn img2img(rt: &RuntimeArgs, args: Img2ImgArgs) -> anyhow::Result<()> {
    // Cheap checks first, so a typo fails before seconds of model loading.
    let output = OutputImage::create(&args.output)?;
    let folder = args.diffusion.folder()?;
    let params = args.diffusion.params(&folder);
    let timesteps = check_schedule(&folder, &params)?;
    let fit = match &args.size {
        Some(s) => {
            let (width, height) = imaging::parse_size(s)?;
            Fit::Resize { width, height }
        }
        None => Fit::CropToMultiple,
    };
    let input = imaging::load_rgb(&args.input)?;
    let multiple = if timesteps.is_empty() { 8 } else { folder.size_multiple };
    let fitted = imaging::fit_image(&input, fit, multiple)?;
    if fitted.dimensions() != input.dimensions() {
        tracing::info!(from = ?input.dimensions(), to = ?fitted.dimensions(), "input fitted to the model's size multiple");
    }

    let runtime = runtime(rt)?;
    let started = Instant::now();
    let mut diffusion = Diffusion::load(&runtime, &folder)?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let prepared = diffusion.prepare(&params)?;
    let tensor = imaging::to_tensor(&fitted);
    let result = diffusion.run(&prepared, tensor.view())?;
    let out_image = imaging::from_tensor(result.view());
    let out_path = output.path().to_path_buf();
    output.write(&out_image)?;
    let t = diffusion.last_times();
    tracing::info!(
        output = %out_path.display(),
        width = out_image.width(),
        height = out_image.height(),
        timesteps = ?prepared.plan.timesteps(),
        load_ms = format!("{load_ms:.0}"),
        vae_encode_ms = format!("{:.1}", t.vae_encode_ms),
        unet_ms = format!("{:.1}", t.unet_ms),
        vae_decode_ms = format!("{:.1}", t.vae_decode_ms),
        "wrote"
    );
    Ok(())
}

#[derive(Serialize)]
struct ScheduleJson {
    timesteps: Vec<u32>,
    alphas_cumprod: Vec<f32>,
    c_skip: Vec<f32>,
    c_out: Vec<f32>,
}

fn schedule(args: ScheduleArgs) -> anyhow::Result<()> {
    let config = match &args.model {
        Some(dir) => ModelFolder::open(dir)?.scheduler,
        None => Default::default(),
    };
    let lcm = Lcm::new(config);
    let timesteps = match &args.timesteps {
        Some(t) => {
            lcm.check_timesteps(t)?;
            t.clone()
        }
        None => lcm.timesteps(args.steps, args.strength)?,
    };
    let plan = lcm.plan(&timesteps);
    let json = ScheduleJson {
        timesteps: plan.timesteps(),
        alphas_cumprod: plan.steps.iter().map(|s| s.alpha_cumprod).collect(),
        c_skip: plan.steps.iter().map(|s| s.c_skip).collect(),
        c_out: plan.steps.iter().map(|s| s.c_out).collect(),
    };
    println!("{}", serde_json::to_string(&json)?);
    Ok(())
}

fn models_check(rt: &RuntimeArgs, dirs: &[PathBuf]) -> anyhow::Result<()> {
    let runtime = runtime(rt)?;
    let mut failed = Vec::new();
    for dir in dirs {
        match check_one(&runtime, dir) {
            Ok(summary) => print!("{summary}"),
            Err(e) => {
                println!("{}: FAILED: {e:#}", dir.display());
                failed.push(e);
            }
        }
    }
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0)),
        n => Err(failed.remove(0).context(format!("{n} model folders failed the check; the first"))),
    }
}

fn check_one(runtime: &Runtime, dir: &Path) -> anyhow::Result<String> {
    let folder = ModelFolder::open(dir)?;
    let diffusion = Diffusion::load(runtime, &folder)?;
    let mut out = format!("{}: ok — {}", dir.display(), folder.name);
    if !folder.description.is_empty() {
        out += &format!(" ({})", folder.description);
    }
    out += "\n";
    let unet = diffusion.unet();
    let models = [
        diffusion.text_encoder().model(),
        diffusion.vae_encoder().model(),
        unet.model(),
        diffusion.vae_decoder().model(),
    ];
    for m in models {
        out += &format!(
            "  {:<12} {} [{}, {:.0} ms]\n    in:  {}\n    out: {}\n",
            m.role,
            m.path.display(),
            m.ep,
            m.load_ms,
            m.describe_inputs(),
            m.describe_outputs()
        );
    }
    out += &format!(
        "  UNet timestep: {}; timestep_cond: {}\n",
        unet.timestep.describe(),
        unet.cond_dim.map_or("none".to_string(), |d| format!("[batch, {d}] (guidance embedding)"))
    );
    out += &format!(
        "  latents: {} channels, scale {}, image range {}, sides multiple of {}; scheduler: LCM ({:?}); \
         defaults: {} steps, strength {}, guidance {}\n",
        folder.latent_channels,
        folder.latent_scale,
        folder.image_range,
        folder.size_multiple,
        folder.scheduler.prediction_type,
        folder.defaults.steps,
        folder.defaults.strength,
        folder.defaults.guidance
    );
    Ok(out)
}

fn bench(rt: &RuntimeArgs, args: BenchArgs) -> anyhow::Result<()> {
    let folder = args.diffusion.folder()?;
    let mut params = args.diffusion.params(&folder);
    if params.prompt.is_empty() {
        params.prompt = "a portrait in the style of van gogh".into();
    }
    check_schedule(&folder, &params)?;
    let sizes = args.sizes.iter().map(|s| imaging::parse_size(s)).collect::<Result<Vec<_>, _>>()?;
    let runtime = runtime(rt)?;
    let mut diffusion = Diffusion::load(&runtime, &folder)?;
    let mut reports = Vec::new();
    for (w, h) in sizes {
        let report = latentcam::bench::run(&mut diffusion, &params, w, h, args.warmup, args.iterations)?;
        println!("{}", report.table());
        reports.push(report);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)
            .map_err(|e| latentcam::Error::Output { path: path.clone(), problem: e.to_string() })?;
    }
    Ok(())
}
