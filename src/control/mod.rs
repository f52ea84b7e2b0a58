//! Live control: what a running pipeline lets a user change, and the inputs that change it.
//!
//! Every input (window keys, lines on stdin, HTTP and WebSocket, OSC) goes through one [`ControlHub`]: it
//! holds the current [`LiveValues`], checks a change as a whole (a bad value changes nothing and the message
//! names it), and bumps a version. The stages that use a value poll the hub between frames (one mutex, no
//! waiting), so a change applies from the next frame each stage starts:
//!
//! - the diffusion thread: prompt (after the text-encoder thread has encoded it: [`prompts`]), guidance,
//!   strength, steps, timesteps, seed, feedback, ControlNet scale, similarity threshold; a change finishes the
//!   frames still in a stream batch and resets the similarity filter;
//! - the preprocess thread: the pose smoothing;
//! - the window: its view.

pub mod http;
pub mod inputs;
pub mod osc;
pub mod prompts;
pub mod values;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use self::inputs::LiveControl;
pub use self::values::{Limits, LiveError, LiveValues};
use crate::config::values::{SHOWN_CHARS, preview};

/// The one place live values change.
pub struct ControlHub {
    limits: Limits,
    /// Prompts the window's keys 1-9 switch to.
    presets: Vec<String>,
    state: Mutex<State>,
    /// The latest statistics (pushed to WebSocket clients).
    stats: Mutex<Value>,
    /// The WHEP viewers' side of a running WebRTC sink (`POST /whep`), once the sink has started.
    viewers: Mutex<Option<std::sync::Arc<dyn Peers>>>,
    /// The WHIP publisher's side of a WebRTC source (`POST /whip`).
    publishers: Mutex<Option<std::sync::Arc<dyn Peers>>>,
}

/// WHEP viewers at once unless the sink says otherwise.
pub const DEFAULT_MAX_VIEWERS: u32 = 4;

/// Who answers WebRTC peers: WHEP viewers (`crate::webrtc::WhepHub`) and WHIP publishers
/// (`crate::webrtc::whip::WhipHub`); the control server's `/whep` and `/whip` routes call them.
pub trait Peers: Send + Sync {
    /// Answer a peer's SDP offer (blocking, up to a few seconds): its id and the SDP answer.
    fn offer(&self, sdp: &str) -> Result<(String, String), PeerError>;
    /// Let a peer go; false when there is none of that id.
    fn delete(&self, id: &str) -> bool;
}

/// Why a WHEP offer was not answered, as the HTTP status that says so.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// 400: not an SDP offer latentcam can answer.
    #[error("{0}")]
    BadOffer(String),
    /// 503: no output to watch yet, or the viewer cap is reached.
    #[error("{0}")]
    Unavailable(String),
    /// 409: another publisher is live.
    #[error("{0}")]
    Busy(String),
    /// 500: the WebRTC stack failed.
    #[error("{0}")]
    Failed(String),
}

struct State {
    values: LiveValues,
    version: u64,
}

impl ControlHub {
    pub fn new(values: LiveValues, limits: Limits) -> ControlHub {
        ControlHub {
            limits,
            presets: Vec::new(),
            state: Mutex::new(State { values, version: 0 }),
            stats: Mutex::new(Value::Null),
            viewers: Mutex::new(None),
            publishers: Mutex::new(None),
        }
    }

    /// A WHIP source takes publishers from now on.
    pub fn set_publishers(&self, publishers: Option<std::sync::Arc<dyn Peers>>) {
        *self.publishers.lock().unwrap_or_else(|p| p.into_inner()) = publishers;
    }

