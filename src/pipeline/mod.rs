//! The streaming engine: named threads joined by bounded links.
//!
//! ```text
//! source ──link──> preprocess ──link──> process (diffusion) ──tee──links──> sink threads
//!                  (resize to the         (owns every ORT               └──latest slot──> window (main thread)
//!                   working size)          session)
//! ```
//!
//! Live mode links hold one frame and drop the oldest (the latest frame wins, latency cannot pile up, drops are
//! counted); offline links block (every frame arrives, in order). The end of a stream travels as the sender
//! side of each link closing: every stage drains what it has, sinks finalize, threads end. A stop request
//! (Ctrl-C, window closed) only stops the source; the rest drains the same way.

pub mod build;
pub mod stats;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;

pub use self::build::{BuildOptions, build};
use self::stats::{Snapshot, Stats};
use crate::config::{Mode, View, WorkingSize};
use crate::diffusion::FramePath;
use crate::error::{Error, Result};
use crate::frame::{Frame, Processed};
use crate::imaging;
use crate::link::{LinkReceiver, LinkSender, Overflow, link};
use crate::similarity::{Decision, SimilarityFilter, SimilaritySettings};
use crate::sink::{LatestSlot, Sink, StreamEnd, WindowHost};
use crate::source::Source;

/// Set to ask a running pipeline to stop (Ctrl-C, a closed window); the pipeline drains and finalizes.
pub type StopFlag = Arc<AtomicBool>;

/// The stage that turns a model-sized frame into the output frame.
pub trait Processor: Send {
    /// The size frames must have when they reach `process`.
    fn size(&self) -> (u32, u32);
    /// One frame in, its output out. Processors that hold frames back (stream batch) implement `push` and
    /// `finish` instead and make this push one frame and finish.
    fn process(&mut self, input: &RgbImage) -> Result<RgbImage>;
    /// Frames held back before the first output appears (stream batch: k-1); outputs still come in input order.
    fn lag_frames(&self) -> usize {
        0
    }
    /// Feed one frame; append the outputs that are ready, oldest first. The default is 1:1 through `process`.
    fn push(&mut self, input: &RgbImage, ready: &mut Vec<RgbImage>) -> Result<()> {
        ready.push(self.process(input)?);
        Ok(())
    }
    /// Feed one frame with what came with it (the conditioning image of pose-guided runs); the default ignores
    /// the extras.
    fn push_frame(&mut self, frame: &Frame, ready: &mut Vec<RgbImage>) -> Result<()> {
        self.push(&frame.image, ready)
    }
    /// End of stream: append the outputs of the frames still held back.
    fn finish(&mut self, ready: &mut Vec<RgbImage>) -> Result<()> {
        let _ = ready;
        Ok(())
    }
    /// Run once on a frame of the working size before frames flow, so that the first real frame does not pay
    /// for the models' first run (kernel selection, allocations: seconds on a GPU). Returns how long it took.
    fn warm_up(&mut self) -> Result<Duration> {
        Ok(Duration::ZERO)
    }
    /// Time spent in sub-stages by the last `process` call, for the statistics.
    fn last_stage_times(&self) -> Vec<(&'static str, Duration)> {
        Vec::new()
    }
}

/// Work done on each frame before diffusion, in the preprocess thread: the pose estimator (it owns its session,
/// and overlaps with the diffusion of the previous frame).
pub trait Annotator: Send {
    /// Name in the statistics.
    fn stage(&self) -> &'static str;
    fn annotate(&mut self, frame: &mut Frame) -> Result<()>;
    /// Time spent in sub-stages by the last `annotate`, for the statistics.
    fn last_stage_times(&self) -> Vec<(&'static str, Duration)> {
        Vec::new()
    }
}

