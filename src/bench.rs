//! What `latentcam bench` measures.
//!
//! - Stage timings ([`run`]): text encoder, VAE encode, one UNet step, VAE decode, and a whole img2img frame.
//!   Every stage runs `warmup` times untimed, then `iterations` times timed; the report gives median, mean,
//!   min and max in milliseconds.
//! - Throughput and latency ([`throughput`]), with one pipeline's processor (its sessions) shared by three
//!   runs, one after the other: the processor alone on one thread (`bare_fps`), the offline pipeline with its
//!   threads and links (`pipeline_fps`; `pipeline_over_bare` is what the engine costs or gains), and a live run
//!   at 30 fps (capture-to-sink latency p50/p95 and the first frame's).
//!
//! Compare numbers taken in one run on one machine.

use std::num::NonZeroU32;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use image::RgbImage;
use ndarray::Array4;
use serde::Serialize;

use crate::config::Mode;
use crate::diffusion::{Diffusion, Params};
use crate::error::{Error, Result};
use crate::frame::{Fps, Frame, Processed};
use crate::pipeline::{self, Parts, Processor};
use crate::sink::null::NullSink;
use crate::sink::{Sink, StreamEnd};
use crate::source::test_pattern::TestPattern;

#[derive(Clone, Debug, Serialize)]
pub struct StageStats {
    pub stage: &'static str,
    pub median_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub iterations: usize,
}

impl StageStats {
    fn from_samples(stage: &'static str, mut samples_ms: Vec<f64>) -> StageStats {
        samples_ms.sort_by(f64::total_cmp);
        let n = samples_ms.len();
        let median_ms = if n % 2 == 1 { samples_ms[n / 2] } else { (samples_ms[n / 2 - 1] + samples_ms[n / 2]) / 2.0 };
        StageStats {
            stage,
            median_ms,
            mean_ms: samples_ms.iter().sum::<f64>() / n as f64,
            min_ms: samples_ms[0],
            max_ms: samples_ms[n - 1],
            iterations: n,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    /// The model family (`sd`, `sdxl`).
    pub family: &'static str,
    pub execution_provider: String,
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub classifier_free_guidance: bool,
    pub stages: Vec<StageStats>,
}

impl BenchReport {
    /// A fixed-width table for terminals and BENCHMARKS.md.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} ({}) {}x{} on {} ({} steps{})\n{:<22} {:>10} {:>10} {:>10} {:>10}\n",
            self.model,
            self.family,
            self.width,
            self.height,
            self.execution_provider,
            self.steps,
            if self.classifier_free_guidance { ", CFG batch 2" } else { "" },
            "stage",
            "median ms",
            "mean ms",
            "min ms",
            "max ms"
        );
        for s in &self.stages {
            out += &format!(
                "{:<22} {:>10.2} {:>10.2} {:>10.2} {:>10.2}\n",
                s.stage, s.median_ms, s.mean_ms, s.min_ms, s.max_ms
            );
        }
        out
    }
}

fn time_stage(warmup: usize, iterations: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        f()?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(samples)
}

/// A smooth deterministic test image (gradients and rings), RGB 0..1.
pub fn test_image(width: u32, height: u32) -> Array4<f32> {
    let (w, h) = (width as f32, height as f32);
    Array4::from_shape_fn((1, 3, height as usize, width as usize), |(_, c, y, x)| {
        let (u, v) = (x as f32 / w, y as f32 / h);
        let r = ((u - 0.5).powi(2) + (v - 0.5).powi(2)).sqrt();
        match c {
            0 => u,
            1 => v,
            _ => 0.5 + 0.5 * (r * 40.0).sin(),
        }
    })
}

