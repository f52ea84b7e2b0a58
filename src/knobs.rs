//! Every knob a user turns, declared once: its pipeline-file key, its live name, its command-line flag, its type
//! and range, its unit, its default, one line of help, and what changing it while a pipeline runs costs. Config
//! parsing, `--set`, the flags, live control (HTTP, WebSocket, OSC, stdin), the window's keys and README's
//! Parameters table all read these declarations (in the manner of GStreamer's property specs), so a range is
//! written in one place and every entry point refuses the same values with the same bounds in its message.
//!
//! This is the ground floor: it depends on no other module of the crate. Checks that combine values (the
//! schedule that steps, strength and timesteps make for a model; the stream batch against the steps) live where
//! those values meet, once each.

use std::fmt;

/// What a knob takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Range {
    /// Any text (prompts).
    Text,
    /// A whole number from `min` to `max`.
    Int {
        min: i64,
        max: i64,
    },
    /// A number from `min` to `max` (finite).
    Float {
        min: f64,
        max: f64,
    },
    /// A list of whole numbers from `min` to `max`, or none (null).
    IntList {
        min: i64,
        max: i64,
    },
    /// One of these words.
    Choice(&'static [&'static str]),
    Bool,
    /// `WxH` (or `[W, H]` in a file), each side from `min` to `max`.
    Size {
        min: i64,
        max: i64,
    },
}

/// What a change of a knob costs while a pipeline runs (ordered: a change of several knobs costs the most).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LiveCost {
    /// Used where it is read (the window, the pose smoother): the diffusion thread changes nothing.
    Nothing,
    /// The frames still in a stream batch finish with the old values; the similarity filter starts over.
    Flush,
    /// [`LiveCost::Flush`], then the frame path's small graphs and bindings are built again (the models'
    /// sessions are kept).
    Rebuild,
    /// The prompt is encoded on the text encoder's own thread first (frames keep the old prompt meanwhile), then
    /// [`LiveCost::Rebuild`].
    Reencode,
    /// Not live: a restart takes it.
    Restart,
}

impl LiveCost {
    /// As README's Parameters table says it.
    pub fn describe(self) -> &'static str {
        match self {
            LiveCost::Nothing => "live, free",
            LiveCost::Flush => "live: flushes the stream batch",
            LiveCost::Rebuild => "live: flush + rebuild of the small graphs",
            LiveCost::Reencode => "live: prompt encoded, then rebuild",
            LiveCost::Restart => "restart",
        }
    }
}

/// One knob.
#[derive(Debug, PartialEq)]
pub struct Knob {
    /// The pipeline file's key as `--set` writes it (`params.steps`).
    pub key: &'static str,
    /// The live-control name (HTTP/WebSocket JSON, OSC address, stdin), when it can change while running.
    pub live: Option<&'static str>,
    /// The command-line flag of `convert`, `img2img` and `bench`, when there is one.
    pub flag: Option<&'static str>,
    pub range: Range,
    /// The unit of a number ("" when it has none).
    pub unit: &'static str,
    /// The default as README shows it.
    pub default: &'static str,
    pub help: &'static str,
    pub cost: LiveCost,
}

/// How the source of a value named the knob: the message names it the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    /// A pipeline file or `--set` (`params.steps`).
    Key,
    /// A command-line flag (`--steps`).
    Flag,
    /// Live control (`steps`).
    Live,
}

/// A value as an entry point has it, before the knob's check.
#[derive(Clone, Debug, PartialEq)]
pub enum Given {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    List(Vec<Given>),
    Null,
    /// Anything else (a table, an object), by its type's name.
    Other(&'static str),
}

impl Given {
    pub fn from_json(value: &serde_json::Value) -> Given {
        use serde_json::Value as J;
        match value {
            J::Null => Given::Null,
            J::Bool(b) => Given::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Given::Int(i),
                None => n.as_f64().map_or(Given::Other("number"), Given::Float),
            },
            J::String(s) => Given::Text(s.clone()),
            J::Array(items) => Given::List(items.iter().map(Given::from_json).collect()),
            J::Object(_) => Given::Other("object"),
        }
    }

