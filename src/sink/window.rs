//! The preview window (minifb), run on the main thread. It shows the newest processed frame from a slot and
//! never makes the pipeline wait. The title shows the output rate and the capture-to-display latency. OBS can
//! capture it as a window.
//!
//! Its keys change the run live (through the control hub, like every other input); H shows them over the
//! picture ([`HELP`]).

use std::time::{Duration, Instant};

use minifb::{Key, KeyRepeat, ScaleMode, Window, WindowOptions};
use serde_json::{Value, json};

use super::{LatestSlot, WindowHost, compose, view_size};
use crate::config::View;
use crate::control::LiveValues;
use crate::error::{Error, Result};
use crate::knobs::{self, Knob};

const FRAME_INTERVAL: Duration = Duration::from_millis(16);
/// How long a key's effect (or why it was refused) stays in the title.
const NOTICE: Duration = Duration::from_secs(3);

/// The window's keys, as the help overlay shows them (README "Window keys" says the same).
pub const HELP: [&str; 13] = [
    "H / F1      this help",
    "I O S P     view: input, output, side by side, pose",
    "1-9         prompt presets ([control] presets)",
    "Up / Down   strength +/- 0.05",
    "Right/Left  guidance +/- 0.1",
    "PgUp/PgDn   steps +/- 1",
    "N           next seed",
    "F           feedback 0 / 0.2 / 0.4",
    "] / [       ControlNet scale +/- 0.1",
    "T           similarity filter on / off",
    "R           back to the starting values",
    "",
    "Esc / Q     quit",
];

/// The change a key asks for, from the current values (`start`: the values the run started with); None for
/// keys that change nothing here.
fn key_change(key: Key, now: &LiveValues, start: &LiveValues, presets: &[String]) -> Option<Vec<(String, Value)>> {
    let one = |k: &str, v: Value| Some(vec![(k.to_string(), v)]);
    // A step of a knob, held in its declared range (its live name is the change's key).
    let nudge = |knob: &'static Knob, v: f64, by: f64| {
        let (min, max) = knob.float_bounds();
        one(knob.live.unwrap_or(knob.key), json!(((v + by).clamp(min, max) * 100.0).round() / 100.0))
    };
    let (min_steps, max_steps) = knobs::STEPS.int_bounds();
    let digit = [Key::Key1, Key::Key2, Key::Key3, Key::Key4, Key::Key5, Key::Key6, Key::Key7, Key::Key8, Key::Key9];
    if let Some(i) = digit.iter().position(|k| *k == key) {
        return presets.get(i).and_then(|p| one("prompt", json!(p)));
    }
    match key {
        Key::I => one("view", json!("input")),
        Key::O => one("view", json!("output")),
        Key::S => one("view", json!("side-by-side")),
        Key::P => one("view", json!("pose")),
        Key::Up => nudge(&knobs::STRENGTH, now.strength, 0.05),
        Key::Down => nudge(&knobs::STRENGTH, now.strength, -0.05),
        Key::Right => nudge(&knobs::GUIDANCE, now.guidance, 0.1),
        Key::Left => nudge(&knobs::GUIDANCE, now.guidance, -0.1),
        Key::PageUp => one("steps", json!((now.steps as i64 + 1).clamp(min_steps, max_steps))),
        Key::PageDown => one("steps", json!((now.steps as i64 - 1).clamp(min_steps, max_steps))),
        Key::N => one("seed", json!(now.seed.wrapping_add(1) % (i64::MAX as u64))),
        Key::F => one(
            "feedback",
            json!(match now.feedback {
                f if f < 0.2 => 0.2,
                f if f < 0.4 => 0.4,
                _ => 0.0,
            }),
        ),
        Key::RightBracket => now.controlnet_scale.and_then(|s| nudge(&knobs::CONTROLNET_SCALE, s, 0.1)),
        Key::LeftBracket => now.controlnet_scale.and_then(|s| nudge(&knobs::CONTROLNET_SCALE, s, -0.1)),
        Key::T => {
            let on = if start.similarity_threshold > 0.0 { start.similarity_threshold } else { 0.01 };
            one("similarity-threshold", json!(if now.similarity_threshold > 0.0 { 0.0 } else { on }))
        }
        Key::R => {
            let start = serde_json::to_value(start).ok()?;
            let Value::Object(map) = start else { return None };
            Some(map.into_iter().filter(|(k, _)| k != "view").collect())
        }
        _ => None,
    }
}

fn view_name(view: View) -> &'static str {
    match view {
        View::Output => "output",
        View::Input => "input",
        View::SideBySide => "side by side",
        View::Pose => "pose",
    }
}

/// 0RGB pixels as minifb wants them.
fn to_argb(image: &image::RgbImage, out: &mut Vec<u32>) {
    out.clear();
    out.extend(image.pixels().map(|p| (u32::from(p[0]) << 16) | (u32::from(p[1]) << 8) | u32::from(p[2])));
}

