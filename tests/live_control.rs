//! Live control in the diffusion thread: changes apply from the next frame (a new prompt from the first frame
//! after its embeddings are ready), a change finishes the stream batch first, prompt transitions blend over the
//! stated frames, latent feedback is the stated blend, and the ControlNet scale changes live.

mod common;

use std::time::{Duration, Instant};

use image::RgbImage;
use latentcam::config::{Engine, WorkingSize};
use latentcam::control::LiveValues;
use latentcam::diffusion::{BatchMode, Diffusion, FramePath, Inputs, Params};
use latentcam::frame::Frame;
use latentcam::model::ModelFolder;
use latentcam::pipeline::{DiffusionProcessor, Processor};
use latentcam::similarity::SimilaritySettings;

const SIZE: (u32, u32) = (64, 64);
const MODEL: &str = "tiny-sd15-lcm-lora";

/// A gradient that moves with `i` (as tests/frame_path.rs).
fn frame(i: usize) -> RgbImage {
    RgbImage::from_fn(SIZE.0, SIZE.1, |x, y| {
        let t = i as u32 * 7;
        image::Rgb([((x * 4 + t) % 256) as u8, ((y * 4 + 2 * t) % 256) as u8, ((x + y + t) % 256) as u8])
    })
}

fn params(folder: &ModelFolder, prompt: &str) -> Params {
    let mut p = Params::defaults_for(folder);
    p.prompt = prompt.into();
    p.strength = 0.6;
    p.seed = 7;
    p
}

fn processor(prompt: &str, live: Option<u32>) -> (DiffusionProcessor, LiveValues) {
    processor_of(MODEL, prompt, live)
}

fn processor_of(model: &str, prompt: &str, live: Option<u32>) -> (DiffusionProcessor, LiveValues) {
    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir(model)).unwrap();
    let diffusion = Diffusion::load(&runtime, &folder).unwrap();
    let params = params(&folder, prompt);
    let engine = Engine {
        batch: BatchMode::Single,
        cuda_graph: false,
        similarity: SimilaritySettings::DISABLED,
        tensorrt_fp16: Default::default(),
    };
    let size = WorkingSize::new(SIZE.0, SIZE.1, 16).unwrap();
    let mut p = DiffusionProcessor::new(&runtime, diffusion, &params, size, &engine, None).unwrap();
    let values = LiveValues::new(&params, live.unwrap_or(0), 0.0, 0.0, None, None);
    if live.is_some() {
        p.enable_live(&values).unwrap();
    }
    (p, values)
}

fn push(p: &mut DiffusionProcessor, input: &RgbImage) -> RgbImage {
    let mut ready = Vec::new();
    p.push(&Frame::new(input.clone()), &mut ready).unwrap();
    assert_eq!(ready.len(), 1);
    ready.pop().unwrap()
}

fn mean_abs(a: &RgbImage, b: &RgbImage) -> f64 {
    let sum: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    sum as f64 / a.as_raw().len() as f64
}

fn max_level(a: &RgbImage, b: &RgbImage) -> u8 {
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

/// Push `input` until the output differs from `before` (the new prompt's embeddings arrive from the text
/// encoder's thread); returns the outputs from the first changed one on, `count` of them.
fn outputs_after_change(
    p: &mut DiffusionProcessor,
    input: &RgbImage,
    before: &RgbImage,
    count: usize,
) -> Vec<RgbImage> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = push(p, input);
        if out != *before {
            let mut all = vec![out];
            all.extend((1..count).map(|_| push(p, input)));
            return all;
        }
        assert!(Instant::now() < deadline, "the new prompt never took effect");
        // The encoder runs on its own thread; give it a moment rather than spinning through frames.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_new_prompt_cuts_to_exactly_what_a_fresh_run_makes() {
    let input = frame(0);
    let (mut live, values) = processor("a watercolor fox", Some(0));
    let before = push(&mut live, &input);
    let mut changed = values.clone();
    changed.prompt = "a bronze statue".into();
    live.control(&changed, &mut Vec::new()).unwrap();
    let after = outputs_after_change(&mut live, &input, &before, 2);
    let (mut fresh, _) = processor("a bronze statue", None);
    let expected = push(&mut fresh, &input);
    assert!(max_level(&after[0], &expected) <= 1, "transition-frames 0: the first changed frame is the new prompt's");
    assert_eq!(after[0], after[1], "and it stays there");
}

