//! From a checked [`Pipeline`] to running parts: probe the outputs, open the source, load the model, open the
//! sinks. Every value was checked when the pipeline was parsed; what can still fail here is opening things
//! (a missing file or device, a model that does not load), and the cheap failures come first, so a typo fails
//! before seconds of model loading.

use super::{Annotator, DiffusionProcessor, MaskAnnotator, Parts, Processor};
use std::sync::Arc;

use crate::config::{GstInput, Mode, Origin, Pipeline, SinkKind, SourceSpec, WorkingSize};
use crate::control::{ControlHub, Limits, LiveControl, LiveValues};
use crate::diffusion::BatchMode;
use crate::diffusion::Diffusion;
use crate::diffusion::frame_path::Control;
use crate::error::{Error, Result};
use crate::infer::Runtime;
use crate::infer::tensorrt::{TensorRt, Workload};
use crate::paths::{NamedPath, OutputLock};
use crate::pose::stage::PoseAnnotator;
use crate::sink::{self, SinkContext};
use crate::sizing::{self, SizeOrigin};
use crate::source;

pub struct BuildOptions<'a> {
    pub runtime: &'a Runtime,
    /// Whether a display is available (windows, `only-when`).
    pub display: bool,
    /// Files the command writes besides the sinks (`--stats-json`): checked and locked with them.
    pub extra_outputs: &'a [NamedPath],
}

/// A pipeline ready to run, and what it was built from.
pub struct Built {
    pub parts: Parts,
    pub total_frames: Option<u64>,
    pub source: String,
    pub model: String,
    pub size: WorkingSize,
    /// How long the warm-up run took (every session once at the working size).
    pub warm_up: std::time::Duration,
    /// Every output's lock: hold them until the run has ended.
    pub locks: Vec<OutputLock>,
}

pub fn build(pipeline: &Pipeline, options: &BuildOptions) -> Result<Built> {
    check(pipeline, options.display)?;
    let (reads, mut writes) = paths_of(pipeline, options.display)?;
    for extra in options.extra_outputs {
        // Found now, not after the whole run.
        crate::paths::probe_writable_folder(&extra.path, &crate::paths::parent_folder(&extra.path))?;
    }
    writes.extend_from_slice(options.extra_outputs);
    crate::paths::check_distinct(&reads, &writes)?;
    let locks = crate::paths::lock_outputs(&writes)?;
    let active = pipeline.active_sinks(options.display)?;
    let window = active.iter().find_map(|s| if let SinkKind::Window { view } = s.kind { Some(view) } else { None });

    let want_audio = active.iter().any(|s| s.wants_audio());
    let mut source = source::open(&pipeline.source, pipeline.mode, want_audio)?;
    let format = source.format();
    let (size, origin) = match pipeline.size {
        Some(size) => (size, SizeOrigin::Given),
        // The source's aspect ratio at about the model's native area (the same policy as img2img).
        None => {
            let size = sizing::default_size(format.width, format.height, pipeline.model.native_size, pipeline.multiple)
                .map_err(|problem| pipeline.origin.error("model.size", format!("the source is {problem}")))?;
            (size, SizeOrigin::Default)
        }
    };
    let batch = crate::memory::unet_batch(pipeline.engine.batch.items(), pipeline.params.guidance);
    let refuse = |problem: String| pipeline.origin.error("model.size", problem);
    let size = sizing::ensure_fits(&pipeline.model, size, batch, origin, options.runtime.may_use_gpu(), &refuse)?;
    if let Some(fit) = sizing::describe_fit(format.width, format.height, size) {
        tracing::info!("working size {size}: the source's {fit}");
    }
    // CUDA graphs are captured for the sessions the frame path binds (the models and its graphs); TensorRT builds
    // its engines for this working size and these batches (the pose models keep the plain runtime).
    let runtime = options.runtime.with_cuda_graph(pipeline.engine.cuda_graph).with_tensorrt(tensorrt_settings(
        pipeline,
        size,
        takes_live_changes(pipeline),
    ));
    let (params, engine) = (&pipeline.params, &pipeline.engine);
    let (mut processor, annotator): (DiffusionProcessor, Option<Box<dyn Annotator>>) =
        match (&pipeline.pose, &pipeline.mask) {
            (Some(pose), _) => {
                // The pose models keep the plain runtime (no CUDA graph, no TensorRT profiles of the UNet's size).
                let annotator = Box::new(PoseAnnotator::new(options.runtime, pose)?);
                let control = Control { txt2img: pose.txt2img, scale: pose.controlnet_scale };
                let diffusion = Diffusion::load_with_controlnet(&runtime, &pipeline.model)?;
                (DiffusionProcessor::new(&runtime, diffusion, params, size, engine, Some(control))?, Some(annotator))
            }
            (None, Some(mask)) => {
                let annotator = Box::new(MaskAnnotator::new(options.runtime, mask, size.dims())?);
                let diffusion = Diffusion::load(&runtime, &pipeline.model)?;
                (DiffusionProcessor::with_mask(&runtime, diffusion, params, size, engine)?, Some(annotator))
            }
            (None, None) => {
                let diffusion = Diffusion::load(&runtime, &pipeline.model)?;
                (DiffusionProcessor::new(&runtime, diffusion, params, size, engine, None)?, None)
            }
        };
    if pipeline.temporal.feedback > 0.0 {
        processor.set_feedback(pipeline.temporal.feedback as f32)?;
    }
    // Every session runs once at the working size now, before frames flow (a live source meanwhile keeps only
    // its newest frame).
    let warm_up = processor.warm_up()?;
    tracing::info!(
        model = %pipeline.model.name,
        family = pipeline.model.family.key(),
        warm_up_ms = warm_up.as_millis() as u64,
        size = %size,
        "models warmed up"
    );
    let spec = &pipeline.control;
    let control = if takes_live_changes(pipeline) {
        let values = live_values(pipeline, window);
        processor.enable_live(&values)?;
        let hub = ControlHub::new(values, limits(pipeline)).with_presets(spec.presets.clone());
        // A WHIP source's publishers come in at the control server's POST /whip.
        hub.set_publishers(source.publishers());
        Some(LiveControl::start(Arc::new(hub), spec)?)
    } else {
        None
    };

    let mut audio = source.take_audio();
    let mut sinks = Vec::new();
    for s in &active {
        if matches!(s.kind, SinkKind::Window { .. }) {
            continue;
        }
        let (width, height) = sink::view_size(s.view(), size.width(), size.height());
        let context = SinkContext {
            width,
            height,
            fps: format.fps,
            live: pipeline.mode == Mode::Live,
            control: control.as_ref().map(|c| c.hub.clone()),
        };
        let track = if s.wants_audio() { audio.take() } else { None };
        let opened = sink::open(s, &context, track).map_err(|e| annotate(e, s))?;
        sinks.push((s.name(), opened));
    }
    Ok(Built {
        total_frames: source.total_frames(),
        source: source.describe(),
        model: pipeline.model.dir.display().to_string(),
        size,
        warm_up,
        locks,
        parts: Parts { annotator, source, processor: Box::new(processor), sinks, window, mode: pipeline.mode, control },
    })
}

