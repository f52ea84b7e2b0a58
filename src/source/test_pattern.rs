//! A synthetic source: moving, deterministic frames (frame n is always the same picture), so pipelines run and
//! can be tested anywhere. Live, it delivers frames on a fixed clock like a camera; offline, as fast as they
//! are taken.

use std::f32::consts::TAU;
use std::sync::Arc;
use std::time::Instant;

use image::{Rgb, RgbImage};

use super::Source;
use crate::error::Result;
use crate::frame::{Fps, Frame, FrameFormat};

pub struct TestPattern {
    width: u32,
    height: u32,
    fps: Fps,
    frames: Option<u64>,
    /// Live: frames come on this clock, like a camera's.
    pacer: Option<Pacer>,
    sequence: u64,
}

impl TestPattern {
    pub fn new(width: u32, height: u32, fps: Fps, frames: Option<u64>, live: bool) -> TestPattern {
        TestPattern { width, height, fps, frames, pacer: live.then(|| Pacer::new(fps)), sequence: 0 }
    }

    /// Picture number `n`: a slowly turning colour field, a bouncing ball and a sweeping bar.
    pub fn render(width: u32, height: u32, n: u64) -> RgbImage {
        let t = n as f32 / 30.0;
        let (w, h) = (width as f32, height as f32);
        let radius = 0.18 * w.min(h);
        // Ball centre bounces inside the frame.
        let span_x = (w - 2.0 * radius).max(1.0);
        let span_y = (h - 2.0 * radius).max(1.0);
        let bounce = |p: f32, span: f32| {
            let q = p.rem_euclid(2.0 * span);
            radius + if q > span { 2.0 * span - q } else { q }
        };
        let (cx, cy) = (bounce(t * 0.35 * w, span_x), bounce(t * 0.25 * h, span_y));
        let bar_x = ((t * 0.2).fract()) * w;
        // The colour field is separable (sin(a + b) = sin a cos b + cos a sin b): per-column and per-row tables
        // instead of three sin() per pixel keep a 640x480 frame at a few milliseconds.
        let phase = t * 0.5;
        let cols: Vec<[f32; 3]> = (0..width)
            .map(|x| {
                let a = TAU * x as f32 / w;
                [0.5 + 0.5 * (a + phase).sin(), (a - phase).sin(), (a - phase).cos()]
            })
            .collect();
        let rows: Vec<[f32; 3]> = (0..height)
            .map(|y| {
                let a = TAU * y as f32 / h;
                [0.5 + 0.5 * (a + phase * 1.3).sin(), a.cos(), a.sin()]
            })
            .collect();
        RgbImage::from_fn(width, height, |x, y| {
            let ([r, su, cu], [g, cv, sv]) = (cols[x as usize], rows[y as usize]);
            let (mut r, mut g, mut b) = (r, g, 0.5 + 0.5 * (su * cv + cu * sv));
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            if dx * dx + dy * dy < radius * radius {
                let shade = 1.0 - (dx * dx + dy * dy).sqrt() / radius * 0.5;
                (r, g, b) = (shade, 0.85 * shade, 0.2 * shade);
            }
            if (x as f32 - bar_x).abs() < w * 0.02 {
                (r, g, b) = (0.95, 0.95, 0.95);
            }
            Rgb([(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8])
        })
    }
}

impl Source for TestPattern {
    fn format(&self) -> FrameFormat {
        FrameFormat { width: self.width, height: self.height, fps: Some(self.fps) }
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.frames.is_some_and(|limit| self.sequence >= limit) {
            return Ok(None);
        }
        let n = self.sequence;
        if let Some(pacer) = &mut self.pacer {
            pacer.wait_for(n);
        }
        self.sequence += 1;
        Ok(Some(Frame {
            image: Arc::new(Self::render(self.width, self.height, n)),
            pts: Some(self.fps.frame_start(n)),
            duration: Some(self.fps.frame_duration()),
            sequence: n,
            captured: Instant::now(),
            conditioning: Default::default(),
        }))
    }

    fn describe(&self) -> String {
        format!("test pattern {}x{} at {} fps", self.width, self.height, self.fps)
    }

    fn total_frames(&self) -> Option<u64> {
        self.frames
    }
}

/// A live source's clock: frame n is due at start + n frame intervals. After a stall of more than two frames
/// the clock restarts rather than delivering a burst.
pub struct Pacer {
    fps: Fps,
    start: Option<Instant>,
}

impl Pacer {
    pub fn new(fps: Fps) -> Pacer {
        Pacer { fps, start: None }
    }

    /// Sleep until frame `n` is due.
    pub fn wait_for(&mut self, n: u64) {
        let now = Instant::now();
        let offset = self.fps.frame_start(n);
        let start = *self.start.get_or_insert(now);
        match start.checked_add(offset) {
            Some(due) if due > now => std::thread::sleep(due - now),
            Some(due) if now - due <= self.fps.frame_duration() * 2 => {}
            // Late by more than two frames (or a clock that cannot be represented): restart it at now.
            _ => self.start = now.checked_sub(offset).or(Some(now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deterministic_and_moving() {
        assert_eq!(TestPattern::render(64, 48, 5), TestPattern::render(64, 48, 5));
        assert_ne!(TestPattern::render(64, 48, 5), TestPattern::render(64, 48, 6));
    }

    #[test]
    fn offline_counts_frames_and_timestamps() {
        let mut src = TestPattern::new(32, 16, Fps::new(25, 1).unwrap(), Some(3), false);
        let frames: Vec<Frame> = std::iter::from_fn(|| src.next_frame().unwrap()).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2].pts, Some(Duration::from_millis(80)));
        assert_eq!(frames[1].image.dimensions(), (32, 16));
    }
}