/// Everything a run needs, built by [`build`] (or by hand in tests).
pub struct Parts {
    pub source: Box<dyn Source>,
    /// Pose estimation and the skeleton (pose-guided runs), before the processor.
    pub annotator: Option<Box<dyn Annotator>>,
    pub processor: Box<dyn Processor>,
    /// Named sinks, each run on its own thread.
    pub sinks: Vec<(String, Box<dyn Sink>)>,
    /// A window on the calling thread, showing this view.
    pub window: Option<View>,
    pub mode: Mode,
}

/// How the calling thread spends its time while the pipeline runs: showing a window, or waiting.
pub struct Report {
    pub stats: Snapshot,
    /// The run ended because stop was requested (not at the end of the stream).
    pub interrupted: bool,
}

/// Called on the calling thread about every 200 ms with fresh statistics (progress bars, periodic logs).
pub type Tick<'a> = &'a mut dyn FnMut(&Snapshot);

const TICK: Duration = Duration::from_millis(200);

/// Run a pipeline to the end of its stream or until `stop` is set. Returns the final statistics, or the first
/// error any stage hit (after every stage has wound down and every sink has finalized).
pub fn run(parts: Parts, stop: StopFlag, tick: Tick) -> Result<Report> {
    let Parts { source, annotator, processor, sinks, window, mode } = parts;
    let stats = Arc::new(Stats::default());
    let failure: Arc<Mutex<Option<Error>>> = Arc::default();
    let (capacity, overflow) = match mode {
        Mode::Live => (1, Overflow::DropOldest),
        Mode::Offline => (2, Overflow::Block),
    };
    // The first error of any stage is the run's; it stops the source, and the rest drains.
    let fail = {
        let failure = failure.clone();
        let stop = stop.clone();
        move |stage: &str, e: Error| {
            stop.store(true, Ordering::SeqCst);
            let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e.while_running(stage));
        }
    };

    let (to_pre, pre_in) = link::<Frame>("source->preprocess", capacity, overflow);
    let (to_proc, proc_in) = link::<Frame>("preprocess->process", capacity, overflow);
    stats.add_link(to_pre.counters());
    stats.add_link(to_proc.counters());

    let source_done = Arc::new(AtomicBool::new(false));
    let mut sink_links = Vec::new();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for (name, sink) in sinks {
        let (tx, rx) = link::<Arc<Processed>>(format!("process->{name}"), capacity, overflow);
        stats.add_link(tx.counters());
        sink_links.push((name.clone(), tx));
        threads.push(spawn(&format!("sink {name}"), fail.clone(), {
            let (stats, done) = (stats.clone(), source_done.clone());
            move || sink_loop(&name, sink, rx, &stats, &done)
        })?);
    }
    let slot = window.map(|_| Arc::new(LatestSlot::default()));

    threads.push(spawn("source", fail.clone(), {
        let (stats, stop, done) = (stats.clone(), stop.clone(), source_done.clone());
        move || source_loop(source, to_pre, &stats, &stop, &done, mode == Mode::Live)
    })?);
    let size = processor.size();
    threads.push(spawn("preprocess", fail.clone(), {
        let stats = stats.clone();
        move || preprocess_loop(size, annotator, pre_in, to_proc, &stats)
    })?);
    threads.push(spawn("process", fail.clone(), {
        let (stats, slot) = (stats.clone(), slot.clone());
        move || process_loop(processor, proc_in, sink_links, slot, &stats)
    })?);

    let all_done = || threads.iter().all(|t| t.is_finished());
    match (window, slot) {
        (Some(view), Some(slot)) => {
            let mut host = Host { stop: &stop, stats: &stats, all_done: &all_done, tick };
            if let Err(e) = show_window(view, &slot, &mut host) {
                fail("window", e);
            }
        }
        _ => {
            while !all_done() {
                std::thread::sleep(TICK);
                tick(&stats.snapshot());
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
    let interrupted = stop.load(Ordering::SeqCst) && !source_done.load(Ordering::SeqCst);
    if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    Ok(Report { stats: stats.snapshot(), interrupted })
}

/// The running pipeline as the window sees it.
struct Host<'a, 'b> {
    stop: &'a StopFlag,
    stats: &'a Stats,
    all_done: &'a dyn Fn() -> bool,
    tick: Tick<'b>,
}

impl WindowHost for Host<'_, '_> {
    fn pipeline_done(&self) -> bool {
        (self.all_done)()
    }
    fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
    fn delivered(&self, captured: Instant) {
        self.stats.delivered("window", captured);
    }
    fn latency_p50_ms(&self) -> Option<f64> {
        self.stats.snapshot().latency_p50_ms
    }
    fn tick(&mut self) {
        (self.tick)(&self.stats.snapshot());
    }
}

#[cfg(feature = "window")]
fn show_window(view: View, slot: &LatestSlot, host: &mut dyn WindowHost) -> Result<()> {
    crate::sink::window::run(view, slot, host)
}

#[cfg(not(feature = "window"))]
fn show_window(_: View, _: &LatestSlot, _: &mut dyn WindowHost) -> Result<()> {
    Err(crate::source::not_built("window sink", "window"))
}

/// A named thread whose error (or panic) stops the pipeline and is reported as that stage's.
fn spawn(
    name: &str,
    fail: impl Fn(&str, Error) + Send + 'static,
    body: impl FnOnce() -> Result<()> + Send + 'static,
) -> Result<JoinHandle<()>> {
    let stage = name.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => fail(&stage, e),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                fail(&stage, Error::internal(format!("thread {stage}"), format!("panicked: {msg}")));
            }
        })
        .map_err(|e| Error::internal("pipeline", format!("cannot start thread {name}: {e}")))
}

