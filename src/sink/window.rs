//! The preview window (minifb), run on the main thread. It shows the newest processed frame from a slot and
//! never makes the pipeline wait. Keys: I input, O output, S side by side, Esc or Q quit. The title shows the
//! output rate and the capture-to-display latency. OBS can capture it as a window.

use std::time::{Duration, Instant};

use minifb::{Key, KeyRepeat, ScaleMode, Window, WindowOptions};

use super::{LatestSlot, WindowHost, compose, view_size};
use crate::config::View;
use crate::error::{Error, Result};

const FRAME_INTERVAL: Duration = Duration::from_millis(16);

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
    loop {
        if host.pipeline_done() {
            return Ok(());
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
            for key in win.get_keys_pressed(KeyRepeat::No) {
                view = match key {
                    Key::I => View::Input,
                    Key::O => View::Output,
                    Key::S => View::SideBySide,
                    Key::P => View::Pose,
                    _ => view,
                };
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
                win.set_title(&format!(
                    "latentcam — {} — {fps:.1} fps, latency {latency} — I input, O output, S side by side, P pose, Esc quit",
                    view_name(view)
                ));
            }
            host.tick();
            last_tick = Instant::now();
        }
        std::thread::sleep(FRAME_INTERVAL);
    }
}