    /// Who answers WHIP publishers, when the run's source is one.
    pub fn publishers(&self) -> Option<std::sync::Arc<dyn Peers>> {
        self.publishers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A WebRTC sink takes viewers from now on (None: it has finished).
    pub fn set_viewers(&self, viewers: Option<std::sync::Arc<dyn Peers>>) {
        *self.viewers.lock().unwrap_or_else(|p| p.into_inner()) = viewers;
    }

    /// Who answers WHEP viewers, while a WebRTC sink runs.
    pub fn viewers(&self) -> Option<std::sync::Arc<dyn Peers>> {
        self.viewers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// This hub with prompts for the window's keys 1-9.
    pub fn with_presets(mut self, presets: Vec<String>) -> ControlHub {
        self.presets = presets;
        self
    }

    pub fn presets(&self) -> &[String] {
        &self.presets
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current values.
    pub fn values(&self) -> LiveValues {
        self.state().values.clone()
    }

    /// The current values as `GET /params` returns them.
    pub fn values_json(&self) -> Value {
        serde_json::to_value(self.values()).unwrap_or(Value::Null)
    }

    /// The values, when they changed since version `seen` (which is moved on).
    pub fn newer(&self, seen: &mut u64) -> Option<LiveValues> {
        let state = self.state();
        (state.version != *seen).then(|| {
            *seen = state.version;
            state.values.clone()
        })
    }

    /// Apply several changes as one: all of them, or (on the first bad one) none. Returns the new values.
    pub fn apply(&self, changes: &[(String, Value)]) -> Result<LiveValues, LiveError> {
        let mut state = self.state();
        let mut next = state.values.clone();
        for (key, value) in changes {
            next.set(key, value)?;
        }
        next.check(&self.limits)?;
        if next != state.values {
            log_change(&state.values, &next);
            state.values = next;
            state.version += 1;
        }
        Ok(state.values.clone())
    }

    /// `POST /params`: a JSON object of changes; the new values as JSON.
    pub fn apply_json(&self, body: &Value) -> Result<Value, String> {
        let Value::Object(map) = body else {
            return Err(format!(
                "expected a JSON object of parameters, e.g. {{\"prompt\": \"a fox\"}}; got {}",
                values::show(body)
            ));
        };
        let changes: Vec<(String, Value)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.apply(&changes).map(|v| serde_json::to_value(v).unwrap_or(Value::Null)).map_err(|e| e.to_string())
    }

    /// A `key=value` line (stdin), written as `--set` takes it: `params.prompt="a fox"`, `steps=2`.
    pub fn apply_line(&self, line: &str) -> Result<LiveValues, String> {
        let (key, raw) = line.split_once('=').ok_or_else(|| {
            format!("{:?}: expected KEY=VALUE, e.g. params.prompt=\"a fox\"", preview(line, SHOWN_CHARS))
        })?;
        let value = serde_json::to_value(crate::config::overrides::parse_value(raw.trim()))
            .map_err(|e| format!("{}: {e}", preview(key.trim(), SHOWN_CHARS)))?;
        self.apply(&[(key.trim().to_string(), value)]).map_err(|e| e.to_string())
    }

    /// Record the latest statistics (called about five times a second by the pipeline).
    pub fn set_stats(&self, stats: Value) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    }

    /// The latest statistics as JSON (null before the first).
    pub fn stats_json(&self) -> Value {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Log what a change changed: one INFO line per value that differs, each a bounded preview (a 60 KB prompt
/// shows as its first characters and its length); the whole value only at TRACE.
fn log_change(old: &LiveValues, new: &LiveValues) {
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) = (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return;
    };
    for (key, value) in &new {
        if old.get(key) != Some(value) {
            tracing::info!(key = key.as_str(), value = %values::show(value), "live change");
            tracing::trace!(key = key.as_str(), %value, "live change (whole value)");
        }
    }
}

/// The live values as a log line shows them: the JSON of `GET /params`, every text cut to a preview.
pub(crate) fn shown_values(values: &Value) -> Value {
    let cut = |v: &Value| match v {
        Value::String(s) => Value::String(preview(s, SHOWN_CHARS)),
        other => other.clone(),
    };
    match values {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), cut(v))).collect()),
        other => cut(other),
    }
}

/// At most one warning per interval from something a peer can repeat at will (bad OSC packets, refused
/// requests); the others are counted, and the next warning says how many were left out.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// One warning a second.
    pub(crate) fn per_second() -> Throttle {
        Throttle { every: Duration::from_secs(1), last: None, suppressed: 0 }
    }

    /// Whether to warn at `now`: `Some(n)` when so, `n` being how many were suppressed since the last warning;
    /// None (and counted) when one was given less than the interval ago.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// `message`, at WARN when the throttle allows it (with the count of those suppressed), else at TRACE.
    pub(crate) fn warn(&mut self, message: std::fmt::Arguments<'_>) {
        match self.allow(Instant::now()) {
            Some(0) => tracing::warn!("{message}"),
            Some(n) => tracing::warn!("{message} ({n} more like it suppressed since the last)"),
            None => tracing::trace!("{message}"),
        }
    }
}

/// A hub over [`LiveValues::sample`] (img2img, no stream batch), for the inputs' tests.
#[cfg(test)]
pub(crate) fn sample_hub() -> ControlHub {
    let limits =
        Limits { lcm: crate::diffusion::scheduler::Lcm::new(Default::default()), stream_batch: 1, txt2img: false };
    ControlHub::new(LiveValues::sample(), limits)
}

