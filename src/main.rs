//! The `latentcam` command line: clap's flags mapped onto the library's requests ([`latentcam::jobs`]), progress
//! on the terminal, and errors mapped to exit codes by their kind ([`latentcam::error::ErrorKind`]): 0 ok, 2 bad
//! input or configuration found at start-up, 1 a failure of the environment or I/O while running (or a bug),
//! 130 interrupted (outputs finalized).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use latentcam::config::{Pipeline, display_available};
use latentcam::error::{Error, ErrorKind};
use latentcam::infer::{ExecutionProvider, Runtime, RuntimeOptions};
use latentcam::jobs::{
    BenchRequest, ConvertRequest, DiffusionRequest, Img2ImgRequest, ScheduleRequest, check_model, write_text,
};
use latentcam::paths::NamedPath;
use latentcam::pipeline::stats::Snapshot;
use latentcam::pipeline::{self, BuildOptions, StopFlag};

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
    /// Threads inside each model operator, 1 to 256 (default: one per core).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
}

fn parse_ep(s: &str) -> Result<ExecutionProvider, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

#[derive(Subcommand)]
enum Command {
    /// Run img2img on one still image (PNG/JPEG in, PNG/JPEG out).
    Img2img(Img2ImgArgs),
    /// Print the schedule (the model's scheduler: LCM, Euler or Euler-ancestral; timesteps, alphas_cumprod, sigmas,
    /// c_skip, c_out and the step coefficients) as JSON.
    Schedule(ScheduleArgs),
    /// Model folders: check them.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Time each stage, and the pipeline's throughput against the processor alone, and its live latency.
    Bench(BenchArgs),
    /// Run a pipeline file (source -> diffusion -> sinks) until its source ends or Ctrl-C.
    Run(RunArgs),
    /// Check a pipeline file without running it.
    Check(CheckArgs),
    /// Video to video: every input frame becomes one output frame, same timestamps, audio kept.
    Convert(Box<ConvertArgs>),
    /// List cameras and v4l2loopback outputs.
    Devices,
    /// Find the people in an image or a video and write the ControlNet conditioning image (the OpenPose skeleton
    /// on black, at the input's size) or, with --overlay, the skeleton over the input; --json writes the
    /// keypoints. A video gives a video: every frame, the same timing, the poses smoothed over time.
    Pose(PoseArgs),
    /// Write the mask of an image or a video (white = change, black = keep), for checking a masked setup: the
    /// person segmenter (the background changes), faces, a chroma key or a mask image, then the shaping options.
    /// A video gives a video of its masks; --json writes the coverage and the faces found.
    Mask(MaskArgs),
    /// Measure the flicker of a converted video: its frame-to-frame change against the input's, plain and along
    /// the input's motion, printed as JSON.
    Flicker(FlickerArgs),
}

#[derive(Args)]
struct PoseArgs {
    /// A PNG or JPEG image (told by its content), or a video (anything else: anything GStreamer decodes).
    input: PathBuf,
    /// .png or .jpg for an image; .mp4, .mkv or .mov (H.264) for a video.
    output: PathBuf,
    /// Write {"people":[{"keypoints":[[x,y,score], ... 18 in OpenPose-18 order]}]} here (input pixels; score 0
    /// for a missing point); for a video {"frames":[{"pts_s":S,"people":[...]}, ...]}, one entry per frame.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Pose model: a pose model folder (DWPose or MoveNet, as `[pose] model` takes it) or a MoveNet ONNX file
    /// (default: models/dwpose, models/movenet or ../shared/models/movenet).
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Draw the skeleton over the input instead of on black.
    #[arg(long)]
    overlay: bool,
}

