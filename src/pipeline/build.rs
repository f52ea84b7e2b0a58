//! From a pipeline file to running parts: open the source, load the model, open the sinks. Cheap checks come
//! first (outputs writable, source readable) so a typo fails before seconds of model loading.

use std::path::{Path, PathBuf};

use super::{DiffusionProcessor, Parts};
use crate::config::{PipelineConfig, SinkConfig, View};
use crate::diffusion::Diffusion;
use crate::error::{Error, Result};
use crate::infer::Runtime;
use crate::model::{self, ModelFolder};
use crate::sink::{self, SinkContext};
use crate::source;

pub struct BuildOptions<'a> {
    pub runtime: &'a Runtime,
    /// Whether a display is available (windows, `only-when`).
    pub display: bool,
}

/// A pipeline ready to run, and what it was built from.
pub struct Built {
    pub parts: Parts,
    pub total_frames: Option<u64>,
    pub source: String,
    pub model: String,
    pub size: (u32, u32),
}

/// The model folder named: a path (anything with a `/`, or that exists), or a bare name looked up in the models
/// folders; none named: the default model.
pub fn model_folder(dir: Option<&Path>) -> Result<PathBuf> {
    match dir {
        None => model::default_folder(),
        Some(d) if d.components().count() > 1 || d.exists() => Ok(d.to_path_buf()),
        Some(name) => model::find_named(&name.to_string_lossy()),
    }
}

pub fn build(config: &PipelineConfig, options: &BuildOptions) -> Result<Built> {
    let active = config.active_sinks(options.display);
    if active.is_empty() {
        return Err(Error::invalid(
            "pipeline",
            format!(
                "no sink applies here (display {}): check the sinks' only-when",
                if options.display { "present" } else { "absent" }
            ),
        ));
    }
    for (i, s) in &active {
        sink::precheck(s).map_err(|e| annotate(e, *i, s))?;
    }
    let windows: Vec<View> = active
        .iter()
        .filter_map(|(_, s)| if let SinkConfig::Window { view, .. } = s { Some(*view) } else { None })
        .collect();
    if windows.len() > 1 {
        return Err(Error::invalid("pipeline", "at most one window sink".to_string()));
    }
    if !windows.is_empty() && !options.display {
        return Err(Error::invalid(
            "pipeline",
            "a window sink needs a display (DISPLAY or WAYLAND_DISPLAY); give it only-when = \"display\" to skip it"
                .to_string(),
        ));
    }

    let want_audio = active.iter().any(|(_, s)| sink::wants_audio(s));
    let mut source = source::open(&config.source, config.mode, want_audio)?;
    let format = source.format();

    let folder = ModelFolder::open(&model_folder(config.model.dir.as_deref())?)?;
    let params = config.params.resolve(&folder);
    let size = match config.model.size {
        Some([w, h]) => (w, h),
        None => {
            // The source's size, cropped to what the model accepts (the same policy as img2img).
            let m = folder.size_multiple;
            let (w, h) = (format.width / m * m, format.height / m * m);
            if w == 0 || h == 0 {
                return Err(Error::invalid(
                    "size",
                    format!(
                        "the source is {}x{}, smaller than the model's minimum {m}x{m}; set [model] size",
                        format.width, format.height
                    ),
                ));
            }
            (w, h)
        }
    };
    let diffusion = Diffusion::load(options.runtime, &folder)?;
    let processor = DiffusionProcessor::new(diffusion, &params, size)?;

    let mut audio = source.take_audio();
    let mut sinks = Vec::new();
    for (i, s) in &active {
        if matches!(s, SinkConfig::Window { .. }) {
            continue;
        }
        let (width, height) = sink::view_size(s.view(), size.0, size.1);
        let context = SinkContext { width, height, fps: format.fps, live: config.mode == crate::config::Mode::Live };
        let track = if sink::wants_audio(s) { audio.take() } else { None };
        let opened = sink::open(s, &context, track).map_err(|e| annotate(e, *i, s))?;
        sinks.push((format!("{}{i}", s.kind()), opened));
    }
    Ok(Built {
        total_frames: source.total_frames(),
        source: source.describe(),
        model: folder.dir.display().to_string(),
        size,
        parts: Parts {
            source,
            processor: Box::new(processor),
            sinks,
            window: windows.first().copied(),
            mode: config.mode,
        },
    })
}

/// Say which sink of the file an error belongs to.
fn annotate(e: Error, index: usize, sink: &SinkConfig) -> Error {
    match e {
        Error::Sink { sink: name, problem } => {
            Error::Sink { sink: format!("{index} ({}): {name}", sink.kind()), problem }
        }
        other => other,
    }
}