    pub fn from_toml(value: &toml::Value) -> Given {
        use toml::Value as T;
        match value {
            T::Integer(i) => Given::Int(*i),
            T::Float(x) => Given::Float(*x),
            T::String(s) => Given::Text(s.clone()),
            T::Boolean(b) => Given::Bool(*b),
            T::Array(items) => Given::List(items.iter().map(Given::from_toml).collect()),
            T::Datetime(_) => Given::Other("date"),
            T::Table(_) => Given::Other("table"),
        }
    }
}

impl fmt::Display for Given {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Given::Int(i) => write!(f, "{i}"),
            Given::Float(x) => f.write_str(&show_f64(*x)),
            Given::Text(s) => write!(f, "{:?}", preview(s, SHOWN_CHARS)),
            Given::Bool(b) => write!(f, "{b}"),
            Given::List(items) if items.len() > 8 => write!(f, "a list of {}", items.len()),
            Given::List(items) => {
                let shown: Vec<String> = items.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", shown.join(", "))
            }
            Given::Null => f.write_str("null"),
            Given::Other(kind) => write!(f, "a {kind}"),
        }
    }
}

/// A checked value.
#[derive(Clone, Debug, PartialEq)]
pub enum Checked {
    Int(i64),
    Float(f64),
    Text(String),
    IntList(Option<Vec<i64>>),
    Choice(&'static str),
    Bool(bool),
    Size(u32, u32),
}

/// A value a knob refuses: which knob, as its source named it, what was given, and what it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct KnobError {
    pub knob: &'static Knob,
    pub spelling: Spelling,
    pub given: String,
}

impl KnobError {
    /// The knob as the value's source named it.
    pub fn name(&self) -> &'static str {
        self.knob.name(self.spelling)
    }

    /// What was wrong, without the knob's name: `9: expected a whole number from 1 to 8`.
    pub fn problem(&self) -> String {
        format!("{}: expected {}", self.given, self.knob.expected())
    }
}

impl fmt::Display for KnobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.problem())
    }
}

impl std::error::Error for KnobError {}