#[derive(Args)]
struct MaskArgs {
    /// A PNG or JPEG image (told by its content), or a video (anything else: anything GStreamer decodes).
    input: PathBuf,
    /// .png or .jpg for an image (grayscale); .mp4, .mkv or .mov (H.264) for a video.
    output: PathBuf,
    /// Write {"width":W,"height":H,"coverage":C,"faces":[{"score":S,"box":[x,y,w,h],"keypoints":[[x,y], ... 6]}]}
    /// here (input pixels; coverage = the fraction to change); for a video {"frames":[{"pts_s":S,"coverage":C,
    /// "faces":[...]}, ...]}, one entry per frame.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// What makes the mask: segmenter (the person is kept, the background changes), faces (the faces are kept),
    /// chroma=RRGGBB[:TOLERANCE] (near the key colour changes; tolerance 0-255, default 48), image=PATH (a
    /// grayscale PNG/JPEG, white = change) or video=PATH (a mask video, frame by frame).
    #[arg(long, value_name = "SOURCE", default_value = "segmenter")]
    source: String,
    /// The MediaPipe models: a folder or one ONNX file (default: models/mediapipe-selfie or
    /// ../shared/models/mediapipe-selfie).
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Keep the faces (BlazeFace) whatever the source says.
    #[arg(long)]
    keep_faces: bool,
    /// A second source (as --source), joined with the first by --combine (default union).
    #[arg(long, value_name = "SOURCE")]
    also: Option<String>,
    /// union (change what either changes), difference (what the first changes and the second does not) or
    /// intersection (what both change).
    #[arg(long, value_name = "HOW", requires = "also")]
    combine: Option<String>,
    /// Swap what changes and what is kept (with the segmenter: restyle the person, keep the room).
    #[arg(long)]
    invert: bool,
    /// Binarise the mask at T (0 to 1); without it the mask keeps soft edges.
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    threshold: Option<f32>,
    /// Grow the area to change by PX pixels (negative: shrink it), -256 to 256.
    #[arg(long, value_name = "PX", default_value_t = 0, allow_negative_numbers = true)]
    grow: i32,
    /// Feather the edge over about ±PX pixels (a Gaussian blur of sigma PX/2), 0 to 256.
    #[arg(long, value_name = "PX", default_value_t = 0.0, allow_negative_numbers = true)]
    feather: f32,
    /// Video: average each pixel over time, this share from the frames before (0 off, up to 0.99).
    #[arg(long, value_name = "S", default_value_t = 0.0, allow_negative_numbers = true)]
    smoothing: f32,
}

#[derive(Args)]
struct FlickerArgs {
    /// The original video.
    input: PathBuf,
    /// Its converted output (the same frames, e.g. from `latentcam convert`).
    output: PathBuf,
    /// Also write the JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
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
    /// Take the input from a WHIP publisher (OBS 30+, a browser) at POST /whip on [control] http instead of the
    /// file's source (its width, height and fps kept).
    #[arg(long)]
    whip: bool,
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
    // Help from its knob (knobs::SIZE), as for every knob's flag: see `knob_help`.
    #[arg(long, value_name = "WxH")]
    size: Option<String>,
    /// x264 quality, 0-50 (lower is better).
    #[arg(long, default_value_t = 21, allow_negative_numbers = true)]
    quality: i64,
    /// Do not carry the audio over.
    #[arg(long)]
    no_audio: bool,
    #[arg(long, value_name = "K", allow_negative_numbers = true)]
    stream_batch: Option<String>,
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    similarity_threshold: Option<String>,
    #[arg(long, value_name = "F", allow_negative_numbers = true)]
    feedback: Option<String>,
    /// Pose-guided (the model folder needs a ControlNet): each frame's OpenPose skeleton drives it.
    #[arg(long, value_name = "MODE")]
    pose: Option<String>,
    /// Pose model: a folder with a pose.toml (DWPose or MoveNet), or a MoveNet ONNX file or folder (default:
    /// models/dwpose, models/movenet or ../shared/models/movenet).
    #[arg(long, value_name = "PATH", requires = "pose")]
    pose_model: Option<PathBuf>,
    #[arg(long, value_name = "S", requires = "pose", allow_negative_numbers = true)]
    controlnet_scale: Option<String>,
    #[command(flatten)]
    mask: ConvertMaskArgs,
    /// Write the final statistics here as JSON.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
    /// Without a terminal: seconds between progress lines ("converted N of M frames"), 0.1 to 3600.
    #[arg(long, default_value_t = 5.0, value_name = "S", value_parser = progress_interval)]
    progress_interval_s: f64,
}

