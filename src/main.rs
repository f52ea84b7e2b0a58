//! The `latentcam` command line. Parsing and exit codes only: the work is in the library.
//!
//! Exit codes: 0 ok, 2 bad input or configuration (the message names the bad thing), 1 internal failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use latentcam::diffusion::scheduler::Lcm;
use latentcam::diffusion::{Diffusion, Params};
use latentcam::imaging::{self, Fit, OutputImage};
use latentcam::infer::{ExecutionProvider, Runtime, RuntimeOptions};
use latentcam::model::{self, ModelFolder};
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
    /// Model folder (model.toml + ONNX files). Default: the first of models/sd-turbo, models/sd15-lcm-lora,
    /// models/lcm-dreamshaper-v7 that exists, else the tiny test model models/tiny-sd-turbo.
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
        let dir = match &self.model {
            Some(d) => d.clone(),
            None => model::default_folder()?,
        };
        Ok(ModelFolder::open(&dir)?)
    }

    fn params(&self, folder: &ModelFolder) -> Params {
        let mut p = Params::defaults_for(folder);
        p.prompt = self.prompt.clone();
        p.negative_prompt = self.negative_prompt.clone();
        p.seed = self.seed;
        p.timesteps = self.timesteps.clone();
        if let Some(s) = self.steps {
            p.steps = s;
        }
        if let Some(s) = self.strength {
            p.strength = s;
        }
        if let Some(g) = self.guidance {
            p.guidance = g;
        }
        p
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
    }
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
