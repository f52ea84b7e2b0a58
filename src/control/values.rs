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
use crate::diffusion::scheduler::{Lcm, MAX_STEPS};
use crate::diffusion::{MAX_GUIDANCE, Params};
use crate::pose::smooth::{self, SmoothingSettings};

/// Prompt transitions: at most this many frames (10 s at 30 fps).
pub const MAX_TRANSITION_FRAMES: u32 = 300;
/// Latent feedback: at most this fraction of the last output (1 would freeze the picture).
pub const MAX_FEEDBACK: f64 = 0.9;

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
    /// The window's view (other sinks keep theirs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<View>,
}

/// One name per live value (the JSON keys).
pub const KEYS: [&str; 16] = [
    "prompt",
    "negative-prompt",
    "guidance",
    "strength",
    "steps",
    "timesteps",
    "seed",
    "transition-frames",
    "feedback",
    "similarity-threshold",
    "controlnet-scale",
    "pose-min-cutoff",
    "pose-beta",
    "pose-d-cutoff",
    "pose-hold-s",
    "view",
];

/// The control name of `key` as any input may spell it (`params.prompt`, `negative_prompt`, `pose.beta`), or
/// None for a key that is not live.
pub fn canonical(key: &str) -> Option<&'static str> {
    let key = key.trim().trim_start_matches('/').replace('_', "-");
    let name = match key.split_once('.') {
        Some(("params", rest)) => rest.to_string(),
        Some(("engine", "similarity-threshold")) => "similarity-threshold".into(),
        Some(("pose", "controlnet-scale")) => "controlnet-scale".into(),
        Some(("pose", rest)) if ["min-cutoff", "beta", "d-cutoff", "hold-s"].contains(&rest) => format!("pose-{rest}"),
        Some(("window", "view")) => "view".into(),
        Some(_) => return None,
        None => key,
    };
    KEYS.iter().find(|k| **k == name).copied()
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
            view,
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

    /// Set one value (`key` in any spelling [`canonical`] takes); the message names the key and what it takes.
    pub fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        let name = canonical(key).ok_or_else(|| {
            format!("unknown key `{}` (expected one of: {})", preview(key, SHOWN_CHARS), KEYS.join(", "))
        })?;
        let bad = |expected: &str| format!("{name}: {} is not {expected}", show(value));
        let pose_only = |slot: &Option<f64>| {
            if slot.is_none() { Err(format!("{name}: this pipeline is not pose-guided (no [pose])")) } else { Ok(()) }
        };
        match name {
            "prompt" => self.prompt = text(value).ok_or_else(|| bad("a string"))?,
            "negative-prompt" => self.negative_prompt = text(value).ok_or_else(|| bad("a string"))?,
            "guidance" => {
                self.guidance = number(value, 0.0, MAX_GUIDANCE).ok_or_else(|| bad(&range(0.0, MAX_GUIDANCE)))?
            }
            "strength" => self.strength = number(value, 0.0, 1.0).ok_or_else(|| bad(&range(0.0, 1.0)))?,
            "steps" => {
                self.steps =
                    integer(value, 1, MAX_STEPS as u64).ok_or_else(|| bad(&format!("1 to {MAX_STEPS}")))? as usize;
            }
            "timesteps" => {
                self.timesteps = match value {
                    Value::Null => None,
                    Value::Array(items) if !items.is_empty() => Some(
                        items
                            .iter()
                            .map(|t| integer(t, 0, 999).map(|t| t as u32))
                            .collect::<Option<Vec<u32>>>()
                            .ok_or_else(|| bad("a list of timesteps from 0 to 999"))?,
                    ),
                    _ => return Err(bad("a list of timesteps (descending, 0 to 999) or null")),
                }
            }
            "seed" => self.seed = integer(value, 0, i64::MAX as u64).ok_or_else(|| bad("a whole number ≥ 0"))?,
            "transition-frames" => {
                self.transition_frames = integer(value, 0, u64::from(MAX_TRANSITION_FRAMES))
                    .ok_or_else(|| bad(&format!("0 to {MAX_TRANSITION_FRAMES} frames")))?
                    as u32;
            }
            "feedback" => {
                self.feedback = number(value, 0.0, MAX_FEEDBACK).ok_or_else(|| bad(&range(0.0, MAX_FEEDBACK)))?
            }
            "similarity-threshold" => {
                let v = value.as_f64().ok_or_else(|| bad("a number"))?;
                self.similarity_threshold =
                    f64::from(crate::similarity::check_threshold(v).map_err(|e| format!("{name}: {e}"))?);
            }
            "controlnet-scale" => {
                pose_only(&self.controlnet_scale)?;
                let max = crate::diffusion::controlnet::MAX_CONDITIONING_SCALE;
                self.controlnet_scale = Some(number(value, 0.0, max).ok_or_else(|| bad(&range(0.0, max)))?);
            }
            "pose-min-cutoff" | "pose-beta" | "pose-d-cutoff" | "pose-hold-s" => {
                let v = value.as_f64().ok_or_else(|| bad("a number"))?;
                let (slot, check): (&mut Option<f64>, RangeCheck) = match name {
                    "pose-min-cutoff" => (&mut self.pose_min_cutoff, smooth::check_min_cutoff),
                    "pose-beta" => (&mut self.pose_beta, smooth::check_beta),
                    "pose-d-cutoff" => (&mut self.pose_d_cutoff, smooth::check_d_cutoff),
                    _ => (&mut self.pose_hold_s, smooth::check_hold_s),
                };
                pose_only(slot)?;
                *slot = Some(check(v).map_err(|e| format!("{name}: {e}"))?);
            }
            "view" => {
                if self.view.is_none() {
                    return Err(format!("{name}: this pipeline has no window"));
                }
                let view = serde_json::from_value::<View>(value.clone()).ok();
                self.view = Some(view.ok_or_else(|| bad("\"output\", \"input\", \"side-by-side\" or \"pose\""))?);
            }
            _ => return Err(format!("unknown key `{}`", preview(key, SHOWN_CHARS))),
        }
        Ok(())
    }

    /// Check the values together (the schedule they make, the stream batch); the message names the key.
    pub fn check(&self, limits: &Limits) -> Result<(), String> {
        let schedule = self.params().check(&limits.lcm).map_err(|e| match e {
            crate::Error::InvalidParameter { what, problem } => format!("{what}: {problem}"),
            other => other.to_string(),
        })?;
        if limits.stream_batch > 1 {
            crate::diffusion::BatchMode::choose(limits.stream_batch, schedule.timesteps().len())
                .map_err(|e| format!("steps: the stream batch is {}: {e}", limits.stream_batch))?;
        }
        if limits.txt2img && self.timesteps.is_none() && self.strength != 1.0 {
            return Err(format!(
                "strength: pose txt2img runs the whole schedule (strength 1), not {}; change steps or timesteps",
                show_f64(self.strength)
            ));
        }
        if limits.txt2img && self.feedback > 0.0 {
            return Err("feedback: pose txt2img has no input latent to blend into (use img2img)".into());
        }
        Ok(())
    }
}