impl Knob {
    /// The knob as `spelling` names it (the key where there is no flag or live name).
    pub fn name(&self, spelling: Spelling) -> &'static str {
        match spelling {
            Spelling::Key => self.key,
            Spelling::Flag => self.flag.unwrap_or(self.key),
            Spelling::Live => self.live.unwrap_or(self.key),
        }
    }

    /// What the knob takes, as messages and README say it.
    pub fn expected(&self) -> String {
        let unit = if self.unit.is_empty() { String::new() } else { format!(" {}", self.unit) };
        match self.range {
            Range::Text => "text".into(),
            Range::Int { min, max: i64::MAX } => format!("a whole number from {min} up{unit}"),
            Range::Int { min, max } => format!("a whole number from {min} to {max}{unit}"),
            Range::Float { min, max } => format!("a number from {} to {}{unit}", show_f64(min), show_f64(max)),
            Range::IntList { min, max } => format!("a list of whole numbers from {min} to {max}, or none"),
            Range::Choice(words) => {
                let quoted: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
                format!("one of {}", quoted.join(", "))
            }
            Range::Bool => "true or false".into(),
            Range::Size { min, max } => format!("WxH, each side from {min} to {max}"),
        }
    }

    /// The range alone, as README's table shows it.
    pub fn range_text(&self) -> String {
        match self.range {
            Range::Text => "text".into(),
            Range::Int { min, max: i64::MAX } => format!("≥ {min}"),
            Range::Int { min, max } | Range::IntList { min, max } => format!("{min} to {max}"),
            Range::Float { min, max } => format!("{} to {}", show_f64(min), show_f64(max)),
            Range::Choice(words) => words.join(" \\| "),
            Range::Bool => "true \\| false".into(),
            Range::Size { min, max } => format!("WxH, {min} to {max}"),
        }
    }

    /// Check `given` against the range; the error names the knob as `spelling` does.
    pub fn check(&'static self, given: &Given, spelling: Spelling) -> Result<Checked, KnobError> {
        let refuse = || KnobError { knob: self, spelling, given: given.to_string() };
        let whole = |g: &Given, min: i64, max: i64| match g {
            Given::Int(i) if (min..=max).contains(i) => Some(*i),
            // A number written with a fraction of zero (`2.0` from JSON tools) is the whole number.
            Given::Float(x) if x.fract() == 0.0 && (min as f64..=max as f64).contains(x) => Some(*x as i64),
            _ => None,
        };
        match (self.range, given) {
            (Range::Text, Given::Text(s)) => Ok(Checked::Text(s.clone())),
            // `prompt = 1984` (a file, a stdin line) and `/latentcam/prompt 1984` mean the text.
            (Range::Text, Given::Int(_) | Given::Float(_) | Given::Bool(_)) => Ok(Checked::Text(given.to_string())),
            (Range::Int { min, max }, g) => whole(g, min, max).map(Checked::Int).ok_or_else(refuse),
            (Range::Float { min, max }, Given::Int(i)) if (min..=max).contains(&(*i as f64)) => {
                Ok(Checked::Float(*i as f64))
            }
            (Range::Float { min, max }, Given::Float(x)) if x.is_finite() && (min..=max).contains(x) => {
                Ok(Checked::Float(*x))
            }
            (Range::IntList { .. }, Given::Null) => Ok(Checked::IntList(None)),
            (Range::IntList { min, max }, Given::List(items)) if !items.is_empty() => items
                .iter()
                .map(|g| whole(g, min, max))
                .collect::<Option<Vec<i64>>>()
                .map(|list| Checked::IntList(Some(list)))
                .ok_or_else(refuse),
            (Range::Choice(words), Given::Text(s)) => {
                words.iter().find(|w| **w == s.as_str()).map(|w| Checked::Choice(w)).ok_or_else(refuse)
            }
            (Range::Bool, Given::Bool(b)) => Ok(Checked::Bool(*b)),
            (Range::Size { min, max }, g) => parse_size(g, min, max).ok_or_else(refuse),
            _ => Err(refuse()),
        }
    }

    /// [`Knob::check`] for a whole number.
    pub fn int(&'static self, given: &Given, spelling: Spelling) -> Result<i64, KnobError> {
        match self.check(given, spelling)? {
            Checked::Int(i) => Ok(i),
            _ => Err(KnobError { knob: self, spelling, given: given.to_string() }),
        }
    }

    /// [`Knob::check`] for a number.
    pub fn float(&'static self, given: &Given, spelling: Spelling) -> Result<f64, KnobError> {
        match self.check(given, spelling)? {
            Checked::Float(x) => Ok(x),
            _ => Err(KnobError { knob: self, spelling, given: given.to_string() }),
        }
    }

    /// The bounds of a whole-number knob, for code that needs them as constants (`MAX_STEPS`).
    pub const fn int_bounds(&self) -> (i64, i64) {
        match self.range {
            Range::Int { min, max } | Range::IntList { min, max } | Range::Size { min, max } => (min, max),
            _ => panic!("not a whole-number knob"),
        }
    }

    /// The bounds of a number knob, for code that needs them as constants (`MAX_GUIDANCE`).
    pub const fn float_bounds(&self) -> (f64, f64) {
        match self.range {
            Range::Float { min, max } => (min, max),
            _ => panic!("not a number knob"),
        }
    }
}

fn parse_size(given: &Given, min: i64, max: i64) -> Option<Checked> {
    let (w, h) = match given {
        Given::Text(text) => {
            let (w, h) = text.trim().split_once(['x', 'X'])?;
            (w.trim().parse::<i64>().ok()?, h.trim().parse::<i64>().ok()?)
        }
        Given::List(items) => match items.as_slice() {
            [Given::Int(w), Given::Int(h)] => (*w, *h),
            _ => return None,
        },
        _ => return None,
    };
    let side = |s: i64| (min..=max).contains(&s).then(|| u32::try_from(s).ok()).flatten();
    Some(Checked::Size(side(w)?, side(h)?))
}

/// How many characters of a user's text a message or a log line shows.
pub const SHOWN_CHARS: usize = 60;

/// A float in its shortest form that reads back as the same number: `1e-320`, not 330 digits; `0.5`; `2`.
pub fn show_f64(x: f64) -> String {
    let magnitude = x.abs();
    if x.is_finite() && x != 0.0 && !(1e-5..1e16).contains(&magnitude) { format!("{x:?}") } else { format!("{x}") }
}

