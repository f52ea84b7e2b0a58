//! The library side of each command: flags (as plain values) parsed into checked jobs, and the jobs run. The
//! command line (`main.rs`) only maps clap's flags onto these requests and errors onto exit codes; tests drive
//! the same functions.
//!
//! Flags are parsed by the same code as pipeline files ([`crate::config`]), so `convert --steps 9` and
//! `steps = 9` in a file are refused by the same check, each naming what was given (`--steps`, `params.steps`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::config::file::{ModelFile, ParamsFile, PipelineFile, SinkFile, SourceFile};
use crate::config::values::{MAX_WORKING_SIDE, parse_wxh};
use crate::config::{self, Mode, Origin, Pipeline};
use crate::diffusion::scheduler::{Lcm, LcmConfig, Schedule};
use crate::diffusion::{Diffusion, Params};
use crate::error::{Error, Result};
use crate::imaging::{self, OutputImage};
use crate::infer::Runtime;
use crate::model::ModelFolder;
use crate::paths::{NamedPath, OutputLock};
use crate::sizing::{self, SizeOrigin};

/// Claim a command's files before any work: every output is a file of its own (no input or other output under
/// another name), its folder can be written, and no other latentcam writes it (the locks, held until dropped).
pub fn claim_paths(reads: &[NamedPath], writes: &[NamedPath]) -> Result<Vec<OutputLock>> {
    crate::paths::check_distinct(reads, writes)?;
    for w in writes {
        crate::paths::probe_writable_folder(&w.path, &crate::paths::parent_folder(&w.path))?;
    }
    crate::paths::lock_outputs(writes)
}

/// The files of a model folder, as inputs of a command.
fn model_reads(folder: &ModelFolder) -> Vec<NamedPath> {
    folder.files().into_iter().map(|f| NamedPath::new("model file", f)).collect()
}

/// The diffusion flags every running command shares, as given (unset: the model's defaults).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiffusionRequest {
    /// A model folder or a bare name; None: the default model.
    pub model: Option<PathBuf>,
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: Option<i64>,
    pub strength: Option<f64>,
    pub guidance: Option<f64>,
    pub seed: i64,
    pub timesteps: Option<Vec<i64>>,
}

impl DiffusionRequest {
    fn params_file(&self) -> ParamsFile {
        ParamsFile {
            prompt: Some(self.prompt.clone()),
            negative_prompt: Some(self.negative_prompt.clone()),
            steps: self.steps,
            strength: self.strength,
            guidance: self.guidance,
            seed: Some(self.seed),
            timesteps: self.timesteps.clone(),
            ..ParamsFile::default()
        }
    }

    /// The model folder (manifest read), the parameters over its defaults, and the schedule, all checked.
    pub fn resolve(&self) -> Result<(ModelFolder, Params, Schedule)> {
        let folder = ModelFolder::open(&config::model_folder(self.model.as_deref())?)?;
        let params = config::resolve_params(&self.params_file(), &folder, &Origin::Flags)?;
        let schedule = config::check_schedule(&params, &folder, &Origin::Flags)?;
        Ok((folder, params, schedule))
    }
}

/// `latentcam convert IN OUT ...` as given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConvertRequest {
    pub input: PathBuf,
    pub output: PathBuf,
    pub diffusion: DiffusionRequest,
    /// `WxH`; None: the input's size cropped to the model's multiple.
    pub size: Option<String>,
    pub quality: i64,
    pub audio: bool,
    /// `--stream-batch`, `--similarity-threshold` as given (checked with the pipeline file's rules).
    pub engine: crate::config::file::EngineFile,
    /// `--pose MODE`, `--pose-model`, `--controlnet-scale` (pose-guided conversion).
    pub pose: Option<crate::config::file::PoseFile>,
    /// `--feedback`: latent feedback fraction.
    pub feedback: Option<f64>,
}

