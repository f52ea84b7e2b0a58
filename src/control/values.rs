//! The values a running pipeline can change, one name each, and how every input spells them.
//!
//! The control API's names are kebab-case (`prompt`, `negative-prompt`, `similarity-threshold`,
//! `controlnet-scale`, `pose-min-cutoff`, `view`, ...). The pipeline file's dotted keys name the same values
//! (`params.prompt`, `engine.similarity-threshold`, `pose.controlnet-scale`, `pose.min-cutoff`), so a line on
//! stdin can be written exactly like `--set`. Snake case (`negative_prompt`) is accepted for OSC tools that
//! cannot send dashes.

use serde::Serialize;
use serde_json::Value;

use crate::config::View;
use crate::config::values::{SHOWN_CHARS, preview, show_f64};
use crate::diffusion::Params;
use crate::diffusion::scheduler::Lcm;
use crate::knobs::{self, Checked, Given, LiveCost, Spelling};
use crate::mask::{MaskOptions, PipelineMask};
use crate::pose::smooth::SmoothingSettings;

/// Every value that can change while a pipeline runs. Serialized as `GET /params` returns it; the pose values
/// are present only in pose-guided runs, `view` only with a window.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LiveValues {
    pub prompt: String,
    pub negative_prompt: String,
    pub guidance: f64,
    pub strength: f64,
    pub steps: usize,
    /// Explicit timesteps (descending), used instead of steps/strength; null for none.
    pub timesteps: Option<Vec<u32>>,
    pub seed: u64,
    /// A new prompt's embeddings are blended in over this many frames (0: a hard cut).
    pub transition_frames: u32,
    /// The fraction of the last output latent blended into the next input latent (0: off).
    pub feedback: f64,
    pub similarity_threshold: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controlnet_scale: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pose_min_cutoff: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pose_beta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pose_d_cutoff: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pose_hold_s: Option<f64>,
    /// Masked runs (`[mask]`): the mask on, and how it is made and used (see the `mask.*` knobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_keep_faces: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_invert: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_grow_px: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_feather_px: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_smoothing: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_composite: Option<bool>,
    /// The window's view (other sinks keep theirs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<View>,
}

/// The control name of `key` as any input may spell it (`params.prompt`, `negative_prompt`, `pose.beta`,
/// `--steps`), or None for a key that is not live: one lookup, in the knobs' declarations.
pub fn canonical(key: &str) -> Option<&'static str> {
    knobs::find(key).and_then(|k| k.live)
}