/// The first `max` characters of `text`, and when there is more, `…` and the length: `a very long prompt… (60000
/// chars)`. What logs and messages show of text a user sent (a prompt, a request, a line).
pub fn preview(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    format!("{}… ({count} chars)", head.trim_end())
}

// ------------------------------------------------------------------------------------------------------------
// The declarations. Ranges are the one place each bound is written; other modules take them from here.

/// `params.*`: what diffusion does.
pub static PROMPT: Knob = Knob {
    key: "params.prompt",
    live: Some("prompt"),
    flag: Some("--prompt"),
    range: Range::Text,
    unit: "",
    default: "\"\"",
    help: "What to turn the picture into (CLIP's 77 tokens: longer prompts are cut, with a warning).",
    cost: LiveCost::Reencode,
};

pub static NEGATIVE_PROMPT: Knob = Knob {
    key: "params.negative-prompt",
    live: Some("negative-prompt"),
    flag: Some("--negative-prompt"),
    range: Range::Text,
    unit: "",
    default: "\"\"",
    help: "What to steer away from (classifier-free guidance only, guidance above 1).",
    cost: LiveCost::Reencode,
};

pub static STEPS: Knob = Knob {
    key: "params.steps",
    live: Some("steps"),
    flag: Some("--steps"),
    range: Range::Int { min: 1, max: 8 },
    unit: "",
    default: "the model's",
    help: "Denoising steps (LCM and Turbo: 1 to 4 are the useful range).",
    cost: LiveCost::Rebuild,
};

pub static STRENGTH: Knob = Knob {
    key: "params.strength",
    live: Some("strength"),
    flag: Some("--strength"),
    range: Range::Float { min: 0.0, max: 1.0 },
    unit: "",
    default: "the model's",
    help: "How much of the input to replace; 0 runs the VAE only.",
    cost: LiveCost::Rebuild,
};

pub static GUIDANCE: Knob = Knob {
    key: "params.guidance",
    live: Some("guidance"),
    flag: Some("--guidance"),
    range: Range::Float { min: 0.0, max: 10.0 },
    unit: "",
    default: "the model's",
    help: "Guidance scale; 1.0 to 2.5 is the useful range (above 1: classifier-free guidance, a batch of 2).",
    cost: LiveCost::Rebuild,
};

pub static SEED: Knob = Knob {
    key: "params.seed",
    live: Some("seed"),
    flag: Some("--seed"),
    range: Range::Int { min: 0, max: i64::MAX },
    unit: "",
    default: "0",
    help: "Noise seed: the same seed gives the same output (the noise is drawn once and kept).",
    cost: LiveCost::Rebuild,
};

pub static TIMESTEPS: Knob = Knob {
    key: "params.timesteps",
    live: Some("timesteps"),
    flag: Some("--timesteps"),
    range: Range::IntList { min: 0, max: 999 },
    unit: "",
    default: "none",
    help: "Explicit descending timesteps (StreamDiffusion style), instead of steps and strength.",
    cost: LiveCost::Rebuild,
};

pub static TRANSITION_FRAMES: Knob = Knob {
    key: "params.transition-frames",
    live: Some("transition-frames"),
    flag: None,
    range: Range::Int { min: 0, max: 300 },
    unit: "frames",
    default: "10",
    help: "A live prompt change blends the prompt embeddings over this many frames (0: a cut).",
    cost: LiveCost::Flush,
};

pub static FEEDBACK: Knob = Knob {
    key: "params.feedback",
    live: Some("feedback"),
    flag: Some("--feedback"),
    range: Range::Float { min: 0.0, max: 0.9 },
    unit: "",
    default: "0",
    help: "Latent feedback: the fraction of the last output latent blended into the next input's (steadier, smears \
           fast motion).",
    cost: LiveCost::Rebuild,
};

/// `engine.*`: how frames run through the models.
pub static STREAM_BATCH: Knob = Knob {
    key: "engine.stream-batch",
    live: None,
    flag: Some("--stream-batch"),
    range: Range::Int { min: 1, max: 8 },
    unit: "frames",
    default: "1",
    help: "Frames per UNet batch with 1 step, or the denoising batch (= steps) with more: faster on GPUs, the \
           output the same.",
    cost: LiveCost::Restart,
};