/// A value's range check from the pipeline file's rules.
type RangeCheck = fn(f64) -> Result<f64, String>;

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

fn range(min: f64, max: f64) -> String {
    format!("a number from {} to {}", show_f64(min), show_f64(max))
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

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

fn number(value: &Value, min: f64, max: f64) -> Option<f64> {
    value.as_f64().filter(|v| v.is_finite() && (min..=max).contains(v))
}

/// A whole number in `min..=max`; a float with no fraction counts (OSC tools often send only floats).
fn integer(value: &Value, min: u64, max: u64) -> Option<u64> {
    let n = match value {
        Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
        }
        _ => None,
    }?;
    (min..=max).contains(&n).then_some(n)
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
        let e = v.set("steps", &json!(9)).unwrap_err();
        assert!(e.starts_with("steps: 9 is not 1 to 8"), "{e}");
        assert!(v.set("guidance", &json!("high")).unwrap_err().starts_with("guidance:"));
        assert!(v.set("feedback", &json!(0.95)).unwrap_err().contains("0 to 0.9"));
        assert!(v.set("nope", &json!(1)).unwrap_err().contains("unknown key `nope`"));
        assert!(v.set("controlnet-scale", &json!(1)).unwrap_err().contains("not pose-guided"));
        assert!(v.set("timesteps", &json!([999, -1])).unwrap_err().starts_with("timesteps:"));
        v.set("timesteps", &json!([999, 499])).unwrap();
        v.set("timesteps", &json!(null)).unwrap();
        assert_eq!(v.timesteps, None);
        assert_eq!(v.steps, 4, "a failed set leaves the value");
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
        let e = v.set("strength", &json!(1e300)).unwrap_err();
        assert_eq!(e, "strength: 1e300 is not a number from 0 to 1");
        let e = v.set(&"k".repeat(5000), &json!(1)).unwrap_err();
        assert!(e.len() < 400 && e.contains("(5000 chars)"), "{}", &e[..e.len().min(400)]);
        v.strength = 1e-320;
        let limits = Limits { lcm: Lcm::new(Default::default()), stream_batch: 1, txt2img: true };
        let e = v.check(&limits).unwrap_err();
        assert!(e.starts_with("strength: 1e-320 leaves 0"), "{e}");
    }
}