/// `convert`'s mask flags: the `mask.*` knobs (help from their declarations) and the mask's files.
#[derive(Args)]
struct ConvertMaskArgs {
    #[arg(long, value_name = "SOURCE")]
    mask: Option<String>,
    /// The mask image or video for `--mask image` or `--mask video` (white = change).
    #[arg(long, value_name = "PATH", requires = "mask")]
    mask_file: Option<PathBuf>,
    #[arg(long, value_name = "SOURCE", requires = "mask")]
    mask_also: Option<String>,
    /// The image or video of `--mask-also image` or `video`.
    #[arg(long, value_name = "PATH", requires = "mask_also")]
    mask_also_file: Option<PathBuf>,
    #[arg(long, value_name = "HOW", requires = "mask_also")]
    mask_combine: Option<String>,
    /// The key for `--mask chroma`: RRGGBB or RRGGBB:TOLERANCE (default 00ff00).
    #[arg(long, value_name = "KEY", requires = "mask")]
    mask_chroma: Option<String>,
    /// The MediaPipe models' folder or file (default: models/mediapipe-selfie).
    #[arg(long, value_name = "PATH", requires = "mask")]
    mask_model: Option<PathBuf>,
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", requires = "mask")]
    keep_faces: Option<String>,
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", requires = "mask")]
    mask_invert: Option<String>,
    #[arg(long, value_name = "T", requires = "mask", allow_negative_numbers = true)]
    mask_threshold: Option<String>,
    #[arg(long, value_name = "PX", requires = "mask", allow_negative_numbers = true)]
    mask_grow: Option<String>,
    #[arg(long, value_name = "PX", requires = "mask", allow_negative_numbers = true)]
    mask_feather: Option<String>,
    #[arg(long, value_name = "S", requires = "mask", allow_negative_numbers = true)]
    mask_smoothing: Option<String>,
    #[arg(long, value_name = "BOOL", requires = "mask")]
    mask_composite: Option<String>,
}

impl ConvertMaskArgs {
    /// The `[mask]` these flags write (None without `--mask`); values as typed, checked by the knobs.
    fn file(&self) -> Option<latentcam::config::file::MaskFile> {
        let value = |v: &Option<String>| v.as_deref().map(latentcam::jobs::flag_value);
        self.mask.as_ref().map(|source| latentcam::config::file::MaskFile {
            source: Some(latentcam::jobs::flag_value(source)),
            file: self.mask_file.clone(),
            also: value(&self.mask_also),
            also_file: self.mask_also_file.clone(),
            combine: value(&self.mask_combine),
            model: self.mask_model.clone(),
            chroma: self.mask_chroma.clone(),
            enabled: None,
            keep_faces: value(&self.keep_faces),
            invert: value(&self.mask_invert),
            threshold: value(&self.mask_threshold),
            grow_px: value(&self.mask_grow),
            feather_px: value(&self.mask_feather),
            smoothing: value(&self.mask_smoothing),
            composite: value(&self.mask_composite),
        })
    }
}