pub static CUDA_GRAPH: Knob = Knob {
    key: "engine.cuda-graph",
    live: None,
    flag: None,
    range: Range::Bool,
    unit: "",
    default: "false",
    help: "Capture the models' CUDA graphs (CUDA and TensorRT providers; ignored on the CPU).",
    cost: LiveCost::Restart,
};

pub static SIMILARITY_THRESHOLD: Knob = Knob {
    key: "engine.similarity-threshold",
    live: Some("similarity-threshold"),
    flag: Some("--similarity-threshold"),
    range: Range::Float { min: 0.0, max: 1.0 },
    unit: "",
    default: "0.01 live, 0 offline",
    help: "Reuse the last output for a frame that differs from the last converted one by less than this (0: off).",
    cost: LiveCost::Flush,
};

pub static SIMILARITY_MAX_SKIPS: Knob = Knob {
    key: "engine.similarity-max-skips",
    live: None,
    flag: None,
    range: Range::Int { min: 1, max: 600 },
    unit: "frames",
    default: "10",
    help: "At most this many reused outputs in a row.",
    cost: LiveCost::Restart,
};

pub static TENSORRT_FP16: Knob = Knob {
    key: "engine.tensorrt-fp16",
    live: None,
    flag: None,
    range: Range::Choice(&["auto", "on", "off"]),
    unit: "",
    default: "auto",
    help: "TensorRT engines in half precision: auto = UNet, ControlNet and the VAE unless model.toml marks it \
           vae-fp32-only.",
    cost: LiveCost::Restart,
};

/// `model.size`: the working size.
pub static SIZE: Knob = Knob {
    key: "model.size",
    live: None,
    flag: Some("--size"),
    range: Range::Size { min: 8, max: 4096 },
    unit: "px",
    default: "the input's aspect at about native-size² pixels",
    help: "Working size; sides multiples of the model's size-multiple (README's size policy).",
    cost: LiveCost::Restart,
};

/// `pose.*`: pose-guided generation.
pub static POSE_MODE: Knob = Knob {
    key: "pose.mode",
    live: None,
    flag: Some("--pose"),
    range: Range::Choice(&["txt2img", "img2img"]),
    unit: "",
    default: "txt2img",
    help: "A character from the pose alone (txt2img), or the frame restyled guided by its pose (img2img).",
    cost: LiveCost::Restart,
};

pub static CONTROLNET_SCALE: Knob = Knob {
    key: "pose.controlnet-scale",
    live: Some("controlnet-scale"),
    flag: Some("--controlnet-scale"),
    range: Range::Float { min: 0.0, max: 2.0 },
    unit: "",
    default: "1",
    help: "ControlNet conditioning scale: how strongly the skeleton guides the picture.",
    cost: LiveCost::Rebuild,
};

pub static POSE_THRESHOLD: Knob = Knob {
    key: "pose.threshold",
    live: None,
    flag: None,
    range: Range::Float { min: 0.0, max: 1.0 },
    unit: "",
    default: "0.3",
    help: "Keypoints below this confidence are missing.",
    cost: LiveCost::Restart,
};

pub static POSE_MIN_CUTOFF: Knob = Knob {
    key: "pose.min-cutoff",
    live: Some("pose-min-cutoff"),
    flag: None,
    range: Range::Float { min: 0.01, max: 100.0 },
    unit: "Hz",
    default: "0.3",
    help: "One-Euro filter: the cutoff for a still keypoint (lower smooths more and lags more).",
    cost: LiveCost::Nothing,
};

pub static POSE_BETA: Knob = Knob {
    key: "pose.beta",
    live: Some("pose-beta"),
    flag: None,
    range: Range::Float { min: 0.0, max: 10.0 },
    unit: "Hz per px/s",
    default: "0.007",
    help: "One-Euro filter: how fast the cutoff rises with speed (higher follows fast motion more tightly).",
    cost: LiveCost::Nothing,
};