fn source_loop(
    mut source: Box<dyn Source>,
    out: LinkSender<Frame>,
    stats: &Stats,
    stop: &StopFlag,
    done: &AtomicBool,
    live: bool,
) -> Result<()> {
    let _span = tracing::debug_span!("source", source = %source.describe()).entered();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let Some(frame) = source.next_frame()? else {
            done.store(true, Ordering::SeqCst);
            tracing::debug!("end of stream");
            return Ok(());
        };
        if !live {
            // Offline this is decoding work; live it is mostly waiting for the camera's next frame.
            stats.stage("decode", started.elapsed());
        }
        stats.captured();
        if out.send(frame).is_err() {
            break;
        }
    }
    Ok(())
}

fn preprocess_loop(
    size: (u32, u32),
    mut annotator: Option<Box<dyn Annotator>>,
    input: LinkReceiver<Frame>,
    out: LinkSender<Frame>,
    stats: &Stats,
) -> Result<()> {
    while let Some(mut frame) = input.recv() {
        let started = Instant::now();
        if frame.image.dimensions() != size {
            frame.image = Arc::new(imaging::resize_cover(&frame.image, size.0, size.1)?);
        }
        stats.stage("preprocess", started.elapsed());
        if let Some(annotator) = annotator.as_mut() {
            let started = Instant::now();
            annotator.annotate(&mut frame)?;
            stats.stage(annotator.stage(), started.elapsed());
            for (stage, elapsed) in annotator.last_stage_times() {
                stats.stage(stage, elapsed);
            }
        }
        if out.send(frame).is_err() {
            break;
        }
    }
    Ok(())
}