impl ConvertRequest {
    /// The offline pipeline this conversion is: a GStreamer source, the model, one file sink.
    pub fn pipeline(&self) -> Result<Pipeline> {
        // Before the model folder is read: the output being the input is the first thing to say.
        crate::paths::check_distinct(
            &[crate::paths::NamedPath::new("input", &self.input)],
            &[crate::paths::NamedPath::new("output", &self.output)],
        )?;
        let size = match &self.size {
            Some(text) => {
                let (w, h) = parse_wxh(text, MAX_WORKING_SIDE).map_err(|e| Error::invalid("--size", e))?;
                Some(vec![i64::from(w), i64::from(h)])
            }
            None => None,
        };
        let file = PipelineFile {
            mode: Mode::Offline,
            source: SourceFile::Gstreamer {
                uri: Some(toml::Value::String(self.input.display().to_string())),
                pipeline: None,
                audio: Some(toml::Value::Boolean(self.audio)),
            },
            model: ModelFile { dir: self.diffusion.model.clone(), size },
            params: ParamsFile { feedback: self.feedback, ..self.diffusion.params_file() },
            engine: self.engine.clone(),
            pose: self.pose.clone(),
            control: Default::default(),
            sinks: vec![SinkFile::File {
                path: Some(toml::Value::String(self.output.display().to_string())),
                view: None,
                audio: Some(toml::Value::Boolean(self.audio)),
                quality: Some(toml::Value::Integer(self.quality)),
                only_when: None,
            }],
            stats_interval_s: Some(0.0),
        };
        Pipeline::from_file(file, Origin::Flags)
    }
}

/// `latentcam img2img IN OUT ...` as given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Img2ImgRequest {
    pub input: PathBuf,
    pub output: PathBuf,
    pub diffusion: DiffusionRequest,
    /// `WxH`: resize (cover + center crop) instead of cropping to the model's multiple.
    pub size: Option<String>,
}

/// A checked still-image job: nothing runs until [`Img2ImgJob::run`].
pub struct Img2ImgJob {
    pub input: PathBuf,
    pub output: OutputImage,
    /// The output's lock, held while the job lives.
    pub locks: Vec<OutputLock>,
    pub folder: ModelFolder,
    pub params: Params,
    pub schedule: Schedule,
    /// `--size`; None: the input's aspect at about the model's native area ([`crate::sizing`]).
    pub size: Option<config::WorkingSize>,
}

impl Img2ImgRequest {
    /// Cheap checks first (the output, the flags, the model's manifest), so a typo fails before seconds of
    /// model loading.
    pub fn check(&self) -> Result<Img2ImgJob> {
        let input = [NamedPath::new("input", &self.input)];
        crate::paths::check_distinct(&input, &[NamedPath::new("output", &self.output)])?;
        let output = OutputImage::create(&self.output)?;
        let (folder, params, schedule) = self.diffusion.resolve()?;
        let reads: Vec<NamedPath> = input.into_iter().chain(model_reads(&folder)).collect();
        let locks = claim_paths(&reads, &[NamedPath::new("output", &self.output)])?;
        let multiple = folder.size_multiple_for(&schedule);
        let size = match &self.size {
            Some(text) => {
                let (width, height) = parse_wxh(text, MAX_WORKING_SIDE).map_err(|e| Error::invalid("--size", e))?;
                Some(config::WorkingSize::new(width, height, multiple).map_err(|e| Error::invalid("--size", e))?)
            }
            None => None,
        };
        Ok(Img2ImgJob { input: self.input.clone(), output, locks, folder, params, schedule, size })
    }
}

/// What an img2img run did, for the log.
#[derive(Clone, Debug)]
pub struct Img2ImgReport {
    pub output: PathBuf,
    pub width: u32,
    pub height: u32,
    pub timesteps: Vec<u32>,
    pub load_ms: f64,
    pub times: crate::diffusion::StageTimes,
}

impl Img2ImgJob {
    pub fn run(self, runtime: &Runtime) -> Result<Img2ImgReport> {
        let input = imaging::load_rgb(&self.input)?;
        let multiple = self.folder.size_multiple_for(&self.schedule);
        let (width, height) = input.dimensions();
        let (size, origin) = match self.size {
            Some(size) => (size, SizeOrigin::Given),
            None => (
                sizing::default_size(width, height, self.folder.native_size, multiple)
                    .map_err(|e| Error::invalid("--size", format!("the input image is {e}")))?,
                SizeOrigin::Default,
            ),
        };
        let batch = crate::memory::unet_batch(1, self.params.guidance);
        let refuse = |problem: String| Error::invalid("--size", problem);
        let size = sizing::ensure_fits(&self.folder, size, batch, origin, runtime.may_use_gpu(), &refuse)?;
        if let Some(fit) = sizing::describe_fit(width, height, size) {
            tracing::info!("working size {size}: the input's {fit}");
        }
        let fitted = imaging::fit_image(&input, size)?;
        let started = Instant::now();
        let mut diffusion = Diffusion::load(runtime, &self.folder)?;
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        let prepared = diffusion.prepare(&self.params)?;
        let tensor = imaging::to_tensor(&fitted);
        let result = diffusion.run(&prepared, tensor.view()).map_err(|e| e.or_out_of_memory(size.dims(), multiple))?;
        let image = imaging::from_tensor(result.view());
        let output = self.output.path().to_path_buf();
        self.output.write(&image)?;
        Ok(Img2ImgReport {
            output,
            width: image.width(),
            height: image.height(),
            timesteps: self.schedule.timesteps().to_vec(),
            load_ms,
            times: diffusion.last_times(),
        })
    }
}

