//! `[mask]` checked: each knob (`mask.*`) by its declaration, the source's file and key, the models.

use super::Origin;
use super::file::MaskFile;
use crate::error::Result;
use crate::knobs::{self, Checked};
use crate::mask::{Chroma, Combine, MaskOptions, MaskSpec, PipelineMask, SourceSpec};

impl PipelineMask {
    pub fn parse(file: &MaskFile, origin: &Origin) -> Result<PipelineMask> {
        let err = |key: &str, problem: String| origin.error(&format!("mask.{key}"), problem);
        let word = match origin.knob(&knobs::MASK_SOURCE, &file.source)? {
            Some(Checked::Choice(word)) => word,
            _ => "segmenter",
        };
        let source = source_spec(word, ("file", file.file.as_ref()), file, origin)?;
        let how = match origin.knob(&knobs::MASK_COMBINE, &file.combine)? {
            Some(Checked::Choice(how)) => Some(Combine::parse(how)?),
            _ => None,
        };
        let also = match origin.knob(&knobs::MASK_ALSO, &file.also)? {
            Some(Checked::Choice(also)) => {
                let second = source_spec(also, ("also-file", file.also_file.as_ref()), file, origin)?;
                Some((second, how.unwrap_or(Combine::Union)))
            }
            _ if how.is_some() => return Err(err("combine", "joins a second source: set mask.also too".into())),
            _ => None,
        };
        let uses_chroma = |s: &SourceSpec| matches!(s, SourceSpec::Chroma(_));
        if file.chroma.is_some() && !uses_chroma(&source) && !also.as_ref().is_some_and(|(a, _)| uses_chroma(a)) {
            return Err(err("chroma", format!("is for source = \"chroma\", not \"{word}\"")));
        }
        let flag = |knob: &'static knobs::Knob, value: &super::file::Any, default: bool| -> Result<bool> {
            Ok(match origin.knob(knob, value)? {
                Some(Checked::Bool(b)) => b,
                _ => default,
            })
        };
        let float = |knob: &'static knobs::Knob, value: &super::file::Any, default: f32| -> Result<f32> {
            Ok(match origin.knob(knob, value)? {
                Some(Checked::Float(x)) => x as f32,
                _ => default,
            })
        };
        let threshold = float(&knobs::MASK_THRESHOLD, &file.threshold, 0.0)?;
        let grow_px = match origin.knob(&knobs::MASK_GROW, &file.grow_px)? {
            Some(Checked::Int(n)) => n as i32,
            _ => 0,
        };
        let options = MaskOptions {
            invert: flag(&knobs::MASK_INVERT, &file.invert, false)?,
            threshold: (threshold > 0.0).then_some(threshold),
            grow_px,
            feather_px: float(&knobs::MASK_FEATHER, &file.feather_px, PipelineMask::DEFAULT_FEATHER_PX)?,
            smoothing: float(&knobs::MASK_SMOOTHING, &file.smoothing, PipelineMask::DEFAULT_SMOOTHING)?,
        };
        let keep_faces = flag(&knobs::MASK_KEEP_FACES, &file.keep_faces, false)?;
        let models = file.model.clone().unwrap_or_else(crate::mask::models::default_folder);
        let second_uses_models = also.as_ref().is_some_and(|(a, _)| a.uses_models());
        if (source.uses_models() || second_uses_models || keep_faces) && !models.exists() {
            return Err(err(
                "model",
                format!(
                    "{}: no such file or folder (the MediaPipe selfie segmentation and BlazeFace models: \
                     models/mediapipe-selfie)",
                    models.display()
                ),
            ));
        }
        Ok(PipelineMask {
            spec: MaskSpec { source, also, keep_faces, models, options },
            enabled: flag(&knobs::MASK_ENABLED, &file.enabled, true)?,
            composite: flag(&knobs::MASK_COMPOSITE, &file.composite, true)?,
        })
    }
}

/// The source `word` names, its file from `file_key` (`file` or `also-file`), checked to exist.
fn source_spec(
    word: &str,
    (file_key, path): (&str, Option<&std::path::PathBuf>),
    file: &MaskFile,
    origin: &Origin,
) -> Result<SourceSpec> {
    let err = |key: &str, problem: String| origin.error(&format!("mask.{key}"), problem);
    let needs_file = |what: &str| {
        path.cloned()
            .ok_or_else(|| err(file_key, format!("mask source \"{word}\" needs the mask {what} (white = change)")))
    };
    let spec = match word {
        "faces" => SourceSpec::Faces,
        "chroma" => {
            let key = file.chroma.as_deref().unwrap_or("00ff00");
            SourceSpec::Chroma(Chroma::parse(key).map_err(|e| err("chroma", message(&e)))?)
        }
        "image" => SourceSpec::Image(needs_file("image")?),
        "video" => SourceSpec::Video(needs_file("video")?),
        _ => SourceSpec::Segmenter,
    };
    if let Some(path) = spec.file().filter(|p| !p.is_file()) {
        return Err(err(file_key, format!("{}: no such file", path.display())));
    }
    Ok(spec)
}

/// A mask module's error as the problem of a key (its own `what` dropped: the key names it).
fn message(e: &crate::error::Error) -> String {
    match e {
        crate::error::Error::InvalidParameter { problem, .. } => problem.clone(),
        other => other.to_string(),
    }
}