fn process_loop(
    mut processor: Box<dyn Processor>,
    input: LinkReceiver<Frame>,
    sinks: Vec<(String, LinkSender<Arc<Processed>>)>,
    window: Option<Arc<LatestSlot>>,
    stats: &Stats,
) -> Result<()> {
    // Frames whose outputs have not come back yet (a stream batch holds k-1); outputs come in input order.
    let mut pending: VecDeque<Frame> = VecDeque::with_capacity(processor.lag_frames() + 1);
    let mut ready = Vec::with_capacity(processor.lag_frames() + 1);
    let deliver = |pending: &mut VecDeque<Frame>, ready: &mut Vec<RgbImage>| -> Result<bool> {
        for output in ready.drain(..) {
            let frame = pending
                .pop_front()
                .ok_or_else(|| Error::internal("process", "the processor returned more frames than it was given"))?;
            let processed = Arc::new(Processed {
                input: frame.image,
                output: Arc::new(output),
                control: frame.control,
                pts: frame.pts,
                duration: frame.duration,
                sequence: frame.sequence,
                captured: frame.captured,
            });
            if let Some(slot) = &window {
                slot.put(processed.clone());
            }
            for (_, tx) in &sinks {
                if tx.send(processed.clone()).is_err() {
                    // That sink's thread ended on an error it reports itself (and the run is stopping): drain.
                    return Ok(false);
                }
            }
        }
        Ok(true)
    };
    while let Some(frame) = input.recv() {
        let started = Instant::now();
        processor.push_frame(&frame, &mut ready)?;
        pending.push_back(frame);
        if !ready.is_empty() {
            stats.stage("process", started.elapsed());
            for (stage, elapsed) in processor.last_stage_times() {
                stats.stage(stage, elapsed);
            }
        }
        if !deliver(&mut pending, &mut ready)? {
            return Ok(());
        }
    }
    // The source ended (or the run stops): frames still in a batch are finished, so offline runs keep every one.
    if !pending.is_empty() {
        processor.finish(&mut ready)?;
        deliver(&mut pending, &mut ready)?;
    }
    Ok(())
}

fn sink_loop(
    name: &str,
    mut sink: Box<dyn Sink>,
    input: LinkReceiver<Arc<Processed>>,
    stats: &Stats,
    source_done: &AtomicBool,
) -> Result<()> {
    let mut result = Ok(());
    while let Some(frame) = input.recv() {
        let started = Instant::now();
        if let Err(e) = sink.write(&frame) {
            result = Err(e);
            break;
        }
        stats.stage("sink", started.elapsed());
        stats.delivered(name, frame.captured);
    }
    // Finalize even after an error or a stop, so what was written stays usable (a playable video).
    drop(input);
    let end =
        if source_done.load(Ordering::SeqCst) && result.is_ok() { StreamEnd::Complete } else { StreamEnd::Stopped };
    let finished = sink.finish(end);
    result.and(finished)
}

/// The processor for diffusion models: the frame path (small graphs and IoBinding around the models, a stream
/// batch when asked for) behind the similarity filter.
pub struct DiffusionProcessor {
    path: FramePath,
    similarity: SimilarityFilter,
    /// The last output, re-emitted for a frame the filter finds near-identical to the last processed one.
    last_output: Option<RgbImage>,
    /// Whether the last `push` ran the models (stage times are reported only then).
    ran: bool,
    size: (u32, u32),
}

impl DiffusionProcessor {
    /// `size` carries the multiple it was checked against; it must be this run's.
    pub fn new(
        runtime: &crate::infer::Runtime,
        diffusion: crate::diffusion::Diffusion,
        params: &crate::diffusion::Params,
        size: WorkingSize,
        engine: &crate::config::Engine,
        control: Option<crate::diffusion::frame_path::Control>,
    ) -> Result<DiffusionProcessor> {
        let path = match control {
            None => FramePath::new(runtime, diffusion, params, size.dims(), engine.batch, None)?,
            Some(control) => {
                if engine.batch != crate::diffusion::BatchMode::Single {
                    return Err(Error::invalid(
                        "engine.stream-batch",
                        "a stream batch with [pose] (ControlNet) is not supported yet: use 1",
                    ));
                }
                FramePath::with_control(runtime, diffusion, params, size.dims(), control, None)?
            }
        };
        let multiple = path.diffusion().size_multiple(path.prepared());
        // The size's sides are multiples of size.multiple(); that satisfies the run only if it is itself a
        // multiple of what the run needs.
        if !size.multiple().is_multiple_of(multiple) {
            return Err(Error::internal(
                "DiffusionProcessor",
                format!("size {size} was checked for multiples of {}, the run needs {multiple}", size.multiple()),
            ));
        }
        // A stream batch needs every frame in its slots, in order: the filter (which re-emits the last output
        // in place of a model run) is only used without one.
        // Pose-guided runs follow the skeleton, which the filter does not see: off there too.
        let similarity =
            if path.lag_frames() == 0 && control.is_none() { engine.similarity } else { SimilaritySettings::DISABLED };
        Ok(DiffusionProcessor {
            path,
            similarity: SimilarityFilter::new(similarity),
            last_output: None,
            ran: false,
            size: size.dims(),
        })
    }
}