/// Whether the run takes live changes: live runs always (the window's keys at least), offline runs when the file
/// names an input.
fn takes_live_changes(pipeline: &Pipeline) -> bool {
    let spec = &pipeline.control;
    pipeline.mode == Mode::Live || spec.http.is_some() || spec.osc.is_some() || spec.stdin
}

/// What TensorRT builds this pipeline's engines with at `size`: `[engine] tensorrt-fp16` per model, and profiles
/// for the batches the run starts with (and, with live changes, those a guidance or step change reaches).
pub fn tensorrt_settings(pipeline: &Pipeline, size: WorkingSize, live: bool) -> TensorRt {
    let model = &pipeline.model;
    // The UNet that runs: with pose guidance, the one that takes the ControlNet's residuals.
    let unet = match (&pipeline.pose, &model.controlnet) {
        (Some(_), Some(files)) => files.unet.clone(),
        _ => model.unet.clone(),
    };
    let (width, height) = size.dims();
    let workload = Workload {
        width,
        height,
        latent_channels: u32::try_from(model.latent_channels).unwrap_or(u32::MAX),
        tokens: u32::try_from(model.tokenizer.max_length).unwrap_or(u32::MAX),
        stream_batch: u32::try_from(pipeline.engine.batch.items()).unwrap_or(1),
        // A frame batch runs its frames through the VAE together; a denoising batch one frame per run.
        vae_frames: match pipeline.engine.batch {
            BatchMode::Frames(k) => u32::try_from(k).unwrap_or(1),
            BatchMode::Single | BatchMode::Denoising(_) => 1,
        },
        guidance: pipeline.params.guidance,
        live,
    };
    TensorRt { fp16: pipeline.engine.tensorrt_fp16, vae_fp32_only: model.vae_fp32_only, unet, workload: Some(workload) }
}

/// The values a run starts with, as live control shows them.
pub fn live_values(pipeline: &Pipeline, window: Option<crate::config::View>) -> LiveValues {
    let values = LiveValues::new(
        &pipeline.params,
        pipeline.temporal.transition_frames,
        pipeline.temporal.feedback,
        f64::from(pipeline.engine.similarity.threshold),
        pipeline.pose.as_ref().map(|p| (f64::from(p.controlnet_scale), p.smoothing)),
        window,
    );
    match &pipeline.mask {
        Some(mask) => values.with_mask(mask),
        None => values,
    }
}