pub static POSE_D_CUTOFF: Knob = Knob {
    key: "pose.d-cutoff",
    live: Some("pose-d-cutoff"),
    flag: None,
    range: Range::Float { min: 0.01, max: 100.0 },
    unit: "Hz",
    default: "1",
    help: "One-Euro filter: the cutoff of the speed estimate.",
    cost: LiveCost::Nothing,
};

pub static POSE_HOLD_S: Knob = Knob {
    key: "pose.hold-s",
    live: Some("pose-hold-s"),
    flag: None,
    range: Range::Float { min: 0.0, max: 10.0 },
    unit: "s",
    default: "0.25",
    help: "How long a missing keypoint keeps its last place (and an unmatched person their track).",
    cost: LiveCost::Nothing,
};

/// `mask.*`: restyle only part of the frame (README "Masks").
pub static MASK_SOURCE: Knob = Knob {
    key: "mask.source",
    live: None,
    flag: Some("--mask"),
    range: Range::Choice(&["segmenter", "faces", "chroma", "image", "video"]),
    unit: "",
    default: "segmenter",
    help: "What makes the mask: the person segmenter (the room changes), the faces (all but the faces change), a \
           chroma key, a still image or a mask video (`mask.file`; white = change).",
    cost: LiveCost::Restart,
};

pub static MASK_ALSO: Knob = Knob {
    key: "mask.also",
    live: None,
    flag: Some("--mask-also"),
    range: Range::Choice(&["segmenter", "faces", "chroma", "image", "video"]),
    unit: "",
    default: "none",
    help: "A second source joined with the first by `mask.combine` (its file: `mask.also-file`).",
    cost: LiveCost::Restart,
};

pub static MASK_COMBINE: Knob = Knob {
    key: "mask.combine",
    live: None,
    flag: Some("--mask-combine"),
    range: Range::Choice(&["union", "difference", "intersection"]),
    unit: "",
    default: "union",
    help: "How the second source joins the first: change what either changes, what the first changes and the \
           second does not, or what both change.",
    cost: LiveCost::Restart,
};

pub static MASK_ENABLED: Knob = Knob {
    key: "mask.enabled",
    live: Some("mask"),
    flag: None,
    range: Range::Bool,
    unit: "",
    default: "true",
    help: "Restyle only the mask's area; off: the whole frame (the mask is still made, for the view). Key K.",
    cost: LiveCost::Nothing,
};

pub static MASK_KEEP_FACES: Knob = Knob {
    key: "mask.keep-faces",
    live: Some("mask-keep-faces"),
    flag: Some("--keep-faces"),
    range: Range::Bool,
    unit: "",
    default: "false",
    help: "Keep every face (BlazeFace) as it is, whatever the source says. Key J.",
    cost: LiveCost::Nothing,
};

pub static MASK_INVERT: Knob = Knob {
    key: "mask.invert",
    live: Some("mask-invert"),
    flag: Some("--mask-invert"),
    range: Range::Bool,
    unit: "",
    default: "false",
    help: "Change what the source keeps and keep what it changes (segmenter: restyle the person). Key U.",
    cost: LiveCost::Nothing,
};

pub static MASK_THRESHOLD: Knob = Knob {
    key: "mask.threshold",
    live: Some("mask-threshold"),
    flag: Some("--mask-threshold"),
    range: Range::Float { min: 0.0, max: 1.0 },
    unit: "",
    default: "0 (soft)",
    help: "Hard edges: change where the (smoothed) mask is at least this; 0 keeps the soft mask.",
    cost: LiveCost::Nothing,
};

pub static MASK_GROW: Knob = Knob {
    key: "mask.grow-px",
    live: Some("mask-grow-px"),
    flag: Some("--mask-grow"),
    range: Range::Int { min: -256, max: 256 },
    unit: "px",
    default: "0",
    help: "Grow the area to change by this much (negative: shrink it), at the working size.",
    cost: LiveCost::Nothing,
};

pub static MASK_FEATHER: Knob = Knob {
    key: "mask.feather-px",
    live: Some("mask-feather-px"),
    flag: Some("--mask-feather"),
    range: Range::Float { min: 0.0, max: 256.0 },
    unit: "px",
    default: "4",
    help: "Soften the mask's edge over about this much, and fade the composite in over it on the changed side.",
    cost: LiveCost::Nothing,
};