/// `latentcam schedule` as given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScheduleRequest {
    pub steps: i64,
    pub strength: f64,
    pub timesteps: Option<Vec<i64>>,
    /// Take the scheduler config from this model folder (default: diffusers' LCMScheduler defaults).
    pub model: Option<PathBuf>,
}

/// What `latentcam schedule` prints: one entry per denoising step.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ScheduleJson {
    pub timesteps: Vec<u32>,
    pub alphas_cumprod: Vec<f32>,
    pub c_skip: Vec<f32>,
    pub c_out: Vec<f32>,
}

impl ScheduleRequest {
    pub fn run(&self) -> Result<ScheduleJson> {
        let config = match &self.model {
            Some(dir) => ModelFolder::open(dir)?.scheduler,
            None => LcmConfig::default(),
        };
        let limit = i64::from(config.num_train_timesteps) - 1;
        let lcm = Lcm::new(config);
        let steps = config::values::parse_int::<usize>(self.steps, 1, crate::diffusion::scheduler::MAX_STEPS as i64)
            .map_err(|e| Error::invalid("--steps", e))?;
        let explicit = match &self.timesteps {
            Some(list) => Some(
                list.iter()
                    .map(|&t| {
                        config::values::parse_int::<u32>(t, 0, limit).map_err(|e| Error::invalid("--timesteps", e))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            None => None,
        };
        let schedule = lcm.schedule(explicit.as_deref(), steps, self.strength)?;
        let plan = lcm.plan(&schedule);
        Ok(ScheduleJson {
            timesteps: plan.timesteps(),
            alphas_cumprod: plan.steps.iter().map(|s| s.alpha_cumprod).collect(),
            c_skip: plan.steps.iter().map(|s| s.c_skip).collect(),
            c_out: plan.steps.iter().map(|s| s.c_out).collect(),
        })
    }
}

/// `latentcam models check DIR`: load every file of the folder, check the contracts, describe what was found.
pub fn check_model(runtime: &Runtime, dir: &Path) -> Result<String> {
    let folder = ModelFolder::open(dir)?;
    let diffusion = Diffusion::load(runtime, &folder)?;
    let mut out = format!("{}: ok — {}", dir.display(), folder.name);
    if !folder.description.is_empty() {
        out += &format!(" ({})", folder.description);
    }
    out += "\n";
    let unet = diffusion.unet();
    let models = [
        diffusion.text_encoder().ok_or_else(|| Error::internal("models check", "no text encoder"))?.model(),
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
    let ty = |m: &crate::infer::Model| crate::infer::tensor::type_name(m.input_type(0));
    out += &format!(
        "  precision (first float input): UNet {}, VAE encoder {}, VAE decoder {} (f16 and f32 ports both work; \
         the frame path converts at the model's edge)\n",
        crate::infer::tensor::type_name(unet.model().input_type(crate::infer::contract::unet::SAMPLE)),
        ty(diffusion.vae_encoder().model()),
        ty(diffusion.vae_decoder().model()),
    );
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

/// `latentcam bench` as given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BenchRequest {
    pub diffusion: DiffusionRequest,
    /// Working sizes, `WxH` each.
    pub sizes: Vec<String>,
    /// Frames of the throughput runs (`--frames`).
    pub frames: i64,
    /// `--set KEY=VALUE` on the pipeline the bench builds, as `run --set` takes them.
    pub overrides: Vec<String>,
    pub iterations: i64,
    pub warmup: i64,
}

/// `--frames` accepted.
pub const MAX_BENCH_FRAMES: i64 = 1_000_000;
/// The prompt timed when none is given.
const BENCH_PROMPT: &str = "a portrait in the style of van gogh";
/// Keys of the bench's pipeline that the bench decides itself (`--size`, `--frames`); `--set` may not touch them.
const BENCH_OWNED_KEYS: [&str; 5] = ["mode", "stats-interval-s", "source", "sink", "model.size"];

/// A checked benchmark: one pipeline per working size, nothing loaded until [`BenchJob::run`].
#[derive(Clone, Debug)]
pub struct BenchJob {
    /// Offline, a test pattern of `frames` frames at the working size, a null sink; `--set` applied.
    pub pipelines: Vec<Pipeline>,
    pub frames: u64,
    pub live_frames: u64,
    pub iterations: usize,
    pub warmup: usize,
}

impl BenchRequest {
    /// Every flag checked (each error names its flag), the model's manifest read, no session loaded.
    pub fn check(&self) -> Result<BenchJob> {
        let frames = config::values::parse_int::<u64>(self.frames, 1, MAX_BENCH_FRAMES)
            .map_err(|e| Error::invalid("--frames", e))?;
        let iterations = config::values::parse_int::<usize>(self.iterations, 1, 100_000)
            .map_err(|e| Error::invalid("--iterations", e))?;
        let warmup =
            config::values::parse_int::<usize>(self.warmup, 0, 10_000).map_err(|e| Error::invalid("--warmup", e))?;
        if self.sizes.is_empty() {
            return Err(Error::invalid("--size", "no size given"));
        }
        let sizes = self
            .sizes
            .iter()
            .map(|s| parse_wxh(s, MAX_WORKING_SIDE).map_err(|e| Error::invalid("--size", e)))
            .collect::<Result<Vec<_>>>()?;
        for o in &self.overrides {
            let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k).trim();
            if BENCH_OWNED_KEYS
                .iter()
                .any(|owned| key == *owned || key.strip_prefix(owned).is_some_and(|r| r.starts_with('.')))
            {
                return Err(Error::invalid(
                    "--set",
                    format!("{o}: the bench sets {key} itself (the working size is --size, the frames --frames)"),
                ));
            }
        }
        // The diffusion flags first, so their errors name them; then the pipeline they make, with `--set` on top.
        let (folder, _, _) = self.diffusion.resolve()?;
        let mut params = self.diffusion.params_file();
        if params.prompt.as_deref().is_none_or(str::is_empty) {
            params.prompt = Some(BENCH_PROMPT.into());
        }
        let text = bench_pipeline_text(&folder.dir, &params)?;
        let base = Pipeline::parse_str(&text, Path::new("bench"), &self.overrides).map_err(|e| match e {
            Error::Pipeline { problem, .. } => Error::InvalidParameter {
                what: "--set",
                problem: problem.strip_prefix("--set ").unwrap_or(&problem).into(),
            },
            other => other,
        })?;
        let pipelines = sizes
            .into_iter()
            .map(|(width, height)| {
                let size = config::WorkingSize::new(width, height, base.multiple)
                    .map_err(|e| Error::invalid("--size", format!("{e} ({})", base.model.name)))?;
                let mut pipeline = base.clone();
                pipeline.size = Some(size);
                pipeline.source = config::SourceSpec::TestPattern {
                    width,
                    height,
                    fps: crate::frame::Fps::whole(crate::bench::LIVE_FPS),
                    frames: Some(frames),
                };
                Ok(pipeline)
            })
            .collect::<Result<Vec<_>>>()?;
        let live_frames = frames.clamp(crate::bench::LIVE_MIN_FRAMES, crate::bench::LIVE_MAX_FRAMES);
        Ok(BenchJob { pipelines, frames, live_frames, iterations, warmup })
    }
}

/// The bench's pipeline before `--set`: offline, the model and parameters of the flags, a null sink (the
/// source and working size are filled in per size).
fn bench_pipeline_text(dir: &Path, params: &ParamsFile) -> Result<String> {
    use toml::Value;
    let mut p = toml::Table::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            p.insert(key.into(), v);
        }
    };
    put("prompt", params.prompt.clone().map(Value::String));
    put("negative-prompt", params.negative_prompt.clone().map(Value::String));
    put("steps", params.steps.map(Value::Integer));
    put("strength", params.strength.map(Value::Float));
    put("guidance", params.guidance.map(Value::Float));
    put("seed", params.seed.map(Value::Integer));
    put("timesteps", params.timesteps.as_ref().map(|t| Value::Array(t.iter().map(|&v| Value::Integer(v)).collect())));
    let mut model = toml::Table::new();
    model.insert("dir".into(), Value::String(dir.display().to_string()));
    let mut source = toml::Table::new();
    source.insert("kind".into(), Value::String("test-pattern".into()));
    let mut sink = toml::Table::new();
    sink.insert("kind".into(), Value::String("null".into()));
    let mut file = toml::Table::new();
    file.insert("mode".into(), Value::String("offline".into()));
    file.insert("stats-interval-s".into(), Value::Float(0.0));
    file.insert("source".into(), Value::Table(source));
    file.insert("model".into(), Value::Table(model));
    file.insert("params".into(), Value::Table(p));
    file.insert("sink".into(), Value::Array(vec![Value::Table(sink)]));
    toml::to_string(&file).map_err(|e| Error::internal("bench", format!("cannot write its pipeline: {e}")))
}

impl BenchJob {
    /// Per working size: build the pipeline (load, warm up), the three throughput runs on its processor; then
    /// the stage table, on sessions of its own loaded once for every size.
    pub fn run(&self, runtime: &Runtime) -> Result<Vec<crate::bench::SizeReport>> {
        let mut throughput = Vec::with_capacity(self.pipelines.len());
        for pipeline in &self.pipelines {
            let started = Instant::now();
            let built = crate::pipeline::build(
                pipeline,
                &crate::pipeline::BuildOptions { runtime, display: false, extra_outputs: &[] },
            )?;
            let startup = started.elapsed();
            // The warm-up ran inside build, once, at the working size.
            let warm_up = Some(built.warm_up);
            let size = built.size;
            tracing::info!(size = %size, frames = self.frames, live_frames = self.live_frames, "bench: throughput runs");
            throughput.push(crate::bench::throughput(built.parts, self.frames, self.live_frames, startup, warm_up)?);
        }
        let first = &self.pipelines[0];
        let mut diffusion = Diffusion::load(runtime, &first.model)?;
        self.pipelines
            .iter()
            .zip(throughput)
            .map(|(pipeline, throughput)| {
                let (width, height) = pipeline.size.map_or((0, 0), |s| s.dims());
                let stages =
                    crate::bench::run(&mut diffusion, &pipeline.params, width, height, self.warmup, self.iterations)?;
                Ok(crate::bench::SizeReport { stages, throughput })
            })
            .collect()
    }
}

/// Write `text` to `path` (statistics, reports); a failure is an I/O error naming the file.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    crate::paths::write_atomically(path, text.as_bytes())
}