fn progress_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.1..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!("`{text}`: expected seconds from 0.1 to 3600")),
    }
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
    /// Model folder (model.toml + ONNX files, or an optimum-cli export), or a name looked up in ./models and the
    /// checkout's models/. Default: the first of sd-turbo, sd15-lcm-lora, lcm-dreamshaper-v7, sdxl-turbo,
    /// sdxl-lcm-lora, lcm-sdxl there, else the tiny test model tiny-sd-turbo.
    #[arg(long, env = "LATENTCAM_MODEL", value_name = "DIR")]
    model: Option<PathBuf>,
    // The knobs' flags take their help from the declarations (`knob_help`) and their values as typed: the
    // declaration checks them as it checks every other entry point.
    #[arg(long, default_value = "")]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    #[arg(long, allow_negative_numbers = true)]
    steps: Option<String>,
    #[arg(long, conflicts_with = "timesteps", allow_negative_numbers = true)]
    strength: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    guidance: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    seed: Option<String>,
    #[arg(long, value_delimiter = ',', num_args = 1.., allow_negative_numbers = true)]
    timesteps: Option<Vec<String>>,
}

impl DiffusionArgs {
    fn request(&self) -> DiffusionRequest {
        DiffusionRequest {
            model: self.model.clone(),
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps.clone(),
            strength: self.strength.clone(),
            guidance: self.guidance.clone(),
            seed: self.seed.clone(),
            timesteps: self.timesteps.clone(),
        }
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
    #[arg(long, default_value = "1", allow_negative_numbers = true)]
    steps: String,
    #[arg(long, default_value = "0.5", conflicts_with = "timesteps", allow_negative_numbers = true)]
    strength: String,
    #[arg(long, value_delimiter = ',', num_args = 1.., allow_negative_numbers = true)]
    timesteps: Option<Vec<String>>,
    /// Take the scheduler config from this model folder (default: diffusers' LCMScheduler defaults).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    diffusion: DiffusionArgs,
    /// Working sizes WxH (repeat or comma-separate; default 256x256): each gets the stage table and the
    /// throughput figures.
    #[arg(long = "size", value_delimiter = ',', default_values_t = ["256x256".to_string()])]
    sizes: Vec<String>,
    /// Frames of the throughput runs (the processor alone, the offline pipeline), 1 to 1000000; the live run
    /// at 30 fps takes this many, at least 60 and at most 300.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    frames: i64,
    /// Override a value of the pipeline the bench builds, as `run --set` does: engine.stream-batch=4,
    /// params.steps=1 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Timed iterations per stage of the stage table, 1 to 100000.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    iterations: i64,
    /// Untimed iterations per stage first, 0 to 10000.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true)]
    warmup: i64,
    /// Also write the figures as JSON here: one object (several sizes: {"sizes": [one object per size]}).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Each knob's flag gets its help from the knob's declaration ([`latentcam::knobs`]): what it does, its range, its
/// default. Arguments are clap's ids (the flag without dashes, snake_case).
fn knob_help(command: clap::Command) -> clap::Command {
    let subcommands = ["convert", "img2img", "bench", "schedule"];
    subcommands.iter().fold(command, |command, name| {
        command.mut_subcommand(name, |mut sub| {
            for knob in latentcam::knobs::ALL.iter().filter(|k| k.flag.is_some()) {
                let id = knob.flag.unwrap_or_default().trim_start_matches("--").replace('-', "_");
                if sub.get_arguments().any(|a| a.get_id() == id.as_str()) {
                    let help = format!("{} Takes {}; default: {}.", knob.help, knob.expected(), knob.default);
                    sub = sub.mut_arg(id, |a| a.help(help));
                }
            }
            sub
        })
    })
}

fn main() -> ExitCode {
    let matches = knob_help(<Cli as clap::CommandFactory>::command()).get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.verbose, cli.quiet);
    ignore_file_size_signal();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let kind = e.chain().find_map(|c| c.downcast_ref::<Error>()).map_or(ErrorKind::Internal, Error::kind);
            if kind != ErrorKind::Interrupted {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(kind.exit_code())
        }
    }
}