pub static MASK_SMOOTHING: Knob = Knob {
    key: "mask.smoothing",
    live: Some("mask-smoothing"),
    flag: Some("--mask-smoothing"),
    range: Range::Float { min: 0.0, max: 0.99 },
    unit: "",
    default: "0.5",
    help: "Temporal smoothing: the previous frames' share in the mask (steadier edges, slower to follow).",
    cost: LiveCost::Nothing,
};

pub static MASK_COMPOSITE: Knob = Knob {
    key: "mask.composite",
    live: Some("mask-composite"),
    flag: Some("--mask-composite"),
    range: Range::Bool,
    unit: "",
    default: "true",
    help: "Outside the mask, show the input's own pixels exactly (the VAE round trip moves them a little).",
    cost: LiveCost::Nothing,
};

/// The window's view (`[[sink]] kind = "window"`, `view`).
pub static VIEW: Knob = Knob {
    key: "window.view",
    live: Some("view"),
    flag: None,
    range: Range::Choice(&["output", "input", "side-by-side", "pose", "mask"]),
    unit: "",
    default: "side-by-side",
    help: "What the window shows (keys O, I, S, P, M).",
    cost: LiveCost::Nothing,
};

/// Every knob, in README's order.
pub static ALL: [&Knob; 34] = [
    &PROMPT,
    &NEGATIVE_PROMPT,
    &STEPS,
    &STRENGTH,
    &GUIDANCE,
    &SEED,
    &TIMESTEPS,
    &TRANSITION_FRAMES,
    &FEEDBACK,
    &STREAM_BATCH,
    &CUDA_GRAPH,
    &SIMILARITY_THRESHOLD,
    &SIMILARITY_MAX_SKIPS,
    &TENSORRT_FP16,
    &SIZE,
    &POSE_MODE,
    &CONTROLNET_SCALE,
    &POSE_THRESHOLD,
    &POSE_MIN_CUTOFF,
    &POSE_BETA,
    &POSE_D_CUTOFF,
    &POSE_HOLD_S,
    &MASK_SOURCE,
    &MASK_ALSO,
    &MASK_COMBINE,
    &MASK_ENABLED,
    &MASK_KEEP_FACES,
    &MASK_INVERT,
    &MASK_THRESHOLD,
    &MASK_GROW,
    &MASK_FEATHER,
    &MASK_SMOOTHING,
    &MASK_COMPOSITE,
    &VIEW,
];

/// The knob a name means, as any entry point may spell it: the file key (`params.steps`), the live name
/// (`steps`, or `negative_prompt` from OSC tools that cannot send dashes), or the flag (`--steps`).
pub fn find(name: &str) -> Option<&'static Knob> {
    let name = name.trim().trim_start_matches('/').replace('_', "-");
    ALL.iter().copied().find(|k| k.key == name || k.live == Some(name.as_str()) || k.flag == Some(name.as_str()))
}

/// The knobs that can change while a pipeline runs.
pub fn live() -> impl Iterator<Item = &'static Knob> {
    ALL.iter().copied().filter(|k| k.live.is_some())
}