#[test]
fn a_prompt_transition_blends_over_the_stated_frames() {
    // SDXL blends its pooled embedding with the hidden states.
    for model in [MODEL, "tiny-sdxl-turbo"] {
        transition_case(model);
    }
}

fn transition_case(model: &str) {
    const FRAMES: u32 = 4;
    let input = frame(0);
    let (mut live, values) = processor_of(model, "a watercolor fox", Some(FRAMES));
    let start = push(&mut live, &input);
    let mut changed = values.clone();
    changed.prompt = "a bronze statue".into();
    live.control(&changed, &mut Vec::new()).unwrap();
    let steps = outputs_after_change(&mut live, &input, &start, FRAMES as usize + 2);
    let (mut fresh, _) = processor_of(model, "a bronze statue", None);
    let end = push(&mut fresh, &input);
    // Frame k of the transition binds embeddings k/N of the way: the output walks from the old picture to the
    // new one, reaching it at frame N and staying.
    let to_end: Vec<f64> = steps.iter().map(|o| mean_abs(o, &end)).collect();
    eprintln!("{model}: mean distance to the new prompt's output per frame: {to_end:?}");
    for k in 1..FRAMES as usize {
        assert!(to_end[k] < to_end[k - 1], "{model}: frame {k} is not closer to the target than {}: {to_end:?}", k - 1);
    }
    assert!(mean_abs(&steps[0], &start) > 0.0 && to_end[0] > 0.0, "{model}: the first blended frame is in between");
    let n = FRAMES as usize - 1;
    assert!(max_level(&steps[n], &end) <= 1, "{model}: frame N is the new prompt's output");
    assert!(max_level(&steps[n + 1], &end) <= 1, "{model}: and stays there");
}

#[test]
fn other_values_apply_from_the_next_frame() {
    let input = frame(0);
    let (mut live, values) = processor("a watercolor fox", Some(0));
    push(&mut live, &input);
    let mut changed = values.clone();
    changed.seed = 99;
    changed.strength = 0.8;
    live.control(&changed, &mut Vec::new()).unwrap();
    let next = push(&mut live, &input);

    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir(MODEL)).unwrap();
    let mut p = params(&folder, "a watercolor fox");
    p.seed = 99;
    p.strength = 0.8;
    let diffusion = Diffusion::load(&runtime, &folder).unwrap();
    let mut path = FramePath::new(&runtime, diffusion, &p, SIZE, BatchMode::Single, None).unwrap();
    let mut expected = Vec::new();
    path.push(Inputs::image(input.as_raw()), |o| expected = o.to_vec()).unwrap();
    assert!(max_level(&next, &RgbImage::from_raw(SIZE.0, SIZE.1, expected).unwrap()) <= 1);
}

#[test]
fn a_change_finishes_the_stream_batch_first() {
    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir(MODEL)).unwrap();
    let params = params(&folder, "a watercolor fox");
    let engine = Engine {
        batch: BatchMode::Frames(3),
        cuda_graph: false,
        similarity: SimilaritySettings::DISABLED,
        tensorrt_fp16: Default::default(),
    };
    let size = WorkingSize::new(SIZE.0, SIZE.1, 16).unwrap();
    let diffusion = Diffusion::load(&runtime, &folder).unwrap();
    let mut p = DiffusionProcessor::new(&runtime, diffusion, &params, size, &engine, None).unwrap();
    let values = LiveValues::new(&params, 0, 0.0, 0.0, None, None);
    p.enable_live(&values).unwrap();
    let mut ready = Vec::new();
    p.push(&Frame::new(frame(0)), &mut ready).unwrap();
    p.push(&Frame::new(frame(1)), &mut ready).unwrap();
    assert!(ready.is_empty(), "two frames wait in a batch of 3");
    // A value the diffusion thread does not use (the window's view) leaves the batch alone.
    let elsewhere = LiveValues { view: Some(latentcam::config::View::SideBySide), ..values.clone() };
    p.control(&elsewhere, &mut ready).unwrap();
    assert!(ready.is_empty(), "nothing for the diffusion thread: the batch waits");
    let mut changed = elsewhere.clone();
    changed.seed = 3;
    p.control(&changed, &mut ready).unwrap();
    assert_eq!(ready.len(), 2, "the change finished the two waiting frames (made with the old values)");
}