/// `latentcam pose IN OUT [--json FILE] [--model PATH] [--overlay]` for a still image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoseRequest {
    pub input: PathBuf,
    pub output: PathBuf,
    pub json: Option<PathBuf>,
    /// A pose model file or folder; None: models/movenet or ../shared/models/movenet.
    pub model: Option<PathBuf>,
    /// Draw the skeleton over the input instead of on black (the ControlNet conditioning image).
    pub overlay: bool,
}

/// What `latentcam pose` found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PoseReport {
    pub people: Vec<PersonJson>,
}

/// One person as JSON: 18 `[x, y, score]` in OpenPose-18 order, input-image pixels, score 0 when missing.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PersonJson {
    pub keypoints: Vec<[f32; 3]>,
}

impl PersonJson {
    pub fn of(person: &crate::pose::Person) -> PersonJson {
        PersonJson {
            keypoints: person
                .keypoints
                .iter()
                .map(|k| if k.score > 0.0 { [k.x, k.y, k.score] } else { [0.0, 0.0, 0.0] })
                .collect(),
        }
    }
}

impl PoseRequest {
    /// The pose model and settings; errors name this command's flag (`--model`).
    fn pose_spec(&self) -> Result<crate::config::PoseSpec> {
        let file = crate::config::file::PoseFile { model: self.model.clone(), ..Default::default() };
        crate::config::PoseSpec::parse(&file, &crate::config::Origin::Flags).map_err(|e| match e {
            Error::InvalidParameter { what: "--pose-model", problem } => {
                Error::InvalidParameter { what: "--model", problem }
            }
            other => other,
        })
    }

