//! `latentcam bench`: the job (flags checked into one pipeline per working size, then run); the measuring
//! itself is [`crate::bench`].

use std::time::Instant;

use super::DiffusionRequest;
use crate::config::file::{ControlFile, EngineFile, ModelFile, PipelineFile, SinkFile, SourceFile};
use crate::config::{self, Mode, Origin, Pipeline};
use crate::diffusion::Diffusion;
use crate::error::{Error, Result};
use crate::infer::Runtime;

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
        let sizes = self.sizes.iter().map(|s| super::size_flag(s)).collect::<Result<Vec<_>>>()?;
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
        if params.prompt.as_ref().and_then(toml::Value::as_str).is_none_or(str::is_empty) {
            params.prompt = Some(toml::Value::String(BENCH_PROMPT.into()));
        }
        // Offline, the model and parameters of the flags, a null sink (the source and working size are filled
        // in per size); then `--set`, as `run --set` applies it to a file.
        let file = PipelineFile {
            mode: Mode::Offline,
            source: SourceFile::TestPattern { width: None, height: None, fps: None, frames: None },
            model: ModelFile { dir: Some(folder.dir.clone()), size: None },
            params,
            engine: EngineFile::default(),
            pose: None,
            mask: None,
            control: ControlFile::default(),
            sinks: vec![SinkFile::Null { only_when: None }],
            stats_interval_s: Some(0.0),
        };
        // Messages as `run --set` gives them for a file named `bench`, then said of `--set`.
        let as_set = |problem: String| Error::InvalidParameter {
            what: "--set",
            problem: problem.strip_prefix("--set ").unwrap_or(&problem).into(),
        };
        let file = config::overrides::apply_to_file(file, &self.overrides).map_err(as_set)?;
        let base = Pipeline::from_file(file, Origin::File("bench".into())).map_err(|e| match e {
            Error::Pipeline { problem, .. } => as_set(problem),
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
