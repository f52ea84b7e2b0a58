//! The OpenPose skeleton renderer against the ControlNet v1.1 original, pixel for pixel: tests/golden/openpose/
//! (cases.json + one PNG per case), made by scripts/golden/openpose_render.py with the Python `draw_bodypose`
//! and OpenCV (4.3.0 and 5.0.0 agree on every case). With LATENTCAM_OPENPOSE_GOLDEN=<dir> the tests read that
//! folder instead (e.g. the script's `--stress` output: thousands of random cases).

mod common;

use std::path::PathBuf;

use image::RgbImage;
use latentcam::pose::render::{draw_bodypose, draw_overlay, overlay, skeleton};
use latentcam::pose::{Keypoint, Person};
use serde_json::Value;

struct Case {
    name: String,
    width: u32,
    height: u32,
    png: String,
    people: Vec<Person>,
}

/// The golden folder: tests/golden/openpose, or $LATENTCAM_OPENPOSE_GOLDEN.
fn dir() -> PathBuf {
    std::env::var_os("LATENTCAM_OPENPOSE_GOLDEN").map_or_else(|| common::golden("openpose"), PathBuf::from)
}

fn cases() -> Vec<Case> {
    let path = dir().join("cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|case| {
            let people = case["people"]
                .as_array()
                .expect("people")
                .iter()
                .map(|person| {
                    let points = person.as_array().expect("a person is 18 keypoints");
                    assert_eq!(points.len(), 18);
                    let mut keypoints = [Keypoint::default(); 18];
                    for (kp, point) in keypoints.iter_mut().zip(points) {
                        // The script writes exact f32 values: f64 -> f32 is lossless.
                        let v: Vec<f32> = point
                            .as_array()
                            .expect("[x, y, score]")
                            .iter()
                            .map(|v| v.as_f64().unwrap() as f32)
                            .collect();
                        *kp = Keypoint { x: v[0], y: v[1], score: v[2] };
                    }
                    Person { keypoints }
                })
                .collect();
            Case {
                name: case["name"].as_str().unwrap().to_owned(),
                width: case["width"].as_u64().unwrap() as u32,
                height: case["height"].as_u64().unwrap() as u32,
                png: case["png"].as_str().unwrap().to_owned(),
                people,
            }
        })
        .collect()
}

fn golden_image(case: &Case) -> RgbImage {
    let path = dir().join(&case.png);
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

/// None when identical; otherwise how many pixels differ and the first one (row-major).
fn compare(got: &RgbImage, want: &RgbImage) -> Option<String> {
    if got.dimensions() != want.dimensions() {
        return Some(format!("size {:?}, golden {:?}", got.dimensions(), want.dimensions()));
    }
    let mut count = 0;
    let mut first = None;
    for (x, y, g) in got.enumerate_pixels() {
        let w = want.get_pixel(x, y);
        if g != w {
            count += 1;
            first.get_or_insert(format!("first at (x {x}, y {y}): got {:?}, golden {:?}", g.0, w.0));
        }
    }
    first.map(|first| format!("{count} differing pixels, {first}"))
}

#[test]
fn every_golden_case_is_pixel_exact() {
    let cases = cases();
    assert!(cases.len() >= 15, "expected at least the 15 committed cases, found {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let want = golden_image(case);
        assert_eq!(want.dimensions(), (case.width, case.height), "{}: golden PNG size", case.name);
        let got = skeleton(case.width, case.height, &case.people);
        if let Some(why) = compare(&got, &want) {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from the Python original:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn draw_bodypose_on_black_is_the_skeleton_and_reuses_the_canvas() {
    let cases = cases();
    let mut canvas = RgbImage::new(1, 1);
    for case in &cases {
        if canvas.dimensions() != (case.width, case.height) {
            canvas = RgbImage::new(case.width, case.height);
        }
        canvas.as_mut().fill(0);
        draw_bodypose(&mut canvas, &case.people);
        assert!(compare(&canvas, &golden_image(case)).is_none(), "{}", case.name);
    }
}

#[test]
fn overlay_matches_the_skeleton_on_it_and_keeps_the_frame_elsewhere() {
    let cases = cases();
    for case in &cases {
        let want = golden_image(case);
        // A frame no skeleton colour can be mistaken for: (1, 2, 3) everywhere.
        let frame = RgbImage::from_pixel(case.width, case.height, image::Rgb([1, 2, 3]));
        let out = overlay(&frame, &case.people);
        let mut in_place = frame.clone();
        draw_overlay(&mut in_place, &case.people);
        assert!(out == in_place, "{}: overlay and draw_overlay differ", case.name);
        for (x, y, px) in out.enumerate_pixels() {
            let skel = want.get_pixel(x, y);
            let expected = if skel.0 == [0, 0, 0] { [1, 2, 3] } else { skel.0 };
            assert_eq!(px.0, expected, "{}: overlay at ({x}, {y})", case.name);
        }
    }
}
