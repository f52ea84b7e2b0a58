//! The pose stage of a pose-guided run: estimate, smooth over time, draw the canonical skeleton at the working
//! size and attach it to the frame as the ControlNet's conditioning image. It runs in the preprocess thread and
//! owns the pose model's session, so it overlaps with the diffusion of the frame before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::movenet::MoveNet;
use super::render;
use super::smooth::{PoseSmoother, SmoothingSettings};
use super::{Person, PoseEstimator, PoseSpec};
use crate::error::Result;
use crate::frame::Frame;
use crate::infer::Runtime;

/// Load the pose model `spec` names: DWPose (several people) or MoveNet SinglePose, by the folder's `pose.toml`
/// or the models' inputs and outputs ([`super::manifest::resolve`]).
pub fn load_estimator(runtime: &Runtime, spec: &PoseSpec) -> Result<Box<dyn PoseEstimator>> {
    Ok(match super::manifest::resolve(&spec.model)? {
        super::manifest::PoseModel::MoveNet { model } => {
            Box::new(MoveNet::load(runtime, &model)?.with_threshold(spec.threshold)?)
        }
        super::manifest::PoseModel::DwPose { detector, pose } => {
            Box::new(super::dwpose::DwPose::load(runtime, &detector, &pose)?.with_threshold(spec.threshold)?)
        }
    })
}

pub struct PoseAnnotator {
    estimator: Box<dyn PoseEstimator>,
    smoother: PoseSmoother,
    /// Frames without a timestamp are timed from the first one's capture.
    first_capture: Option<Instant>,
    /// The people of the last frame (smoothed), for views and JSON.
    last: Vec<Person>,
    /// The last frame's estimate, smoothing and drawing times.
    times: [Duration; 3],
}

impl PoseAnnotator {
    pub fn new(runtime: &Runtime, spec: &PoseSpec) -> Result<PoseAnnotator> {
        Ok(PoseAnnotator {
            estimator: load_estimator(runtime, spec)?,
            smoother: PoseSmoother::new(spec.smoothing),
            first_capture: None,
            last: Vec::new(),
            times: [Duration::ZERO; 3],
        })
    }

    pub fn last_people(&self) -> &[Person] {
        &self.last
    }

    /// Estimate and smooth the people in `frame` (time `t_s` in seconds).
    pub fn people(&mut self, image: &image::RgbImage, t_s: f64) -> Result<&[Person]> {
        let started = Instant::now();
        let raw = self.estimator.estimate(image)?;
        self.times[0] = started.elapsed();
        let started = Instant::now();
        self.last = self.smoother.smooth(t_s, &raw);
        self.times[1] = started.elapsed();
        Ok(&self.last)
    }
}

// The preprocess thread's `pipeline::Annotator` is implemented in `pipeline`, with these.
impl PoseAnnotator {
    /// Estimate and smooth `frame`'s people and attach their skeleton, drawn at the frame's size, as its
    /// conditioning.
    pub fn annotate_frame(&mut self, frame: &mut Frame) -> Result<()> {
        // The smoothing runs on stream time: the frame's timestamp, else time since the first capture.
        let t_s = match frame.pts {
            Some(pts) => pts.as_secs_f64(),
            None => frame.captured.duration_since(*self.first_capture.get_or_insert(frame.captured)).as_secs_f64(),
        };
        self.people(&frame.image, t_s)?;
        let (width, height) = frame.image.dimensions();
        let started = Instant::now();
        frame.conditioning.skeleton = Some(Arc::new(render::skeleton(width, height, &self.last)));
        self.times[2] = started.elapsed();
        Ok(())
    }

    /// The last frame's estimate, smoothing and drawing times, for the statistics.
    pub fn stage_times(&self) -> Vec<(&'static str, Duration)> {
        vec![("pose estimate", self.times[0]), ("pose smoothing", self.times[1]), ("pose render", self.times[2])]
    }

    /// The keypoint smoothing in use.
    pub fn smoothing(&self) -> SmoothingSettings {
        *self.smoother.settings()
    }

    /// Smooth from the next frame on with `settings` (a live change); the same settings change nothing.
    pub fn set_smoothing(&mut self, settings: SmoothingSettings) {
        if settings != *self.smoother.settings() {
            self.smoother.set_settings(settings);
        }
    }
}