    /// What a pose run reads and writes.
    fn paths(&self) -> (Vec<NamedPath>, Vec<NamedPath>) {
        let mut writes = vec![NamedPath::new("output", &self.output)];
        writes.extend(self.json.iter().map(|j| NamedPath::new("--json", j)));
        (vec![NamedPath::new("input", &self.input)], writes)
    }

    pub fn run(&self, runtime: &Runtime) -> Result<PoseReport> {
        let (reads, writes) = self.paths();
        crate::paths::check_distinct(&reads, &writes)?;
        let image = crate::imaging::load_rgb(&self.input)?;
        let output = OutputImage::create(&self.output)?;
        let _locks = claim_paths(&reads, &writes)?;
        let spec = self.pose_spec()?;
        let mut estimator = crate::pose::stage::load_estimator(runtime, &spec)?;
        let people = estimator.estimate(&image)?;
        let picture = if self.overlay {
            crate::pose::render::overlay(&image, &people)
        } else {
            crate::pose::render::skeleton(image.width(), image.height(), &people)
        };
        output.write(&picture)?;
        let report = PoseReport { people: people.iter().map(PersonJson::of).collect() };
        if let Some(json) = &self.json {
            let text = serde_json::to_string_pretty(&report).map_err(|e| Error::internal("pose JSON", e))?;
            write_text(json, &text)?;
        }
        Ok(report)
    }
}