/// Time every stage of `diffusion` at `width`×`height` with `params` (steps, strength, guidance, prompt).
pub fn run(
    diffusion: &mut Diffusion,
    params: &Params,
    width: u32,
    height: u32,
    warmup: usize,
    iterations: usize,
) -> Result<BenchReport> {
    let iterations = iterations.max(1);
    let image = test_image(width, height);
    let prepared = diffusion.prepare(params)?;
    let mut stages = Vec::new();

    let prompt = params.prompt.clone();
    let text = time_stage(warmup, iterations, || match diffusion.text_encoder_mut() {
        Some(text) => text.encode_uncached(&prompt).map(|_| ()),
        None => Err(Error::internal("bench", "the text encoder was handed to its thread")),
    })?;
    stages.push(StageStats::from_samples("text encoder", text));

    let latents = diffusion.encode(image.view())?;
    let encode = time_stage(warmup, iterations, || diffusion.encode(image.view()).map(|_| ()))?;
    stages.push(StageStats::from_samples("VAE encode", encode));

    if !prepared.vae_only() {
        let unet = time_stage(warmup, iterations, || diffusion.unet_once(&prepared, latents.view()).map(|_| ()))?;
        stages.push(StageStats::from_samples("UNet step", unet));
    }

    let decode = time_stage(warmup, iterations, || diffusion.decode(latents.view()).map(|_| ()))?;
    stages.push(StageStats::from_samples("VAE decode", decode));

    let frame = time_stage(warmup, iterations, || diffusion.run(&prepared, image.view()).map(|_| ()))?;
    stages.push(StageStats::from_samples("img2img frame", frame));

    Ok(BenchReport {
        model: diffusion.folder().name.clone(),
        family: diffusion.folder().family.key(),
        execution_provider: diffusion.unet().model().ep.to_string(),
        width,
        height,
        steps: prepared.plan.steps.len(),
        classifier_free_guidance: prepared.uses_cfg(),
        stages,
    })
}

/// The live run's frame rate (a typical camera's).
pub const LIVE_FPS: NonZeroU32 = NonZeroU32::new(30).unwrap();
/// The live run has `frames` frames, at least this many (2 s at 30 fps: enough samples for a p95) ...
pub const LIVE_MIN_FRAMES: u64 = 60;
/// ... and at most this many (10 s).
pub const LIVE_MAX_FRAMES: u64 = 300;
/// The bare loop cycles through at most this many distinct pre-rendered frames (the model's work does not
/// depend on the picture; a long run does not hold thousands of frames in memory).
const BARE_DISTINCT_FRAMES: u64 = 256;

/// Throughput and latency of one pipeline at one working size (see the module docs).
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    /// Frames of the bare loop and of the offline pipeline.
    pub frames: u64,
    /// Frames the processor batches (1: frame by frame).
    pub stream_batch: usize,
    /// Loading the sessions and warming them up: what `run` costs before its first frame.
    pub startup_ms: f64,
    /// The one warm-up run at the working size, before the bare loop (it serves all three runs); None where the
    /// pipeline's build does not say how long it took.
    pub warm_up_ms: Option<f64>,
    /// `frames` through the processor alone, back to back on one thread.
    pub bare_fps: f64,
    /// `frames` of the test pattern through the offline pipeline (source, preprocess, process, null sink
    /// threads), from its start to the last frame delivered.
    pub pipeline_fps: f64,
    /// `pipeline_fps / bare_fps`.
    pub pipeline_over_bare: f64,
    /// The live run: a test pattern at [`LIVE_FPS`], latest frame wins.
    pub live_frames: u64,
    pub live_delivered: u64,
    pub live_dropped: u64,
    /// Capture to sink, over the live run's delivered frames.
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    /// The live run's first frame, capture to sink.
    pub first_frame_ms: f64,
}

impl Throughput {
    /// A few lines for the terminal.
    pub fn text(&self) -> String {
        format!(
            "throughput over {} frames (stream batch {}; start-up {:.0} ms{})\n\
             {:<22} {:>10.2} fps  (the processor alone, one thread)\n\
             {:<22} {:>10.2} fps  (offline pipeline: source, preprocess, process, null sink threads)\n\
             {:<22} {:>10.3}\n\
             live at {} fps ({} frames, {} delivered, {} dropped): latency p50 {:.1} ms, p95 {:.1} ms, \
             first frame {:.1} ms\n",
            self.frames,
            self.stream_batch,
            self.startup_ms,
            self.warm_up_ms.map_or(String::new(), |ms| format!(", of which warm-up {ms:.0} ms")),
            "bare_fps",
            self.bare_fps,
            "pipeline_fps",
            self.pipeline_fps,
            "pipeline_over_bare",
            self.pipeline_over_bare,
            LIVE_FPS,
            self.live_frames,
            self.live_delivered,
            self.live_dropped,
            self.latency_p50_ms,
            self.latency_p95_ms,
            self.first_frame_ms
        )
    }
}

/// Everything `latentcam bench` reports for one working size: the stage table and the throughput figures,
/// side by side (in JSON: one object, the throughput keys and `stages` at its top level).
#[derive(Clone, Debug, Serialize)]
pub struct SizeReport {
    #[serde(flatten)]
    pub stages: BenchReport,
    #[serde(flatten)]
    pub throughput: Throughput,
}