/// What `f` logs on this thread (every level), as text: for tests of what is logged.
#[cfg(test)]
pub(crate) fn capture_logs(f: impl FnOnce()) -> String {
    use std::sync::Arc;
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buffer.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::Params;
    use crate::diffusion::scheduler::{Lcm, LcmConfig};
    use serde_json::json;

    fn hub() -> ControlHub {
        let params = Params {
            prompt: "a cat".into(),
            negative_prompt: String::new(),
            steps: 1,
            strength: 0.5,
            guidance: 1.0,
            seed: 0,
            timesteps: None,
        };
        let values = LiveValues::new(&params, 0, 0.0, 0.01, None, None);
        ControlHub::new(values, Limits { lcm: Lcm::new(LcmConfig::default()), stream_batch: 1, txt2img: false })
    }

    #[test]
    fn a_change_applies_whole_or_not_at_all() {
        let hub = hub();
        let mut seen = 0;
        assert!(hub.newer(&mut seen).is_none());
        let e = hub.apply_json(&json!({"prompt": "a fox", "steps": 12})).unwrap_err();
        assert!(e.starts_with("steps:"), "{e}");
        assert_eq!(hub.values().prompt, "a cat", "nothing applied");
        assert!(hub.newer(&mut seen).is_none());
        let out = hub.apply_json(&json!({"prompt": "a fox", "steps": 2})).unwrap();
        assert_eq!(out["prompt"], json!("a fox"));
        assert_eq!(hub.newer(&mut seen).map(|v| v.steps), Some(2));
        assert!(hub.newer(&mut seen).is_none(), "seen once");
        // The same values again are no change.
        hub.apply_json(&json!({"steps": 2})).unwrap();
        assert!(hub.newer(&mut seen).is_none());
    }

    #[test]
    fn lines_read_like_set() {
        let hub = hub();
        assert_eq!(hub.apply_line("params.prompt=\"a red fox\"").unwrap().prompt, "a red fox");
        assert_eq!(hub.apply_line("prompt = a plain string").unwrap().prompt, "a plain string");
        assert_eq!(hub.apply_line("params.strength=0.75").unwrap().strength, 0.75);
        assert!(hub.apply_line("nonsense").unwrap_err().contains("KEY=VALUE"));
        assert!(hub.apply_line("params.seed=-1").unwrap_err().starts_with("seed:"));
        assert!(hub.apply_json(&json!([1, 2])).unwrap_err().contains("JSON object"));
    }

    #[test]
    fn pose_txt2img_keeps_the_whole_schedule_and_has_no_feedback() {
        let hub = hub();
        let mut values = hub.values();
        values.strength = 1.0;
        let limits = Limits { txt2img: true, ..hub.limits().clone() };
        let hub = ControlHub::new(values, limits);
        assert!(hub.apply_json(&json!({"strength": 0.5})).unwrap_err().starts_with("strength: pose txt2img"));
        assert!(hub.apply_json(&json!({"feedback": 0.2})).unwrap_err().starts_with("feedback:"));
        hub.apply_json(&json!({"steps": 4, "seed": 3})).unwrap();
    }

    #[test]
    fn a_long_prompt_is_logged_as_a_preview() {
        let hub = hub();
        let prompt = format!("a watercolor painting {}", "of a very long harbour ".repeat(3000));
        let logged = capture_logs(|| {
            hub.apply_json(&json!({"prompt": prompt, "steps": 1})).unwrap();
        });
        let info: Vec<&str> = logged.lines().filter(|l| l.contains(" INFO ")).collect();
        assert_eq!(info.len(), 1, "one line for the one value that changed (steps did not):\n{info:?}");
        assert!(info[0].contains("key=\"prompt\""), "{}", info[0]);
        assert!(info[0].contains(&format!("… ({} chars)", prompt.chars().count())), "{}", info[0]);
        assert!(info[0].len() < 250, "{}", info[0]);
        // The whole prompt only at TRACE.
        assert!(logged.lines().any(|l| l.contains(" TRACE ") && l.contains(&prompt)));
        let shown = shown_values(&hub.values_json()).to_string();
        assert!(shown.len() < 500 && shown.contains("(69022 chars)") && shown.contains("\"steps\":1"), "{shown}");
    }

    #[test]
    fn errors_show_a_bounded_piece_of_what_was_sent() {
        let hub = hub();
        let long = "x".repeat(100_000);
        for e in [
            hub.apply_line(&long).unwrap_err(),
            hub.apply_line(&format!("{long}=1")).unwrap_err(),
            hub.apply_json(&json!([long])).unwrap_err(),
            hub.apply_json(&json!({"steps": long})).unwrap_err(),
            hub.apply_json(&json!({ long.clone(): 1 })).unwrap_err(),
        ] {
            assert!(e.len() < 400 && e.contains("chars)"), "{}", &e[..e.len().min(400)]);
        }
    }

    #[test]
    fn a_throttle_lets_one_warning_a_second_through_and_counts_the_rest() {
        let mut throttle = Throttle::per_second();
        let t0 = Instant::now();
        assert_eq!(throttle.allow(t0), Some(0));
        for ms in [1, 10, 500, 999] {
            assert_eq!(throttle.allow(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.allow(t0 + Duration::from_millis(1000)), Some(4));
        assert_eq!(throttle.allow(t0 + Duration::from_millis(1500)), None);
        assert_eq!(throttle.allow(t0 + Duration::from_millis(2500)), Some(1));
    }

    #[test]
    fn the_schedule_is_checked_as_a_whole() {
        let hub = hub();
        // strength 0.05 with 8 steps leaves no timestep for some steps: the scheduler says which value.
        let e = hub.apply_json(&json!({"strength": 0.01, "steps": 8})).unwrap_err();
        assert!(e.contains("strength") || e.contains("steps"), "{e}");
    }
}