/// A file-size limit (`ulimit -f`) kills a process with SIGXFSZ by default; ignored, the write fails with
/// EFBIG instead and the run stops with an error naming the file, its outputs finalized.
fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
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
        intra_op_threads: args.threads.map(usize::from),
        cuda_graph: false,
    })?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Img2img(args) => img2img(&cli.runtime, args),
        Command::Pose(args) => pose(&cli.runtime, args),
        Command::Mask(args) => mask(&cli.runtime, args),
        Command::Flicker(args) => flicker(args),
        Command::Schedule(args) => schedule(args),
        Command::Models(ModelsCommand::Check { dirs }) => models_check(&cli.runtime, &dirs),
        Command::Bench(args) => bench(&cli.runtime, args),
        Command::Run(args) => run_pipeline(&cli.runtime, args),
        Command::Check(args) => check_pipeline(&args),
        Command::Convert(args) => convert(&cli.runtime, *args),
        Command::Devices => {
            print!("{}", latentcam::devices::report());
            Ok(())
        }
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

/// `--stats-json` as an output of the run (checked, probed and locked with the others).
fn stats_output(path: Option<&Path>) -> Vec<NamedPath> {
    path.map(|p| NamedPath::new("--stats-json", p)).into_iter().collect()
}

fn write_stats(path: Option<&Path>, stats: &Snapshot) -> anyhow::Result<()> {
    if let Some(path) = path {
        write_text(path, &serde_json::to_string_pretty(stats)?)?;
    }
    Ok(())
}

fn run_pipeline(rt: &RuntimeArgs, args: RunArgs) -> anyhow::Result<()> {
    let mut overrides = args.overrides.clone();
    if args.whip {
        overrides.insert(0, latentcam::config::overrides::whip_source(&args.pipeline)?);
    }
    let config = Pipeline::load(&args.pipeline, &overrides)?;
    let runtime = runtime(rt)?;
    let stats = stats_output(args.stats_json.as_deref());
    let built = pipeline::build(
        &config,
        &BuildOptions { runtime: &runtime, display: display_available(), extra_outputs: &stats },
    )?;
    let _locks = built.locks;
    tracing::info!(source = %built.source, model = %built.model, size = %built.size, mode = ?config.mode, "running");
    let mut last_log = Instant::now();
    let mut tick = |s: &Snapshot| {
        if let Some(interval) = config.stats_interval
            && last_log.elapsed() >= interval
        {
            tracing::info!("{}", s.line());
            last_log = Instant::now();
        }
    };
    let report = pipeline::run(built.parts, stop_on_signal(), &mut tick)?;
    tracing::info!("done: {}", report.stats.line());
    // A live run normally ends with Ctrl-C or a closed window: that is success, not an interruption.
    write_stats(args.stats_json.as_deref(), &report.stats)
}

fn check_pipeline(args: &CheckArgs) -> anyhow::Result<()> {
    let config = Pipeline::load(&args.pipeline, &args.overrides)?;
    println!("{}: {}", args.pipeline.display(), pipeline::build::check(&config, display_available())?);
    Ok(())
}