impl SizeReport {
    pub fn text(&self) -> String {
        format!("{}{}", self.stages.table(), self.throughput.text())
    }
}

/// One processor (and so one set of sessions) used by several runs in turn: each run's [`Parts`] holds a
/// clone. The lock is never contended (the runs follow each other).
#[derive(Clone)]
pub struct SharedProcessor(Arc<Mutex<Box<dyn Processor>>>);

impl SharedProcessor {
    pub fn new(processor: Box<dyn Processor>) -> SharedProcessor {
        SharedProcessor(Arc::new(Mutex::new(processor)))
    }

    fn lock(&self) -> MutexGuard<'_, Box<dyn Processor>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Processor for SharedProcessor {
    fn size(&self) -> (u32, u32) {
        self.lock().size()
    }
    fn lag_frames(&self) -> usize {
        self.lock().lag_frames()
    }
    fn push(&mut self, frame: &Frame, ready: &mut Vec<RgbImage>) -> Result<()> {
        self.lock().push(frame, ready)
    }
    fn finish(&mut self, ready: &mut Vec<RgbImage>) -> Result<()> {
        self.lock().finish(ready)
    }
    fn warm_up(&mut self) -> Result<Duration> {
        self.lock().warm_up()
    }
    fn last_stage_times(&self) -> Vec<(&'static str, Duration)> {
        self.lock().last_stage_times()
    }
    fn control(&mut self, values: &crate::control::LiveValues, ready: &mut Vec<RgbImage>) -> Result<()> {
        self.lock().control(values, ready)
    }
}

/// A null sink that notes when the last frame arrived.
struct ClockedNull {
    last: Arc<Mutex<Option<Instant>>>,
}

impl Sink for ClockedNull {
    fn write(&mut self, _frame: &Processed) -> Result<()> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(())
    }

    fn finish(&mut self, _end: StreamEnd) -> Result<()> {
        Ok(())
    }
}

/// The three runs, in this order, with the processor of `parts`: `frames` pre-rendered test-pattern frames
/// through the processor alone; `parts` as given (an offline test-pattern source of `frames` frames at the
/// working size, no pacing), its sinks replaced by one null sink that notes the last delivery; a live run of
/// `live_frames` test-pattern frames at [`LIVE_FPS`] into a null sink. The processor must be warmed up
/// already (`startup`: how long loading and warming up took, `warm_up`: the warm-up alone, for the report).
pub fn throughput(
    mut parts: Parts,
    frames: u64,
    live_frames: u64,
    startup: Duration,
    warm_up: Option<Duration>,
) -> Result<Throughput> {
    let internal = |problem: String| Error::internal("bench", problem);
    if parts.mode != Mode::Offline {
        return Err(internal("the throughput run needs an offline pipeline".into()));
    }
    let shared = SharedProcessor::new(std::mem::replace(&mut parts.processor, Box::new(Idle)));
    let (width, height) = shared.size();
    let stream_batch = shared.lag_frames() + 1;

    // 1. The processor alone: the same per-frame work, back to back, no threads or links.
    let distinct = frames.min(BARE_DISTINCT_FRAMES);
    let images: Vec<Frame> = (0..distinct).map(|n| Frame::new(TestPattern::render(width, height, n))).collect();
    let mut bare = shared.clone();
    let mut ready = Vec::with_capacity(stream_batch);
    let mut outputs = 0u64;
    let started = Instant::now();
    for n in 0..frames {
        bare.push(&images[(n % distinct) as usize], &mut ready)?;
        outputs += ready.len() as u64;
        ready.clear();
    }
    bare.finish(&mut ready)?;
    let bare_s = started.elapsed().as_secs_f64();
    outputs += ready.len() as u64;
    if outputs != frames {
        return Err(internal(format!("the processor returned {outputs} frames for {frames}")));
    }
    drop(images);

    // 2. The offline pipeline: every frame, blocking links; timed from its start to the last delivery.
    let last = Arc::new(Mutex::new(None));
    parts.processor = Box::new(shared.clone());
    parts.sinks = vec![("null0".to_string(), Box::new(ClockedNull { last: last.clone() }))];
    parts.window = None;
    let started = Instant::now();
    let report = pipeline::run(parts, Arc::new(AtomicBool::new(false)), &mut |_| {})?;
    let delivered = report.stats.frames_delivered.values().copied().max().unwrap_or(0);
    let last_delivery = *last.lock().unwrap_or_else(|p| p.into_inner());
    let pipeline_s = match last_delivery {
        Some(end) if delivered == frames => end.duration_since(started).as_secs_f64(),
        _ => return Err(internal(format!("the offline pipeline delivered {delivered} of {frames} frames"))),
    };

    // 3. Live at 30 fps: the source paced like a camera, latest frame wins.
    let live = Parts {
        annotator: None,
        source: Box::new(TestPattern::new(width, height, Fps::whole(LIVE_FPS), Some(live_frames), true)),
        processor: Box::new(shared.clone()),
        sinks: vec![("null0".to_string(), Box::new(NullSink))],
        window: None,
        mode: Mode::Live,
        control: None,
    };
    let stats = pipeline::run(live, Arc::new(AtomicBool::new(false)), &mut |_| {})?.stats;
    let (Some(p50), Some(p95), Some(first)) =
        (stats.latency_p50_ms, stats.latency_p95_ms, stats.first_frame_latency_ms)
    else {
        return Err(internal("the live run delivered no frame".into()));
    };

    let per_s = |s: f64| frames as f64 / s.max(1e-9);
    let (bare_fps, pipeline_fps) = (per_s(bare_s), per_s(pipeline_s));
    Ok(Throughput {
        frames,
        stream_batch,
        startup_ms: startup.as_secs_f64() * 1e3,
        warm_up_ms: warm_up.map(|d| d.as_secs_f64() * 1e3),
        bare_fps,
        pipeline_fps,
        pipeline_over_bare: pipeline_fps / bare_fps,
        live_frames,
        live_delivered: stats.frames_delivered.values().copied().max().unwrap_or(0),
        live_dropped: stats.dropped_total,
        latency_p50_ms: p50,
        latency_p95_ms: p95,
        first_frame_ms: first,
    })
}

