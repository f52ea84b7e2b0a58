//! The pose stage ([`PoseAnnotator`], which lives with the pose code below the pipeline) as the preprocess
//! thread's [`Annotator`].

use std::time::Duration;

use super::Annotator;
use crate::control::LiveValues;
use crate::error::Result;
use crate::frame::Frame;
use crate::pose::stage::PoseAnnotator;

impl Annotator for PoseAnnotator {
    fn stage(&self) -> &'static str {
        "pose"
    }

    fn annotate(&mut self, frame: &mut Frame) -> Result<()> {
        self.annotate_frame(frame)
    }

    fn last_stage_times(&self) -> Vec<(&'static str, Duration)> {
        self.stage_times()
    }

    fn control(&mut self, values: &LiveValues) {
        self.set_smoothing(values.smoothing(self.smoothing()));
    }
}