/// Outputs of `frames` through a path with latent feedback `f`.
fn with_feedback(model: &str, f: f32, frames: &[RgbImage]) -> Vec<Vec<u8>> {
    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir(model)).unwrap();
    let diffusion = Diffusion::load(&runtime, &folder).unwrap();
    let params = params(&folder, "a watercolor fox");
    let mut path = FramePath::new(&runtime, diffusion, &params, SIZE, BatchMode::Single, None).unwrap();
    path.reconfigure(&params, f, None).unwrap();
    path.warm_up().unwrap();
    let mut out = Vec::new();
    for frame in frames {
        path.push(Inputs::image(frame.as_raw()), |o| out.push(o.to_vec())).unwrap();
    }
    out
}

#[test]
fn latent_feedback_blends_the_last_output_latent_into_the_next_input_latent() {
    for model in [MODEL, "tiny-sdxl-lcm-lora"] {
        feedback_case(model);
    }
}

fn feedback_case(model: &str) {
    use latentcam::diffusion::noise::NoiseBank;
    use latentcam::imaging;
    const F: f32 = 0.4;
    let frames: Vec<RgbImage> = (0..3).map(|i| frame(i * 3)).collect();
    let fed = with_feedback(model, F, &frames);
    let plain = with_feedback(model, 0.0, &frames);
    assert_eq!(fed[0], plain[0], "the first frame has no earlier output: unchanged (the warm-up's is not used)");
    assert_ne!(fed[1], plain[1], "later frames change");

    // The same on the host, step by step: z' = z + F·(d_prev - z), d_prev the last frame's final latent.
    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir(model)).unwrap();
    let mut host = Diffusion::load(&runtime, &folder).unwrap();
    let prepared = host.prepare(&params(&folder, "a watercolor fox")).unwrap();
    let shape = (1, folder.latent_channels, SIZE.1 as usize / 8, SIZE.0 as usize / 8);
    let noise = NoiseBank::new(7, shape, prepared.plan.steps.len());
    let mut last: Option<ndarray::Array4<f32>> = None;
    for (i, input) in frames.iter().enumerate() {
        let z = host.encode(imaging::to_tensor(input).view()).unwrap();
        let z = match &last {
            Some(d) => &z + &((d - &z) * F),
            None => z,
        };
        let d = host.denoise(&prepared, z.view(), &noise).unwrap();
        let expected = imaging::from_tensor(host.decode(d.view()).unwrap().view());
        let ours = RgbImage::from_raw(SIZE.0, SIZE.1, fed[i].clone()).unwrap();
        assert!(
            max_level(&ours, &expected) <= 1,
            "{model} frame {i}: {} levels from the host computation",
            max_level(&ours, &expected)
        );
        last = Some(d);
    }
}

#[test]
fn a_controlnet_scale_change_applies_from_the_next_frame() {
    use latentcam::diffusion::frame_path::Control;
    use latentcam::frame::Conditioning;
    use latentcam::pose::smooth::SmoothingSettings;
    use std::sync::Arc;

    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir("tiny-sd15-lcm-lora-controlnet")).unwrap();
    let mut params = params(&folder, "a dancer");
    params.strength = 1.0;
    let engine = Engine {
        batch: BatchMode::Single,
        cuda_graph: false,
        similarity: SimilaritySettings::DISABLED,
        tensorrt_fp16: Default::default(),
    };
    let size = WorkingSize::new(SIZE.0, SIZE.1, 16).unwrap();
    let skeleton = Arc::new(RgbImage::from_fn(SIZE.0, SIZE.1, |x, y| {
        if x.abs_diff(30) < 6 && y > 8 && y < 56 { image::Rgb([255, 170, 0]) } else { image::Rgb([0, 0, 0]) }
    }));
    let frame = Frame {
        image: Arc::new(frame(0)),
        pts: None,
        duration: None,
        sequence: 0,
        captured: Instant::now(),
        conditioning: Conditioning::skeleton(skeleton),
    };
    let make = |scale: f32| {
        let diffusion = Diffusion::load_with_controlnet(&runtime, &folder).unwrap();
        let control = Control { txt2img: true, scale };
        DiffusionProcessor::new(&runtime, diffusion, &params, size, &engine, Some(control)).unwrap()
    };
    let run = |p: &mut DiffusionProcessor| {
        let mut ready = Vec::new();
        p.push(&frame, &mut ready).unwrap();
        ready.pop().unwrap()
    };
    let mut live = make(1.0);
    let values = LiveValues::new(&params, 0, 0.0, 0.0, Some((1.0, SmoothingSettings::default())), None);
    live.enable_live(&values).unwrap();
    let before = run(&mut live);
    let changed = LiveValues { controlnet_scale: Some(0.0), ..values };
    live.control(&changed, &mut Vec::new()).unwrap();
    let after = run(&mut live);
    let expected = run(&mut make(0.0));
    assert_ne!(before, expected, "the scale matters (the check is not vacuous)");
    assert!(max_level(&after, &expected) <= 1, "the next frame runs at the new scale");
}

