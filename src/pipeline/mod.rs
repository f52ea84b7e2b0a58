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
pub mod diffusion;
mod mask;
mod pose;
pub mod stats;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;

pub use self::build::{BuildOptions, build};
pub use self::diffusion::DiffusionProcessor;
pub use self::mask::MaskAnnotator;
use self::stats::{Snapshot, Stats};
use crate::config::{Mode, View};
use crate::control::{ControlHub, LiveControl, LiveValues};
use crate::error::{Error, Result};
use crate::frame::{Frame, Processed};
use crate::imaging;
use crate::link::{LinkReceiver, LinkSender, Overflow, link};
use crate::sink::{LatestSlot, Sink, StreamEnd, WindowHost};
use crate::source::Source;

/// Set to ask a running pipeline to stop (Ctrl-C, a closed window); the pipeline drains and finalizes.
pub type StopFlag = Arc<AtomicBool>;

/// The stage that turns a model-sized frame into the output frame.
pub trait Processor: Send {
    /// The size frames must have when they reach `push`.
    fn size(&self) -> (u32, u32);
    /// The model it runs, for the statistics (None: no model).
    fn model(&self) -> Option<stats::ModelSummary> {
        None
    }
    /// Frames held back before the first output appears (stream batch: k-1); outputs still come in input order.
    fn lag_frames(&self) -> usize {
        0
    }
    /// Feed one frame: its picture at [`Processor::size`], its timestamps and its per-frame conditioning inputs
    /// (the skeleton of a pose-guided run). Append the outputs that are ready, oldest first: one per frame, or
    /// none until a stream batch is full.
    fn push(&mut self, frame: &Frame, ready: &mut Vec<RgbImage>) -> Result<()>;
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
    /// Time spent in sub-stages by the last `push` that ran the models, for the statistics.
    fn last_stage_times(&self) -> Vec<(&'static str, Duration)> {
        Vec::new()
    }
    /// Live values changed (between frames): use them from the next frame on. Outputs of frames still held
    /// back (a stream batch) are appended to `ready` first, made with the old values.
    fn control(&mut self, values: &LiveValues, ready: &mut Vec<RgbImage>) -> Result<()> {
        let _ = (values, ready);
        Ok(())
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
    /// Live values changed: use them from the next frame on (the pose smoothing).
    fn control(&mut self, values: &LiveValues) {
        let _ = values;
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
    /// Live control: the values every input changes (stages poll it between frames) and the inputs, which
    /// stop when the run ends.
    pub control: Option<LiveControl>,
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
    let Parts { source, annotator, processor, sinks, window, mode, control: inputs } = parts;
    let control: Option<Arc<ControlHub>> = inputs.as_ref().map(|c| c.hub.clone());
    let stats = Arc::new(Stats::default());
    if let Some(model) = processor.model() {
        stats.set_model(model);
    }
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
        let (stats, control) = (stats.clone(), control.clone());
        move || preprocess_loop(size, annotator, pre_in, to_proc, &stats, control.as_deref())
    })?);
    threads.push(spawn("process", fail.clone(), {
        let (stats, slot, control) = (stats.clone(), slot.clone(), control.clone());
        move || process_loop(processor, proc_in, sink_links, slot, &stats, control.as_deref())
    })?);
    // Statistics for live-control clients (WebSocket), refreshed on every tick.
    let mut tick = |snapshot: &Snapshot| {
        if let Some(hub) = &control {
            hub.set_stats(serde_json::to_value(snapshot).unwrap_or_default());
        }
        tick(snapshot)
    };
    let tick: Tick = &mut tick;

    let all_done = || threads.iter().all(|t| t.is_finished());
    match (window, slot) {
        (Some(view), Some(slot)) => {
            let mut host = Host { stop: &stop, stats: &stats, all_done: &all_done, tick, control: control.as_deref() };
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
    drop(inputs);
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
    control: Option<&'a ControlHub>,
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
    fn control(&self) -> Option<&ControlHub> {
        self.control
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
    control: Option<&ControlHub>,
) -> Result<()> {
    let mut seen = 0;
    while let Some(mut frame) = input.recv() {
        if let (Some(hub), Some(annotator)) = (control, annotator.as_mut())
            && let Some(values) = hub.newer(&mut seen)
        {
            annotator.control(&values);
        }
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
    control: Option<&ControlHub>,
) -> Result<()> {
    let mut seen = 0;
    // Frames whose outputs have not come back yet (a stream batch holds k-1); outputs come in input order.
    let mut pending: VecDeque<Frame> = VecDeque::with_capacity(processor.lag_frames() + 1);
    let mut ready = Vec::with_capacity(processor.lag_frames() + 1);
    let deliver = |pending: &mut VecDeque<Frame>, ready: &mut Vec<RgbImage>| -> Result<bool> {
        for output in ready.drain(..) {
            let frame = pending
                .pop_front()
                .ok_or_else(|| Error::internal("process", "the processor returned more frames than it was given"))?;
            // A masked frame shows its own input outside the mask, also when the output is a reused one.
            let output = match (&frame.conditioning.mask, frame.conditioning.composite_px) {
                (Some(mask), Some(feather_px)) if mask.dimensions() == output.dimensions() => {
                    let started = Instant::now();
                    let composited = crate::composite::composite(&frame.image, &output, mask, feather_px);
                    stats.stage("composite", started.elapsed());
                    composited
                }
                _ => output,
            };
            let processed = Arc::new(Processed {
                input: frame.image,
                output: Arc::new(output),
                conditioning: frame.conditioning,
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
        if let Some(values) = control.and_then(|hub| hub.newer(&mut seen)) {
            // Frames still in a stream batch come out first, made with the old values.
            processor.control(&values, &mut ready)?;
            if !deliver(&mut pending, &mut ready)? {
                return Ok(());
            }
        }
        let started = Instant::now();
        processor.push(&frame, &mut ready)?;
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