/// What `latentcam pose` reads: a still image or a video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoseInputKind {
    /// A PNG or JPEG file (told by its content, whatever its name).
    Image,
    /// Anything else: read by GStreamer as a video.
    Video,
}

/// The container extensions a video output may have (H.264 in it).
const VIDEO_EXTENSIONS: [&str; 3] = ["mp4", "mkv", "mov"];

impl PoseRequest {
    /// A PNG or JPEG file (by its first bytes) is a still image; anything else (a missing file too: the video
    /// path says it is missing) is read as a video.
    pub fn input_kind(&self) -> PoseInputKind {
        use std::io::Read;
        // Named as an image: read as one (an empty or broken image is then said to be one, not "a video").
        let ext = self.input.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
            return PoseInputKind::Image;
        }
        let mut head = [0u8; 16];
        let read = std::fs::File::open(&self.input).and_then(|mut f| f.read(&mut head));
        match read.ok().and_then(|n| image::guess_format(&head[..n]).ok()) {
            Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => PoseInputKind::Image,
            _ => PoseInputKind::Video,
        }
    }

    /// A video job, checked and opened: the output and JSON writable, the input decoding, the pose model
    /// loaded. Cheap checks first, so a typo fails before the input or the model is opened.
    pub fn video(&self, runtime: &Runtime) -> Result<PoseVideoJob> {
        let ext = self.output.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if !VIDEO_EXTENSIONS.contains(&ext.as_str()) {
            return Err(Error::Output {
                path: self.output.clone(),
                problem: format!(
                    "the input {} is a video: expected a .mp4, .mkv or .mov file name (H.264 in that container)",
                    self.input.display()
                ),
            });
        }
        let (reads, writes) = self.paths();
        crate::paths::check_distinct(&reads, &writes)?;
        let sink = crate::config::SinkSpec {
            index: 0,
            only_when: None,
            kind: crate::config::SinkKind::File {
                path: self.output.clone(),
                view: crate::config::View::Output,
                audio: false,
                quality: crate::config::DEFAULT_QUALITY,
            },
        };
        crate::sink::precheck(&sink)?;
        let locks = claim_paths(&reads, &writes)?;
        let spec = self.pose_spec()?;
        let source_spec = crate::config::SourceSpec::Gstreamer {
            input: crate::config::GstInput::Uri(self.input.display().to_string()),
            audio: false,
        };
        let source = crate::source::open(&source_spec, Mode::Offline, false)?;
        let format = source.format();
        let annotator = crate::pose::stage::PoseAnnotator::new(runtime, &spec)?;
        let context =
            crate::sink::SinkContext { width: format.width, height: format.height, fps: format.fps, live: false };
        let sink = crate::sink::open(&sink, &context, None)?;
        let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let processor = PoseVideoProcessor {
            annotator,
            size: (format.width, format.height),
            overlay: self.overlay,
            frame_duration: format.fps.map_or(std::time::Duration::from_millis(40), crate::frame::Fps::frame_duration),
            next_index: 0,
            frames: frames.clone(),
            render: std::time::Duration::ZERO,
        };
        Ok(PoseVideoJob {
            total_frames: source.total_frames(),
            source: source.describe(),
            output: self.output.clone(),
            json: self.json.clone(),
            frames,
            locks,
            parts: crate::pipeline::Parts {
                source,
                annotator: None,
                processor: Box::new(processor),
                sinks: vec![("file0".into(), sink)],
                window: None,
                mode: Mode::Offline,
                control: None,
            },
        })
    }
}