/// Stands in for the processor while [`throughput`] holds it.
struct Idle;

impl Processor for Idle {
    fn size(&self) -> (u32, u32) {
        (0, 0)
    }
    fn push(&mut self, _frame: &Frame, _ready: &mut Vec<RgbImage>) -> Result<()> {
        Err(Error::internal("bench", "the processor was taken for the benchmark"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passes frames through; holds `lag` frames back like a stream batch.
    struct Fake {
        lag: usize,
        held: Vec<RgbImage>,
    }

    impl Processor for Fake {
        fn size(&self) -> (u32, u32) {
            (16, 16)
        }
        fn lag_frames(&self) -> usize {
            self.lag
        }
        fn push(&mut self, frame: &Frame, ready: &mut Vec<RgbImage>) -> Result<()> {
            self.held.push((*frame.image).clone());
            if self.held.len() > self.lag {
                ready.append(&mut self.held);
            }
            Ok(())
        }
        fn finish(&mut self, ready: &mut Vec<RgbImage>) -> Result<()> {
            ready.append(&mut self.held);
            Ok(())
        }
    }

    fn offline_parts(processor: Box<dyn Processor>, frames: u64) -> Parts {
        Parts {
            annotator: None,
            source: Box::new(TestPattern::new(16, 16, Fps::whole(LIVE_FPS), Some(frames), false)),
            processor,
            sinks: vec![("null0".to_string(), Box::new(NullSink))],
            window: None,
            mode: Mode::Offline,
            control: None,
        }
    }

    #[test]
    fn three_runs_share_one_processor_and_count_every_frame() {
        for lag in [0, 3] {
            let t = throughput(
                offline_parts(Box::new(Fake { lag, held: Vec::new() }), 10),
                10,
                LIVE_MIN_FRAMES.min(12),
                Duration::from_millis(5),
                Some(Duration::from_millis(2)),
            )
            .unwrap();
            assert_eq!((t.frames, t.stream_batch), (10, lag + 1));
            assert!(t.bare_fps.is_finite() && t.bare_fps > 0.0 && t.pipeline_fps > 0.0, "{t:?}");
            assert!((t.pipeline_over_bare - t.pipeline_fps / t.bare_fps).abs() < 1e-12);
            assert!(t.latency_p50_ms > 0.0 && t.latency_p95_ms >= t.latency_p50_ms && t.first_frame_ms > 0.0);
            assert_eq!(t.live_frames, 12);
            assert_eq!((t.startup_ms, t.warm_up_ms), (5.0, Some(2.0)));
        }
    }

    #[test]
    fn a_live_pipeline_is_refused() {
        let mut parts = offline_parts(Box::new(Fake { lag: 0, held: Vec::new() }), 3);
        parts.mode = Mode::Live;
        assert!(throughput(parts, 3, 3, Duration::ZERO, None).is_err());
    }
}