fn convert(rt: &RuntimeArgs, args: ConvertArgs) -> anyhow::Result<()> {
    let request = ConvertRequest {
        input: args.input.clone(),
        output: args.output.clone(),
        diffusion: args.diffusion.request(),
        size: args.size.clone(),
        quality: args.quality,
        audio: !args.no_audio,
        engine: latentcam::config::file::EngineFile {
            stream_batch: args.stream_batch.as_deref().map(latentcam::jobs::flag_value),
            similarity_threshold: args.similarity_threshold.as_deref().map(latentcam::jobs::flag_value),
            ..Default::default()
        },
        pose: args.pose.as_ref().map(|mode| latentcam::config::file::PoseFile {
            model: args.pose_model.clone(),
            mode: Some(latentcam::jobs::flag_value(mode)),
            controlnet_scale: args.controlnet_scale.as_deref().map(latentcam::jobs::flag_value),
            ..Default::default()
        }),
        feedback: args.feedback,
        mask: args.mask.file(),
    };
    let config = request.pipeline()?;
    let runtime = runtime(rt)?;
    let stats = stats_output(args.stats_json.as_deref());
    let built = pipeline::build(&config, &BuildOptions { runtime: &runtime, display: false, extra_outputs: &stats })?;
    let _locks = built.locks;
    tracing::info!(source = %built.source, model = %built.model, size = %built.size, "converting");
    let progress = Progress::new(built.total_frames, Duration::from_secs_f64(args.progress_interval_s));
    let mut tick = |s: &Snapshot| progress.update(s);
    let report = pipeline::run(built.parts, stop_on_signal(), &mut tick)?;
    progress.finish(&report.stats);
    write_stats(args.stats_json.as_deref(), &report.stats)?;
    let frames = report.stats.frames_delivered.values().copied().max().unwrap_or(0);
    if report.interrupted {
        eprintln!("interrupted: {} holds the first {frames} frames and is playable", args.output.display());
        return Err(Error::Interrupted.into());
    }
    tracing::info!(output = %args.output.display(), frames, "{}", report.stats.line());
    Ok(())
}