/// `latentcam pose` on a video, as JSON: one entry per frame, in order.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PoseVideoJson {
    pub frames: Vec<PoseFrameJson>,
}

/// One frame of a video: its timestamp (seconds, the input's) and the people in it (smoothed over time).
#[derive(Clone, Debug, serde::Serialize)]
pub struct PoseFrameJson {
    pub pts_s: f64,
    pub people: Vec<PersonJson>,
}

impl PoseVideoJson {
    /// The JSON text, one frame per line.
    pub fn to_text(&self) -> Result<String> {
        let mut text = String::from("{\"frames\":[\n");
        for (i, frame) in self.frames.iter().enumerate() {
            text += &serde_json::to_string(frame).map_err(|e| Error::internal("pose JSON", e))?;
            text += if i + 1 < self.frames.len() { ",\n" } else { "\n" };
        }
        text += "]}\n";
        Ok(text)
    }
}

/// A pose video job ready to run: the offline pipeline (the GStreamer source, the pose processor, the file sink).
pub struct PoseVideoJob {
    pub parts: crate::pipeline::Parts,
    /// The input's length when the container tells it (progress).
    pub total_frames: Option<u64>,
    /// The input, described (size, rate).
    pub source: String,
    pub output: PathBuf,
    json: Option<PathBuf>,
    frames: std::sync::Arc<std::sync::Mutex<Vec<PoseFrameJson>>>,
    /// The outputs' locks, held while the job lives.
    locks: Vec<OutputLock>,
}

/// What a pose video run did.
#[derive(Debug)]
pub struct PoseVideoReport {
    pub stats: crate::pipeline::stats::Snapshot,
    /// Frames written (video and JSON).
    pub frames: usize,
    /// Frames in which at least one person was found.
    pub frames_with_people: usize,
    /// Stopped by Ctrl-C: the video and the JSON hold the frames before it.
    pub interrupted: bool,
}

impl PoseVideoJob {
    /// Every frame through the pose model into the video; then the JSON, also when the run failed or was
    /// stopped (it then holds the frames written).
    pub fn run(self, stop: crate::pipeline::StopFlag, tick: crate::pipeline::Tick) -> Result<PoseVideoReport> {
        let _locks = self.locks;
        let result = crate::pipeline::run(self.parts, stop, tick);
        let json =
            PoseVideoJson { frames: std::mem::take(&mut *self.frames.lock().unwrap_or_else(|p| p.into_inner())) };
        let written = match &self.json {
            Some(path) if result.is_ok() || !json.frames.is_empty() => write_text(path, &json.to_text()?),
            _ => Ok(()),
        };
        let report = result?;
        written?;
        Ok(PoseVideoReport {
            frames: json.frames.len(),
            frames_with_people: json.frames.iter().filter(|f| !f.people.is_empty()).count(),
            interrupted: report.interrupted,
            stats: report.stats,
        })
    }
}

/// The pose video's processor: each frame's people (estimated, smoothed on the frame's timestamp), drawn on
/// black or over the frame, and recorded for the JSON.
struct PoseVideoProcessor {
    annotator: crate::pose::stage::PoseAnnotator,
    size: (u32, u32),
    overlay: bool,
    /// Frames without a timestamp are placed on this rate's clock.
    frame_duration: std::time::Duration,
    next_index: u32,
    frames: std::sync::Arc<std::sync::Mutex<Vec<PoseFrameJson>>>,
    render: std::time::Duration,
}

impl PoseVideoProcessor {
    fn picture(&mut self, image: &image::RgbImage, pts: Option<std::time::Duration>) -> Result<image::RgbImage> {
        let pts = pts.unwrap_or_else(|| self.frame_duration.saturating_mul(self.next_index));
        self.next_index = self.next_index.saturating_add(1);
        let people = self.annotator.people(image, pts.as_secs_f64())?;
        let started = Instant::now();
        let picture = if self.overlay {
            crate::pose::render::overlay(image, people)
        } else {
            crate::pose::render::skeleton(image.width(), image.height(), people)
        };
        self.render = started.elapsed();
        self.frames
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(PoseFrameJson { pts_s: pts.as_secs_f64(), people: people.iter().map(PersonJson::of).collect() });
        Ok(picture)
    }
}