/// What live changes must respect in this pipeline.
pub fn limits(pipeline: &Pipeline) -> Limits {
    Limits {
        lcm: crate::diffusion::scheduler::Lcm::new(pipeline.model.scheduler.clone()),
        stream_batch: pipeline.engine.batch.items(),
        txt2img: pipeline.pose.as_ref().is_some_and(|p| p.txt2img),
    }
}

/// The files a pipeline reads (its file, its source, its model) and writes (its active sinks' files and
/// folders), named as the user knows them.
pub fn paths_of(pipeline: &Pipeline, display: bool) -> Result<(Vec<NamedPath>, Vec<NamedPath>)> {
    let from_flags = matches!(pipeline.origin, Origin::Flags);
    let mut reads = Vec::new();
    if let Origin::File(path) = &pipeline.origin {
        reads.push(NamedPath::new("pipeline file", path));
    }
    match &pipeline.source {
        SourceSpec::Gstreamer { input: GstInput::Uri(uri), .. } if !uri.contains("://") => {
            reads.push(NamedPath::new(if from_flags { "input" } else { "source" }, uri));
        }
        SourceSpec::Images { path, .. } if std::path::Path::new(path).is_dir() => {
            reads.push(NamedPath::new("source folder", path));
        }
        _ => {}
    }
    reads.extend(pipeline.model.files().into_iter().map(|f| NamedPath::new("model file", f)));
    if let Some(mask) = &pipeline.mask {
        if let Some(file) = mask.spec.source.file() {
            reads.push(NamedPath::new(if from_flags { "--mask-file" } else { "mask file" }, file));
        }
        if let Some(file) = mask.spec.also.as_ref().and_then(|(a, _)| a.file()) {
            reads.push(NamedPath::new(if from_flags { "--mask-also-file" } else { "mask also-file" }, file));
        }
    }
    let mut writes = Vec::new();
    for s in pipeline.active_sinks(display)? {
        let role = if from_flags { "output".to_string() } else { format!("sink {} ({})", s.index, s.kind_name()) };
        match &s.kind {
            SinkKind::File { path, .. } => writes.push(NamedPath::new(role, path)),
            SinkKind::Png { dir, .. } => writes.push(NamedPath::new(role, dir)),
            _ => {}
        }
    }
    Ok((reads, writes))
}

/// Say which sink of the file an error belongs to.
fn annotate(e: Error, sink: &crate::config::SinkSpec) -> Error {
    match e {
        Error::Sink { sink: name, problem } => {
            Error::Sink { sink: format!("{} ({}): {name}", sink.index, sink.kind_name()), problem }
        }
        other => other,
    }
}

/// Everything `latentcam check` verifies without opening a source, a sink or a model session: the values (done
/// by [`Pipeline::load`]), the sinks that apply here, and whether their outputs can be written. `run` does the
/// same first, in [`build`].
pub fn check(pipeline: &Pipeline, display: bool) -> Result<String> {
    for s in pipeline.active_sinks(display)? {
        sink::precheck(s).map_err(|e| annotate(e, s))?;
    }
    let (reads, writes) = paths_of(pipeline, display)?;
    crate::paths::check_distinct(&reads, &writes)?;
    for output in &writes {
        crate::paths::probe_unlocked(output)?;
    }
    let sinks: Vec<String> = pipeline
        .sinks
        .iter()
        .map(|s| match s.only_when {
            Some(w) if !s.applies(display) => format!("{} (skipped here: only when {w:?})", s.kind_name()),
            _ => s.kind_name().to_string(),
        })
        .collect();
    let size = pipeline.size.map_or(
        format!(
            "the source's aspect at about {n}x{n} pixels at most, sides multiples of {}",
            pipeline.multiple,
            n = pipeline.model.native_size
        ),
        |s| s.to_string(),
    );
    let c = &pipeline.control;
    let control: Vec<String> = [
        c.http.map(|a| format!("HTTP {a}{}", if c.token.is_some() { " (token)" } else { "" })),
        c.osc.map(|a| format!("OSC {a}")),
        c.stdin.then(|| "stdin".to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let control = if control.is_empty() { String::new() } else { format!(", live control: {}", control.join(", ")) };
    let mask = pipeline.mask.as_ref().map_or(String::new(), |m| {
        let faces = if m.spec.keep_faces { ", faces kept" } else { "" };
        let composite = if m.composite { ", composite" } else { "" };
        format!(", mask: {:?}{faces}{composite}", m.spec.source)
    });
    Ok(format!(
        "ok — {:?} mode, source {}, model {} (size {size}, timesteps {:?}){mask}, sinks: {}{control}",
        pipeline.mode,
        pipeline.source.kind(),
        pipeline.model.dir.display(),
        pipeline.schedule.timesteps(),
        sinks.join(", ")
    ))
}