pub fn run(mut view: View, slot: &LatestSlot, host: &mut dyn WindowHost) -> Result<()> {
    let mut window: Option<Window> = None;
    let mut pixels = Vec::new();
    let mut last_tick = Instant::now();
    let mut shown = 0u64;
    let mut shown_since = (Instant::now(), 0u64);
    let mut fps = 0.0;
    let mut seen = 0;
    let start = host.control().map(|hub| hub.values());
    let mut help = false;
    let mut notice: Option<(String, Instant)> = None;
    loop {
        if host.pipeline_done() {
            return Ok(());
        }
        // The view follows live control (HTTP, OSC, stdin and this window's own keys).
        if let Some(v) = host.control().and_then(|hub| hub.newer(&mut seen)).and_then(|v| v.view) {
            view = v;
        }
        if let Some(frame) = slot.take() {
            let image = compose(&frame, view);
            if window.is_none() {
                let (w, h) = view_size(View::SideBySide, frame.output.width(), frame.output.height());
                let (w, h) = if view == View::SideBySide { (w, h) } else { (w / 2, h) };
                let options =
                    WindowOptions { resize: true, scale_mode: ScaleMode::AspectRatioStretch, ..Default::default() };
                let created = Window::new("latentcam", w as usize, h as usize, options).map_err(|e| Error::Sink {
                    sink: "window".into(),
                    problem: format!("cannot open a window: {e}"),
                })?;
                window = Some(created);
            }
            let Some(win) = window.as_mut() else { continue };
            to_argb(&image, &mut pixels);
            if help {
                let scale = if image.width() >= 640 { 2 } else { 1 };
                super::overlay::draw_text(&mut pixels, image.width() as usize, &HELP, scale);
            }
            win.update_with_buffer(&pixels, image.width() as usize, image.height() as usize)
                .map_err(|e| Error::Sink { sink: "window".into(), problem: e.to_string() })?;
            host.delivered(frame.captured);
            shown += 1;
        } else if let Some(win) = window.as_mut() {
            win.update();
        }
        if let Some(win) = window.as_mut() {
            if !win.is_open() || win.is_key_down(Key::Escape) || win.is_key_down(Key::Q) {
                host.request_stop();
                return Ok(());
            }
            for key in win.get_keys_pressed(KeyRepeat::Yes) {
                if matches!(key, Key::H | Key::F1) {
                    help = !help;
                    continue;
                }
                match (host.control(), &start) {
                    (Some(hub), Some(start)) => {
                        let Some(change) = key_change(key, &hub.values(), start, hub.presets()) else { continue };
                        let said = match hub.apply(&change) {
                            Ok(_) => change.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", "),
                            Err(e) => e.to_string(),
                        };
                        notice = Some((said, Instant::now()));
                    }
                    // Without live control the window still switches its own view.
                    _ => {
                        view = match key {
                            Key::I => View::Input,
                            Key::O => View::Output,
                            Key::S => View::SideBySide,
                            Key::P => View::Pose,
                            _ => view,
                        }
                    }
                }
            }
        }
        if last_tick.elapsed() >= Duration::from_millis(200) {
            let (since, count) = shown_since;
            if since.elapsed() >= Duration::from_secs(1) {
                fps = (shown - count) as f64 / since.elapsed().as_secs_f64();
                shown_since = (Instant::now(), shown);
            }
            if let Some(win) = window.as_mut() {
                let latency = host.latency_p50_ms().map_or("-".into(), |l| format!("{l:.0} ms"));
                let said = match &notice {
                    Some((text, at)) if at.elapsed() < NOTICE => text.clone(),
                    _ => "H keys, Esc quit".into(),
                };
                win.set_title(&format!("latentcam — {} — {fps:.1} fps, latency {latency} — {said}", view_name(view)));
            }
            host.tick();
            last_tick = Instant::now();
        }
        std::thread::sleep(FRAME_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> LiveValues {
        LiveValues::sample()
    }

    fn change(key: Key, now: &LiveValues) -> Option<Vec<(String, Value)>> {
        key_change(key, now, &values(), &["a fox".to_string()])
    }

    #[test]
    fn keys_ask_for_changes_within_range() {
        let v = values();
        assert_eq!(change(Key::Up, &v), Some(vec![("strength".into(), json!(0.55))]));
        assert_eq!(
            change(Key::PageDown, &LiveValues { steps: 1, ..v.clone() }),
            Some(vec![("steps".into(), json!(1))])
        );
        assert_eq!(change(Key::N, &v), Some(vec![("seed".into(), json!(8))]));
        assert_eq!(change(Key::Key1, &v), Some(vec![("prompt".into(), json!("a fox"))]));
        assert_eq!(change(Key::Key2, &v), None, "no second preset");
        assert_eq!(change(Key::T, &v), Some(vec![("similarity-threshold".into(), json!(0.0))]));
        assert_eq!(change(Key::RightBracket, &v), None, "no ControlNet scale without [pose]");
        assert_eq!(change(Key::F, &v), Some(vec![("feedback".into(), json!(0.2))]));
        assert_eq!(change(Key::S, &v), Some(vec![("view".into(), json!("side-by-side"))]));
        let strong = LiveValues { strength: 1.0, ..v.clone() };
        assert_eq!(change(Key::Up, &strong), Some(vec![("strength".into(), json!(1.0))]), "clamped");
        // R: every value back to the start, except the view.
        let reset = change(Key::R, &LiveValues { seed: 99, ..v }).unwrap();
        assert!(reset.contains(&("seed".into(), json!(7))) && !reset.iter().any(|(k, _)| k == "view"));
    }
}
