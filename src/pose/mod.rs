//! Pose for ControlNet-OpenPose: estimators (behind [`PoseEstimator`]), smoothing over time, and the canonical
//! OpenPose skeleton renderer. Everything speaks OpenPose-18 keypoints in frame pixels.

pub mod movenet;
pub mod render;
pub mod smooth;
pub mod stage;

/// OpenPose-18 keypoint order (ControlNet's): index → name.
pub const OPENPOSE_18: [&str; 18] = [
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
];

/// One keypoint in frame pixels; `score` 0 means missing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Keypoint {
    pub x: f32,
    pub y: f32,
    pub score: f32,
}

/// One person: 18 keypoints in OpenPose-18 order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Person {
    pub keypoints: [Keypoint; 18],
}

/// A pose estimator: an RGB frame in, the people in it out (OpenPose-18, frame pixels).
pub trait PoseEstimator: Send {
    fn estimate(&mut self, frame: &image::RgbImage) -> crate::error::Result<Vec<Person>>;
}