/// Why a live change was refused (HTTP answers 400 with it, stdin and OSC log it).
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// No live value has this name.
    #[error("unknown key `{key}` (expected one of: {expected})")]
    Unknown { key: String, expected: String },
    /// The value is out of the knob's range or of the wrong type.
    #[error(transparent)]
    Value(#[from] knobs::KnobError),
    /// A value this pipeline does not have (pose values without `[pose]`, the view without a window).
    #[error("{name}: this pipeline {why}")]
    NotHere { name: &'static str, why: &'static str },
    /// The values do not go together (the schedule they make, the stream batch, pose txt2img).
    #[error("{name}: {problem}")]
    Together { name: &'static str, problem: String },
}

/// What the running pipeline allows: the model's scheduler, the stream batch, whether it is pose-guided.
#[derive(Clone, Debug)]
pub struct Limits {
    pub lcm: Lcm,
    /// `[engine] stream-batch` as written (1: none): with several steps it must equal the steps.
    pub stream_batch: usize,
    /// Pose-guided txt2img has no input latent for feedback.
    pub txt2img: bool,
}

impl LiveValues {
    /// The values a pipeline starts with.
    pub fn new(
        params: &Params,
        transition_frames: u32,
        feedback: f64,
        similarity_threshold: f64,
        pose: Option<(f64, SmoothingSettings)>,
        view: Option<View>,
    ) -> LiveValues {
        LiveValues {
            prompt: params.prompt.clone(),
            negative_prompt: params.negative_prompt.clone(),
            guidance: params.guidance,
            strength: params.strength,
            steps: params.steps,
            timesteps: params.timesteps.clone(),
            seed: params.seed,
            transition_frames,
            feedback,
            similarity_threshold,
            controlnet_scale: pose.map(|p| p.0),
            pose_min_cutoff: pose.map(|p| p.1.min_cutoff),
            pose_beta: pose.map(|p| p.1.beta),
            pose_d_cutoff: pose.map(|p| p.1.d_cutoff),
            pose_hold_s: pose.map(|p| p.1.hold_s),
            mask: None,
            mask_keep_faces: None,
            mask_invert: None,
            mask_threshold: None,
            mask_grow_px: None,
            mask_feather_px: None,
            mask_smoothing: None,
            mask_composite: None,
            view,
        }
    }

    /// These values with a masked run's (`[mask]`) as it starts.
    pub fn with_mask(mut self, mask: &PipelineMask) -> LiveValues {
        let o = mask.spec.options;
        self.mask = Some(mask.enabled);
        self.mask_keep_faces = Some(mask.spec.keep_faces);
        self.mask_invert = Some(o.invert);
        self.mask_threshold = Some(f64::from(o.threshold.unwrap_or(0.0)));
        self.mask_grow_px = Some(i64::from(o.grow_px));
        self.mask_feather_px = Some(f64::from(o.feather_px));
        self.mask_smoothing = Some(f64::from(o.smoothing));
        self.mask_composite = Some(mask.composite);
        self
    }

    /// The mask's shaping these values make, over `base` (what the run started with).
    pub fn mask_options(&self, base: MaskOptions) -> MaskOptions {
        let threshold = self.mask_threshold.map_or(base.threshold, |t| (t > 0.0).then_some(t as f32));
        MaskOptions {
            invert: self.mask_invert.unwrap_or(base.invert),
            threshold,
            grow_px: self.mask_grow_px.map_or(base.grow_px, |g| g as i32),
            feather_px: self.mask_feather_px.map_or(base.feather_px, |f| f as f32),
            smoothing: self.mask_smoothing.map_or(base.smoothing, |s| s as f32),
        }
    }

    /// The diffusion parameters these values make.
    pub fn params(&self) -> Params {
        Params {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps,
            strength: self.strength,
            guidance: self.guidance,
            seed: self.seed,
            timesteps: self.timesteps.clone(),
        }
    }

    /// The pose smoothing these values make, over `base` (which keeps the confidence gate).
    pub fn smoothing(&self, base: SmoothingSettings) -> SmoothingSettings {
        SmoothingSettings {
            min_cutoff: self.pose_min_cutoff.unwrap_or(base.min_cutoff),
            beta: self.pose_beta.unwrap_or(base.beta),
            d_cutoff: self.pose_d_cutoff.unwrap_or(base.d_cutoff),
            hold_s: self.pose_hold_s.unwrap_or(base.hold_s),
            ..base
        }
    }

    /// Set one value (`key` in any spelling [`canonical`] takes), checked by its knob's declaration: the error
    /// names the knob and its range as every entry point does.
    pub fn set(&mut self, key: &str, value: &Value) -> Result<(), LiveError> {
        // The names this run has (a pose value in a run without [pose] is NotHere, below).
        let present = match serde_json::to_value(&*self) {
            Ok(Value::Object(fields)) => fields,
            _ => Default::default(),
        };
        let unknown = || LiveError::Unknown {
            key: preview(key, SHOWN_CHARS),
            expected: knobs::live()
                .filter_map(|k| k.live)
                .filter(|name| present.contains_key(*name))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let knob = knobs::find(key).filter(|k| k.live.is_some()).ok_or_else(unknown)?;
        let name = knob.name(Spelling::Live);
        let checked = knob.check(&Given::from_json(value), Spelling::Live)?;
        let pose_only = |slot: &Option<f64>| match slot {
            None => Err(LiveError::NotHere { name, why: "is not pose-guided (no [pose])" }),
            Some(_) => Ok(()),
        };
        let masked = self.mask.is_some();
        let mask_only =
            || if masked { Ok(()) } else { Err(LiveError::NotHere { name, why: "has no mask (no [mask])" }) };
        match checked {
            Checked::Text(text) if name == "prompt" => self.prompt = text,
            Checked::Text(text) if name == "negative-prompt" => self.negative_prompt = text,
            Checked::Int(n) if name == "steps" => self.steps = n as usize,
            Checked::Int(n) if name == "seed" => self.seed = n as u64,
            Checked::Int(n) if name == "transition-frames" => self.transition_frames = n as u32,
            Checked::IntList(list) if name == "timesteps" => {
                self.timesteps = list.map(|l| l.into_iter().map(|t| t as u32).collect());
            }
            Checked::Float(x) if name == "guidance" => self.guidance = x,
            Checked::Float(x) if name == "strength" => self.strength = x,
            Checked::Float(x) if name == "feedback" => self.feedback = x,
            Checked::Float(x) if name == "similarity-threshold" => self.similarity_threshold = x,
            Checked::Bool(b) => {
                mask_only()?;
                let slot = match name {
                    "mask" => &mut self.mask,
                    "mask-keep-faces" => &mut self.mask_keep_faces,
                    "mask-invert" => &mut self.mask_invert,
                    "mask-composite" => &mut self.mask_composite,
                    _ => return Err(unknown()),
                };
                *slot = Some(b);
            }
            Checked::Int(n) if name == "mask-grow-px" => {
                mask_only()?;
                self.mask_grow_px = Some(n);
            }
            Checked::Float(x) if name.starts_with("mask-") => {
                mask_only()?;
                let slot = match name {
                    "mask-threshold" => &mut self.mask_threshold,
                    "mask-feather-px" => &mut self.mask_feather_px,
                    "mask-smoothing" => &mut self.mask_smoothing,
                    _ => return Err(unknown()),
                };
                *slot = Some(x);
            }
            Checked::Float(x) => {
                let slot = match name {
                    "controlnet-scale" => &mut self.controlnet_scale,
                    "pose-min-cutoff" => &mut self.pose_min_cutoff,
                    "pose-beta" => &mut self.pose_beta,
                    "pose-d-cutoff" => &mut self.pose_d_cutoff,
                    "pose-hold-s" => &mut self.pose_hold_s,
                    _ => return Err(unknown()),
                };
                pose_only(slot)?;
                *slot = Some(x);
            }
            Checked::Choice(word) if name == "view" => {
                if self.view.is_none() {
                    return Err(LiveError::NotHere { name, why: "has no window" });
                }
                self.view = serde_json::from_value(Value::String(word.into())).ok();
            }
            _ => return Err(unknown()),
        }
        Ok(())
    }

    /// What changing from these values to `new` costs while running: the most any changed knob's declaration
    /// says ([`knobs::LiveCost`]); [`knobs::LiveCost::Nothing`] when nothing changed.
    pub fn cost_of_change(&self, new: &LiveValues) -> LiveCost {
        let (Ok(Value::Object(old)), Ok(Value::Object(new))) = (serde_json::to_value(self), serde_json::to_value(new))
        else {
            return LiveCost::Rebuild;
        };
        old.keys()
            .chain(new.keys())
            .filter(|name| old.get(*name) != new.get(*name))
            // Every field is a knob's live name (a test says so); anything else is treated as the dearest live change.
            .map(|name| knobs::find(name).map_or(LiveCost::Reencode, |k| k.cost))
            .max()
            .unwrap_or(LiveCost::Nothing)
    }

    /// Check the values together (the schedule they make, the stream batch); the error names the knob.
    pub fn check(&self, limits: &Limits) -> Result<(), LiveError> {
        let schedule = self.params().check(&limits.lcm).map_err(|e| match e {
            crate::Error::InvalidParameter { what, problem } => {
                LiveError::Together { name: knobs::find(what).and_then(|k| k.live).unwrap_or(what), problem }
            }
            other => LiveError::Together { name: "params", problem: other.to_string() },
        })?;
        if limits.stream_batch > 1 {
            crate::diffusion::BatchMode::choose(limits.stream_batch, schedule.timesteps().len()).map_err(|e| {
                LiveError::Together {
                    name: "steps",
                    problem: format!("the stream batch is {}: {e}", limits.stream_batch),
                }
            })?;
        }
        if limits.txt2img && self.timesteps.is_none() && self.strength != 1.0 {
            return Err(LiveError::Together {
                name: "strength",
                problem: format!(
                    "pose txt2img runs the whole schedule (strength 1), not {}; change steps or timesteps",
                    show_f64(self.strength)
                ),
            });
        }
        if limits.txt2img && self.feedback > 0.0 {
            return Err(LiveError::Together {
                name: "feedback",
                problem: "pose txt2img has no input latent to blend into (use img2img)".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
impl LiveValues {
    /// A plain run with a window, for unit tests: "a cat", 2 steps, strength 0.5, guidance 1, seed 7, transitions
    /// over 8 frames, similarity threshold 0.01.
    pub(crate) fn sample() -> LiveValues {
        let params = Params {
            prompt: "a cat".into(),
            negative_prompt: String::new(),
            steps: 2,
            strength: 0.5,
            guidance: 1.0,
            seed: 7,
            timesteps: None,
        };
        LiveValues::new(&params, 8, 0.0, 0.01, None, Some(View::Output))
    }
}

/// A JSON value as a message or log line shows it: a string quoted and cut to its first characters (with its
/// length when cut), anything else as JSON cut likewise. Numbers are JSON's shortest form (`1e-320`).
pub(crate) fn show(value: &Value) -> String {
    match value {
        Value::String(s) => {
            let count = s.chars().count();
            let head = Value::String(s.chars().take(SHOWN_CHARS).collect()).to_string();
            if count > SHOWN_CHARS { format!("{head}… ({count} chars)") } else { head }
        }
        Value::Number(n) if n.is_f64() => n.as_f64().map_or_else(|| n.to_string(), show_f64),
        other => preview(&other.to_string(), SHOWN_CHARS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values() -> LiveValues {
        LiveValues::sample()
    }

    #[test]
    fn every_spelling_names_one_value() {
        assert_eq!(canonical("params.prompt"), Some("prompt"));
        assert_eq!(canonical("negative_prompt"), Some("negative-prompt"));
        assert_eq!(canonical("/steps"), Some("steps"));
        assert_eq!(canonical("engine.similarity-threshold"), Some("similarity-threshold"));
        assert_eq!(canonical("pose.min-cutoff"), Some("pose-min-cutoff"));
        assert_eq!(canonical("window.view"), Some("view"));
        assert_eq!(canonical("engine.stream-batch"), None);
        assert_eq!(canonical("source.width"), None);
        assert_eq!(canonical("bogus"), None);
    }

    #[test]
    fn set_checks_each_value_and_names_the_key() {
        let mut v = values();
        v.set("prompt", &json!("a fox")).unwrap();
        v.set("steps", &json!(4.0)).unwrap();
        v.set("view", &json!("side-by-side")).unwrap();
        assert_eq!((v.prompt.as_str(), v.steps, v.view), ("a fox", 4, Some(View::SideBySide)));
        let e = v.set("steps", &json!(9)).unwrap_err().to_string();
        assert_eq!(e, "steps: 9: expected a whole number from 1 to 8");
        let e = |key: &str, value: Value| values().set(key, &value).unwrap_err().to_string();
        assert!(e("guidance", json!("high")).starts_with("guidance: \"high\": expected a number from 0 to 10"));
        assert!(e("feedback", json!(0.95)).contains("0 to 0.9"));
        assert!(e("nope", json!(1)).contains("unknown key `nope`"));
        assert!(e("controlnet-scale", json!(1)).contains("not pose-guided"));
        assert!(e("timesteps", json!([999, -1])).starts_with("timesteps:"));
        v.set("timesteps", &json!([999, 499])).unwrap();
        v.set("timesteps", &json!(null)).unwrap();
        assert_eq!(v.timesteps, None);
        assert_eq!(v.steps, 4, "a failed set leaves the value");
    }

    #[test]
    fn every_field_is_a_knob_and_a_change_costs_what_its_knob_says() {
        let mut v = values();
        v.controlnet_scale = Some(1.0);
        v.pose_beta = Some(0.007);
        let Value::Object(fields) = serde_json::to_value(&v).unwrap() else { panic!() };
        for name in fields.keys() {
            assert!(knobs::find(name).is_some_and(|k| k.live == Some(name.as_str())), "{name} is no knob's live name");
        }
        let with = |key: &str, value: Value| {
            let mut next = v.clone();
            next.set(key, &value).unwrap();
            v.cost_of_change(&next)
        };
        assert_eq!(v.cost_of_change(&v), LiveCost::Nothing);
        assert_eq!(with("view", json!("input")), LiveCost::Nothing);
        assert_eq!(with("pose-beta", json!(0.1)), LiveCost::Nothing);
        assert_eq!(with("transition-frames", json!(0)), LiveCost::Flush);
        assert_eq!(with("steps", json!(3)), LiveCost::Rebuild);
        assert_eq!(with("prompt", json!("a dog")), LiveCost::Reencode);
    }

    #[test]
    fn serializes_with_the_control_names() {
        let json = serde_json::to_value(values()).unwrap();
        assert_eq!(json["negative-prompt"], json!(""));
        assert_eq!(json["transition-frames"], json!(8));
        assert_eq!(json["view"], json!("output"));
        assert!(json.get("controlnet-scale").is_none());
    }

    #[test]
    fn values_in_messages_are_bounded_and_short() {
        assert_eq!(show(&json!("a fox")), "\"a fox\"");
        let long = show(&json!("y".repeat(70_000)));
        assert!(long.ends_with("\"… (70000 chars)") && long.len() < 90, "{long}");
        assert_eq!(show(&json!(1e-320)), "1e-320");
        let mut v = values();
        let e = v.set("strength", &json!(1e300)).unwrap_err().to_string();
        assert_eq!(e, "strength: 1e300: expected a number from 0 to 1");
        let e = v.set(&"k".repeat(5000), &json!(1)).unwrap_err().to_string();
        assert!(e.len() < 400 && e.contains("(5000 chars)"), "{}", &e[..e.len().min(400)]);
        v.strength = 1e-320;
        let limits = Limits { lcm: Lcm::new(Default::default()), stream_batch: 1, txt2img: true };
        let e = v.check(&limits).unwrap_err().to_string();
        assert!(e.starts_with("strength: 1e-320 leaves 0"), "{e}");
    }
}