#[test]
fn a_denoising_batch_follows_the_step_count_through_live_changes() {
    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir(MODEL)).unwrap();
    let mut params = params(&folder, "a watercolor fox");
    params.steps = 2;
    let engine = Engine {
        batch: BatchMode::Denoising(2),
        cuda_graph: false,
        similarity: SimilaritySettings::DISABLED,
        tensorrt_fp16: Default::default(),
    };
    let size = WorkingSize::new(SIZE.0, SIZE.1, 16).unwrap();
    let diffusion = Diffusion::load(&runtime, &folder).unwrap();
    let mut p = DiffusionProcessor::new(&runtime, diffusion, &params, size, &engine, None).unwrap();
    let values = LiveValues::new(&params, 0, 0.0, 0.0, None, None);
    p.enable_live(&values).unwrap();
    let mut out = Vec::new();
    let mut pushed = 0;
    let mut push = |p: &mut DiffusionProcessor, out: &mut Vec<RgbImage>| {
        p.push(&Frame::new(frame(pushed)), out).unwrap();
        pushed += 1;
    };
    for _ in 0..3 {
        push(&mut p, &mut out);
    }
    assert_eq!((out.len(), p.lag_frames()), (2, 1), "a denoising batch of 2: one frame of lag");
    // Strength 0 has no step: one frame at a time (the VAE only), and back.
    p.control(&LiveValues { strength: 0.0, ..values.clone() }, &mut out).unwrap();
    assert_eq!(out.len(), 3, "the change finished the waiting frame");
    assert_eq!(p.lag_frames(), 0);
    push(&mut p, &mut out);
    assert_eq!(out.len(), 4);
    p.control(&values, &mut out).unwrap();
    assert_eq!(p.lag_frames(), 1, "2 steps again: the denoising batch again");
    push(&mut p, &mut out);
    push(&mut p, &mut out);
    p.finish(&mut out).unwrap();
    assert_eq!(out.len(), pushed, "every frame came out once");
}

#[test]
fn in_a_denoising_batch_feedback_waits_for_the_first_output() {
    let frames: Vec<RgbImage> = (0..4).map(|i| frame(i * 3)).collect();
    let run = |f: f32| {
        let runtime = common::runtime();
        let folder = ModelFolder::open(&common::model_dir(MODEL)).unwrap();
        let diffusion = Diffusion::load(&runtime, &folder).unwrap();
        let mut params = params(&folder, "a watercolor fox");
        params.steps = 2;
        let mut path = FramePath::new(&runtime, diffusion, &params, SIZE, BatchMode::Denoising(2), None).unwrap();
        path.reconfigure(&params, f, None).unwrap();
        path.warm_up().unwrap();
        let mut out = Vec::new();
        for frame in &frames {
            path.push(Inputs::image(frame.as_raw()), |o| out.push(o.to_vec())).unwrap();
        }
        path.finish(|o| out.push(o.to_vec())).unwrap();
        out
    };
    let (plain, fed) = (run(0.0), run(0.4));
    // Frames 0 and 1 entered the batch before frame 0 came out: nothing to blend yet (not the warm-up's output).
    assert_eq!(fed[0], plain[0]);
    assert_eq!(fed[1], plain[1]);
    assert_ne!(fed[2], plain[2], "frame 2 entered after frame 0 came out: blended");
}