/// README's Parameters table (Markdown), made from the declarations.
pub fn readme_table() -> String {
    let mut out = String::from(
        "| file key (`--set`) | live name | flag | range | unit | default | while running |\n|---|---|---|---|---|---|---|\n",
    );
    for k in ALL {
        let code = |s: Option<&str>| s.map_or("–".to_string(), |s| format!("`{s}`"));
        out += &format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            k.key,
            code(k.live),
            code(k.flag),
            k.range_text(),
            if k.unit.is_empty() { "–" } else { k.unit },
            k.default,
            k.cost.describe()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_declaration_per_name() {
        let mut names = std::collections::HashSet::new();
        for k in ALL {
            for name in [Some(k.key), k.live, k.flag].into_iter().flatten() {
                assert!(names.insert(name), "{name} names two knobs");
            }
            assert_eq!(find(k.key), Some(k));
            if let Some(live) = k.live {
                assert_eq!(find(live), Some(k));
                assert_eq!(find(&live.replace('-', "_")), Some(k));
                assert!(k.cost < LiveCost::Restart, "{}: a live knob has a live cost", k.key);
            } else {
                assert_eq!(k.cost, LiveCost::Restart, "{}: not live, so a restart", k.key);
            }
        }
    }

    #[test]
    fn every_entry_point_gets_the_same_verdict_and_bounds() {
        let e = STEPS.check(&Given::Int(9), Spelling::Key).unwrap_err();
        assert_eq!(e.to_string(), "params.steps: 9: expected a whole number from 1 to 8");
        let e = STEPS.check(&Given::Int(0), Spelling::Flag).unwrap_err();
        assert_eq!(e.to_string(), "--steps: 0: expected a whole number from 1 to 8");
        let e = STEPS.check(&Given::Float(1.5), Spelling::Live).unwrap_err();
        assert_eq!(e.to_string(), "steps: 1.5: expected a whole number from 1 to 8");
        assert_eq!(STEPS.int(&Given::Float(2.0), Spelling::Live).unwrap(), 2);
        let e = STRENGTH.check(&Given::Float(1e-320 - 1.0), Spelling::Flag).unwrap_err();
        assert_eq!(e.problem(), "-1: expected a number from 0 to 1");
        assert_eq!(STRENGTH.float(&Given::Float(1e-320), Spelling::Flag).unwrap(), 1e-320);
        let e = FEEDBACK.check(&Given::Text("lots".into()), Spelling::Live).unwrap_err();
        assert_eq!(e.to_string(), "feedback: \"lots\": expected a number from 0 to 0.9");
        assert!(FEEDBACK.check(&Given::Float(f64::NAN), Spelling::Key).is_err());
        assert_eq!(TIMESTEPS.check(&Given::Null, Spelling::Live).unwrap(), Checked::IntList(None));
        let list = Given::List(vec![Given::Int(999), Given::Int(499)]);
        assert_eq!(TIMESTEPS.check(&list, Spelling::Key).unwrap(), Checked::IntList(Some(vec![999, 499])));
        assert!(TIMESTEPS.check(&Given::List(vec![]), Spelling::Key).is_err());
        assert!(TIMESTEPS.check(&Given::List(vec![Given::Int(1000)]), Spelling::Key).is_err());
        assert_eq!(VIEW.check(&Given::Text("pose".into()), Spelling::Live).unwrap(), Checked::Choice("pose"));
        let e = VIEW.check(&Given::Text("x".into()), Spelling::Live).unwrap_err();
        assert!(e.to_string().contains("one of \"output\", \"input\", \"side-by-side\", \"pose\", \"mask\""), "{e}");
        assert_eq!(SIZE.check(&Given::Text("512x288".into()), Spelling::Flag).unwrap(), Checked::Size(512, 288));
        let list = Given::List(vec![Given::Int(64), Given::Int(64)]);
        assert_eq!(SIZE.check(&list, Spelling::Key).unwrap(), Checked::Size(64, 64));
        assert!(SIZE.check(&Given::Text("5000x64".into()), Spelling::Flag).is_err());
        assert_eq!(SEED.expected(), "a whole number from 0 up");
    }

    #[test]
    fn json_and_toml_values_read_the_same() {
        for (json, toml) in [("7", "7"), ("0.5", "0.5"), ("\"a\"", "\"a\""), ("[1, 2]", "[1, 2]"), ("true", "true")] {
            let j = Given::from_json(&serde_json::from_str(json).unwrap());
            let t = Given::from_toml(&toml::from_str::<toml::Table>(&format!("v = {toml}")).unwrap()["v"]);
            assert_eq!(j, t, "{json}");
        }
    }

    #[test]
    fn long_values_are_shown_short() {
        assert_eq!(PROMPT.check(&Given::Int(1984), Spelling::Live).unwrap(), Checked::Text("1984".into()));
        let e = PROMPT.check(&Given::List(vec![Given::Int(3)]), Spelling::Live).unwrap_err();
        assert_eq!(e.to_string(), "prompt: [3]: expected text");
        let long = Given::Text("x".repeat(1000));
        assert!(long.to_string().len() < 100);
        assert_eq!(show_f64(1e-320), "1e-320");
        assert_eq!(show_f64(2.0), "2");
    }
}