impl crate::pipeline::Processor for PoseVideoProcessor {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn process(&mut self, input: &image::RgbImage) -> Result<image::RgbImage> {
        self.picture(input, None)
    }

    fn push_frame(&mut self, frame: &crate::frame::Frame, ready: &mut Vec<image::RgbImage>) -> Result<()> {
        ready.push(self.picture(&frame.image, frame.pts)?);
        Ok(())
    }

    fn last_stage_times(&self) -> Vec<(&'static str, std::time::Duration)> {
        use crate::pipeline::Annotator;
        let mut times = self.annotator.last_stage_times();
        times.retain(|(stage, _)| *stage != "pose render");
        times.push(("pose render", self.render));
        times
    }
}

/// `latentcam flicker IN OUT [--json FILE]` as given: a video and its converted output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlickerRequest {
    pub input: PathBuf,
    pub output: PathBuf,
    pub json: Option<PathBuf>,
}

/// What `latentcam flicker` prints (values on the 0..1 luma scale; see [`crate::flicker`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct FlickerReport {
    /// Frames compared: both videos' frames when they have as many, else the shorter one's (the common prefix).
    pub frames: u64,
    pub input_frames: u64,
    pub output_frames: u64,
    /// The analysis grid (the output's aspect ratio, at most 256 wide).
    pub width: u32,
    pub height: u32,
    /// The measures (`input_change` ... `warped_ratio`), at the top level of the JSON.
    #[serde(flatten)]
    pub metrics: crate::flicker::FlickerMetrics,
    /// Said when the frame counts differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl FlickerRequest {
    /// Decode both videos in step (the same GStreamer source as `convert`), each frame brought to the analysis
    /// grid, and measure. Bad input (a missing or undecodable file, fewer than 2 frames) is exit code 2.
    pub fn run(&self) -> Result<FlickerReport> {
        let reads = [NamedPath::new("input", &self.input), NamedPath::new("output video", &self.output)];
        let writes: Vec<NamedPath> = self.json.iter().map(|j| NamedPath::new("--json", j)).collect();
        let _locks = claim_paths(&reads, &writes)?;
        let open = |path: &Path| {
            let spec = crate::config::SourceSpec::Gstreamer {
                input: crate::config::GstInput::Uri(path.display().to_string()),
                audio: false,
            };
            crate::source::open(&spec, Mode::Offline, false)
        };
        let mut input = open(&self.input)?;
        let mut output = open(&self.output)?;
        let format = output.format();
        let (width, height) = crate::flicker::analysis_size(format.width, format.height);
        let luma = |image: &image::RgbImage| -> Result<crate::flicker::Luma> {
            Ok(crate::flicker::Luma::from_rgb(&imaging::resize_cover(image, width, height)?))
        };
        let mut meter = crate::flicker::FlickerMeter::new();
        let (mut input_frames, mut output_frames) = (0u64, 0u64);
        loop {
            let a = input.next_frame()?;
            let b = output.next_frame()?;
            input_frames += u64::from(a.is_some());
            output_frames += u64::from(b.is_some());
            match (a, b) {
                (Some(a), Some(b)) => meter.push(luma(&a.image)?, luma(&b.image)?),
                (Some(_), None) => {
                    while input.next_frame()?.is_some() {
                        input_frames += 1;
                    }
                    break;
                }
                (None, Some(_)) => {
                    while output.next_frame()?.is_some() {
                        output_frames += 1;
                    }
                    break;
                }
                (None, None) => break,
            }
        }
        for (path, frames) in [(&self.input, input_frames), (&self.output, output_frames)] {
            if frames < 2 {
                return Err(Error::Source {
                    source_name: path.display().to_string(),
                    problem: format!("has {frames} frame(s): at least 2 are needed to measure frame-to-frame change"),
                });
            }
        }
        let note = (input_frames != output_frames).then(|| {
            format!(
                "the input has {input_frames} frames and the output {output_frames}: the first {} of each were compared",
                meter.frames()
            )
        });
        if let Some(note) = &note {
            tracing::warn!("{note}");
        }
        let report = FlickerReport {
            frames: meter.frames(),
            input_frames,
            output_frames,
            width,
            height,
            metrics: meter.metrics(),
            note,
        };
        if let Some(path) = &self.json {
            let text = serde_json::to_string_pretty(&report).map_err(|e| Error::internal("flicker JSON", e))?;
            write_text(path, &text)?;
        }
        Ok(report)
    }
}