/// A progress bar with ETA on a terminal; a plain line every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: Option<u64>,
    every: Duration,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(total: Option<u64>, every: Duration) -> Progress {
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
        Progress { bar, total, every, last_line: std::cell::Cell::new(Instant::now()) }
    }

    fn update(&self, s: &Snapshot) {
        let done = s.frames_delivered.values().copied().max().unwrap_or(0);
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(format!("{:.1} fps", s.output_fps));
            }
            None if self.last_line.get().elapsed() >= self.every => {
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

fn img2img(rt: &RuntimeArgs, args: Img2ImgArgs) -> anyhow::Result<()> {
    let request =
        Img2ImgRequest { input: args.input, output: args.output, diffusion: args.diffusion.request(), size: args.size };
    let job = request.check()?;
    let runtime = runtime(rt)?;
    let r = job.run(&runtime)?;
    tracing::info!(
        output = %r.output.display(),
        width = r.width,
        height = r.height,
        timesteps = ?r.timesteps,
        load_ms = format!("{:.0}", r.load_ms),
        vae_encode_ms = format!("{:.1}", r.times.vae_encode_ms),
        unet_ms = format!("{:.1}", r.times.unet_ms),
        vae_decode_ms = format!("{:.1}", r.times.vae_decode_ms),
        "wrote"
    );
    Ok(())
}

fn pose(rt: &RuntimeArgs, args: PoseArgs) -> anyhow::Result<()> {
    let request = latentcam::jobs::PoseRequest {
        input: args.input,
        output: args.output,
        json: args.json,
        model: args.model,
        overlay: args.overlay,
    };
    if request.input_kind() == latentcam::jobs::PoseInputKind::Image {
        let report = request.run(&runtime(rt)?)?;
        tracing::info!(output = %request.output.display(), people = report.people.len(), "wrote");
        return Ok(());
    }
    let job = request.video(&runtime(rt)?)?;
    tracing::info!(source = %job.source, "finding poses");
    let progress = Progress::new(job.total_frames, Duration::from_secs(5));
    let mut tick = |s: &Snapshot| progress.update(s);
    let report = job.run(stop_on_signal(), &mut tick)?;
    progress.finish(&report.stats);
    if report.interrupted {
        eprintln!(
            "interrupted: {} holds the first {} frames and is playable{}",
            request.output.display(),
            report.frames,
            request.json.as_ref().map_or(String::new(), |j| format!("; {} has their poses", j.display()))
        );
        return Err(Error::Interrupted.into());
    }
    tracing::info!(
        output = %request.output.display(),
        frames = report.frames,
        with_people = report.frames_with_people,
        "{}",
        report.stats.line()
    );
    Ok(())
}

fn mask(rt: &RuntimeArgs, args: MaskArgs) -> anyhow::Result<()> {
    let request = latentcam::jobs::MaskRequest {
        input: args.input,
        output: args.output,
        json: args.json,
        source: Some(args.source),
        model: args.model,
        keep_faces: args.keep_faces,
        also: args.also,
        combine: args.combine,
        options: latentcam::mask::MaskOptions {
            invert: args.invert,
            threshold: args.threshold,
            grow_px: args.grow,
            feather_px: args.feather,
            smoothing: args.smoothing,
        },
    };
    // Flags first: a typo fails before ONNX Runtime is loaded.
    request.spec()?;
    if request.input_kind() == latentcam::jobs::PoseInputKind::Image {
        let report = request.run(&runtime(rt)?)?;
        tracing::info!(
            output = %request.output.display(),
            coverage = format!("{:.3}", report.coverage),
            faces = report.faces.len(),
            "wrote"
        );
        return Ok(());
    }
    let job = request.video(&runtime(rt)?)?;
    tracing::info!(source = %job.source, "making masks");
    let progress = Progress::new(job.total_frames, Duration::from_secs(5));
    let mut tick = |s: &Snapshot| progress.update(s);
    let report = job.run(stop_on_signal(), &mut tick)?;
    progress.finish(&report.stats);
    if report.interrupted {
        eprintln!("interrupted: {} holds the first {} frames and is playable", request.output.display(), report.frames);
        return Err(Error::Interrupted.into());
    }
    tracing::info!(
        output = %request.output.display(),
        frames = report.frames,
        mean_coverage = format!("{:.3}", report.mean_coverage),
        "{}",
        report.stats.line()
    );
    Ok(())
}

fn flicker(args: FlickerArgs) -> anyhow::Result<()> {
    let request = latentcam::jobs::FlickerRequest { input: args.input, output: args.output, json: args.json };
    println!("{}", serde_json::to_string_pretty(&request.run()?)?);
    Ok(())
}

fn schedule(args: ScheduleArgs) -> anyhow::Result<()> {
    let request =
        ScheduleRequest { steps: args.steps, strength: args.strength, timesteps: args.timesteps, model: args.model };
    println!("{}", serde_json::to_string(&request.run()?)?);
    Ok(())
}

fn models_check(rt: &RuntimeArgs, dirs: &[PathBuf]) -> anyhow::Result<()> {
    let runtime = runtime(rt)?;
    let mut failed = Vec::new();
    for dir in dirs {
        match check_model(&runtime, dir) {
            Ok(summary) => print!("{summary}"),
            Err(e) => {
                println!("{}: FAILED: {}", dir.display(), e.chain_text());
                failed.push(e);
            }
        }
    }
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0).into()),
        n => {
            Err(anyhow::Error::from(failed.remove(0)).context(format!("{n} model folders failed the check; the first")))
        }
    }
}

fn bench(rt: &RuntimeArgs, args: BenchArgs) -> anyhow::Result<()> {
    let request = BenchRequest {
        diffusion: args.diffusion.request(),
        sizes: args.sizes,
        frames: args.frames,
        overrides: args.overrides,
        iterations: args.iterations,
        warmup: args.warmup,
    };
    let job = request.check()?;
    // A JSON file that cannot be written fails now, not after minutes of timing.
    let json = args.json.as_deref().map(|p| NamedPath::new("--json", p));
    let _locks = latentcam::jobs::claim_paths(&[], json.as_slice())?;
    let runtime = runtime(rt)?;
    let reports = job.run(&runtime)?;
    for report in &reports {
        println!("{}", report.text());
    }
    if let Some(path) = &args.json {
        let json = match reports.as_slice() {
            [one] => serde_json::to_string_pretty(one)?,
            several => serde_json::to_string_pretty(&serde_json::json!({ "sizes": several }))?,
        };
        write_text(path, &json)?;
    }
    Ok(())
}
