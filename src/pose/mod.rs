//! Pose for ControlNet-OpenPose: estimators (behind [`PoseEstimator`]), smoothing over time, and the canonical
//! OpenPose skeleton renderer. Everything speaks OpenPose-18 keypoints in frame pixels.

pub mod dwpose;
pub mod manifest;
pub mod movenet;
pub mod render;
pub mod simcc;
pub mod smooth;
pub mod stage;

use std::path::PathBuf;

use self::smooth::SmoothingSettings;

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

/// `[pose]`, checked (by [`crate::config`], which re-exports it): where the pose model is, how the skeleton
/// guides the model, the smoothing.
#[derive(Clone, Debug, PartialEq)]
pub struct PoseSpec {
    /// A pose model folder (`pose.toml`: DWPose or MoveNet) or a MoveNet `.onnx` file / folder holding one.
    pub model: PathBuf,
    /// A character from the pose alone (fixed noise, no VAE encode) instead of img2img guided by the pose.
    pub txt2img: bool,
    /// ControlNet conditioning scale, 0 to 2.
    pub controlnet_scale: f32,
    /// Keypoints below this confidence are missing.
    pub threshold: f32,
    pub smoothing: SmoothingSettings,
}

pub(crate) const COCO_LEFT_SHOULDER: usize = 5;
pub(crate) const COCO_RIGHT_SHOULDER: usize = 6;
/// OpenPose-18 index of the neck, the one point COCO lacks.
pub(crate) const OPENPOSE_NECK: usize = 1;
/// For each OpenPose-18 point, the COCO-17 point it is (the neck's entry is unused: it is derived).
pub(crate) const OPENPOSE_FROM_COCO: [usize; 18] =
    [0, usize::MAX, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3];

/// One person from COCO-17 body keypoints (`point(i)`: COCO point i in frame pixels, all zero when missing) as
/// OpenPose-18: the same points reordered, and the neck, the midpoint of the shoulders when both are there,
/// scored the smaller of their scores.
pub fn openpose_from_coco(point: impl Fn(usize) -> Keypoint) -> Person {
    let mut person = Person::default();
    for (i, out) in person.keypoints.iter_mut().enumerate() {
        if i != OPENPOSE_NECK {
            *out = point(OPENPOSE_FROM_COCO[i]);
        }
    }
    let (r, l) = (point(COCO_RIGHT_SHOULDER), point(COCO_LEFT_SHOULDER));
    if r.score > 0.0 && l.score > 0.0 {
        person.keypoints[OPENPOSE_NECK] =
            Keypoint { x: (r.x + l.x) / 2.0, y: (r.y + l.y) / 2.0, score: r.score.min(l.score) };
    }
    person
}