/// Run `step` on the frame path and append what it emits to `ready` as images.
fn collect(
    path: &mut FramePath,
    (width, height): (u32, u32),
    ready: &mut Vec<RgbImage>,
    step: impl FnOnce(&mut FramePath, &mut dyn FnMut(&[u8])) -> Result<()>,
) -> Result<()> {
    let mut wrong_size = false;
    step(path, &mut |bytes: &[u8]| match RgbImage::from_raw(width, height, bytes.to_vec()) {
        Some(image) => ready.push(image),
        None => wrong_size = true,
    })?;
    if wrong_size {
        return Err(Error::internal("DiffusionProcessor", "an output frame of the wrong size"));
    }
    Ok(())
}

impl Processor for DiffusionProcessor {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn lag_frames(&self) -> usize {
        self.path.lag_frames()
    }

    fn warm_up(&mut self) -> Result<Duration> {
        let started = Instant::now();
        self.path.warm_up()?;
        Ok(started.elapsed())
    }

    fn process(&mut self, input: &RgbImage) -> Result<RgbImage> {
        let mut ready = Vec::with_capacity(1);
        self.push(input, &mut ready)?;
        self.finish(&mut ready)?;
        ready.pop().ok_or_else(|| Error::internal("DiffusionProcessor", "no output for the frame"))
    }

    fn push(&mut self, input: &RgbImage, ready: &mut Vec<RgbImage>) -> Result<()> {
        self.ran = false;
        if let (Decision::Reuse, Some(last)) = (self.similarity.check(input), &self.last_output) {
            ready.push(last.clone());
            return Ok(());
        }
        let keep = self.similarity.settings().threshold > 0.0;
        collect(&mut self.path, self.size, ready, |path, each| path.push(input.as_raw(), each))?;
        self.ran = true;
        if keep && let Some(last) = ready.last() {
            self.last_output = Some(last.clone());
        }
        Ok(())
    }

    fn push_frame(&mut self, frame: &Frame, ready: &mut Vec<RgbImage>) -> Result<()> {
        let Some(control) = &frame.control else {
            return self.push(&frame.image, ready);
        };
        self.ran = false;
        let input = (!self.path.txt2img()).then(|| frame.image.as_raw().as_slice());
        collect(&mut self.path, self.size, ready, |path, each| path.push_controlled(input, control.as_raw(), each))?;
        self.ran = true;
        Ok(())
    }

    fn finish(&mut self, ready: &mut Vec<RgbImage>) -> Result<()> {
        collect(&mut self.path, self.size, ready, |path, each| path.finish(each))?;
        if self.similarity.skipped_total() > 0 {
            tracing::info!(frames = self.similarity.skipped_total(), "similarity filter reused the last output");
        }
        Ok(())
    }

    fn last_stage_times(&self) -> Vec<(&'static str, Duration)> {
        if !self.ran {
            return Vec::new();
        }
        let t = self.path.last_times();
        let d = |ms: f64| Duration::from_secs_f64(ms / 1e3);
        vec![
            ("vae encode", d(t.vae_encode_ms)),
            ("unet", d(t.unet_ms)),
            ("vae decode", d(t.vae_decode_ms)),
            ("tensor graphs", d(t.graphs_ms)),
        ]
    }
}
