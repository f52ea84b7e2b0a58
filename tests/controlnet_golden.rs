//! Pose-guided generation against diffusers (scripts/golden/controlnet.py, scripts/golden/sdxl_controlnet.py):
//! StableDiffusion(XL)ControlNetPipeline (txt2img) and StableDiffusion(XL)ControlNetImg2ImgPipeline with the LCM
//! scheduler on the tiny ControlNet/UNet pairs (SD1.5 and SDXL, whose ControlNet takes text_embeds and
//! time_ids too), the same noise, through the frame path latentcam runs (8-bit in, 8-bit out).

mod common;

use latentcam::diffusion::frame_path::Control;
use latentcam::diffusion::noise::NoiseBank;
use latentcam::diffusion::{BatchMode, Diffusion, FramePath, Inputs, Params};
use latentcam::frame::Conditioning;
use latentcam::imaging;
use latentcam::model::ModelFolder;
use ndarray::{Array4, Array5, Axis};
use ndarray_npy::read_npy;
use serde_json::Value;
use std::sync::Arc;

#[test]
fn pose_guided_generation_matches_diffusers() {
    check_golden("controlnet");
}

#[test]
fn sdxl_pose_guided_generation_matches_diffusers() {
    check_golden("sdxl_controlnet");
}

fn check_golden(golden: &str) {
    let dir = common::golden(golden);
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let runtime = common::runtime();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let txt2img = case["mode"] == "txt2img";
        let folder = ModelFolder::open(&common::model_dir(case["model"].as_str().unwrap())).unwrap();
        let diffusion = Diffusion::load_with_controlnet(&runtime, &folder).unwrap();
        let mut params = Params::defaults_for(&folder);
        params.prompt = case["prompt"].as_str().unwrap().into();
        params.guidance = case["guidance"].as_f64().unwrap();
        params.steps = case["steps"].as_u64().unwrap() as usize;
        // txt2img runs the whole LCM schedule (strength 1).
        params.strength = case["strength"].as_f64().unwrap_or(1.0);
        let (w, h) = (case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32);
        let control = imaging::load_rgb(&dir.join(case["control"].as_str().unwrap())).unwrap();
        assert_eq!(control.dimensions(), (w, h), "{name}: conditioning image size");
        let noise: Array5<f32> = read_npy(dir.join(format!("{name}_noise.npy"))).unwrap();
        let noise = NoiseBank::from_tensors(noise.axis_iter(Axis(0)).map(|n| n.to_owned()).collect());
        let scale = case["controlnet_scale"].as_f64().unwrap() as f32;
        let mut path = FramePath::with_control(
            &runtime,
            diffusion,
            &params,
            (w, h),
            Control { txt2img, scale },
            BatchMode::Single,
            Some(noise),
        )
        .unwrap();
        let run: Vec<u32> =
            case["timesteps_run"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        assert_eq!(path.prepared().plan.timesteps(), run, "{name}: timesteps");

        let input = (!txt2img).then(|| imaging::load_rgb(&dir.join(format!("{name}_input.png"))).unwrap());
        let mut ours = Vec::new();
        let conditioning = Conditioning::skeleton(Arc::new(control));
        let image = input.as_ref().map(|i| i.as_raw().as_slice());
        path.push(Inputs { image, conditioning: &conditioning }, |o| ours = o.to_vec()).unwrap();
        let want: Array4<f32> = read_npy(dir.join(format!("{name}_output.npy"))).unwrap();
        let theirs = imaging::from_tensor(want.view());
        assert_eq!(ours.len(), theirs.as_raw().len(), "{name}: output size");
        let err = ours.iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        eprintln!("{name}: 8-bit |Δ| {err} vs diffusers");
        assert!(err <= 1, "{name}: the 8-bit output differs from diffusers by {err} levels");
    }
}

#[test]
fn the_pose_changes_the_output_and_an_unchanged_pose_does_not() {
    for model in ["tiny-sd15-lcm-lora-controlnet", "tiny-sdxl-controlnet"] {
        pose_change_case(model);
    }
}

fn pose_change_case(model: &str) {
    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir(model)).unwrap();
    let diffusion = Diffusion::load_with_controlnet(&runtime, &folder).unwrap();
    let mut params = Params::defaults_for(&folder);
    params.prompt = "a dancer".into();
    params.strength = 1.0;
    let (w, h) = (64u32, 64u32);
    let mut path = FramePath::with_control(
        &runtime,
        diffusion,
        &params,
        (w, h),
        Control { txt2img: true, scale: 2.0 },
        BatchMode::Single,
        None,
    )
    .unwrap();
    // A limb (a bright bar, as the skeleton renderer draws them) at two places.
    let pose = |x0: u32| {
        image::RgbImage::from_fn(w, h, |x, y| {
            if x.abs_diff(x0) < 6 && y > 8 && y < 56 { image::Rgb([255, 170, 0]) } else { image::Rgb([0, 0, 0]) }
        })
    };
    let mut run = |control: &image::RgbImage| {
        let mut out = Vec::new();
        let conditioning = Conditioning::skeleton(Arc::new(control.clone()));
        path.push(Inputs { image: None, conditioning: &conditioning }, |o| out = o.to_vec()).unwrap();
        out
    };
    let (a, a_again, b) = (run(&pose(16)), run(&pose(16)), run(&pose(48)));
    assert_eq!(a, a_again, "the same pose gives the same picture");
    let changed = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    let largest = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    eprintln!("moved limb: {changed} of {} values changed, by up to {largest} levels", a.len());
    assert!(
        changed > a.len() / 20 && largest >= 2,
        "a moved limb changes the picture ({changed} of {} values, up to {largest} levels)",
        a.len()
    );
}

#[test]
fn a_pose_guided_stream_batch_gives_each_frame_its_unbatched_output() {
    for model in ["tiny-sd15-lcm-lora-controlnet", "tiny-sdxl-controlnet"] {
        pose_batch_case(model);
    }
}

fn pose_batch_case(model: &str) {
    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir(model)).unwrap();
    let (w, h) = (64u32, 64u32);
    let pose = |x0: u32| {
        image::RgbImage::from_fn(w, h, |x, y| {
            if x.abs_diff(x0) < 6 && y > 8 && y < 56 { image::Rgb([255, 170, 0]) } else { image::Rgb([0, 0, 0]) }
        })
    };
    let frame = |i: u32| image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 4 + i * 9) as u8, (y * 4) as u8, 90]));
    // A frame batch (1 step) and a denoising batch (2 steps: each item another frame at another step, its
    // skeleton carried along with it). (Giving every item the newest skeleton instead moves img2img frames by 4-8
    // levels, which the check catches; the tiny model's txt2img second step hardly reads its skeleton: 1 level.)
    for (steps, mode) in [(1, BatchMode::Frames(3)), (2, BatchMode::Denoising(2))] {
        for txt2img in [true, false] {
            let mut params = Params::defaults_for(&folder);
            params.prompt = "a dancer".into();
            params.steps = steps;
            params.strength = if txt2img { 1.0 } else { 0.6 };
            let run = |mode: BatchMode| {
                let diffusion = Diffusion::load_with_controlnet(&runtime, &folder).unwrap();
                let control = Control { txt2img, scale: 1.5 };
                let mut path =
                    FramePath::with_control(&runtime, diffusion, &params, (w, h), control, mode, None).unwrap();
                path.warm_up().unwrap();
                let mut out = Vec::new();
                for i in 0..5 {
                    let input = frame(i);
                    let input = (!txt2img).then_some(input.as_raw().as_slice());
                    let conditioning = Conditioning::skeleton(Arc::new(pose(12 + i * 8)));
                    path.push(Inputs { image: input, conditioning: &conditioning }, |o| out.push(o.to_vec())).unwrap();
                }
                path.finish(|o| out.push(o.to_vec())).unwrap();
                out
            };
            let (alone, batched) = (run(BatchMode::Single), run(mode));
            assert_eq!(batched.len(), 5, "{mode:?}: every frame comes out");
            for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
                let d = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
                assert!(d <= 1, "{mode:?}, txt2img {txt2img}, frame {i}: batched differs from unbatched by {d} levels");
            }
            assert_ne!(alone[0], alone[1], "each frame follows its own skeleton (the check is not vacuous)");
        }
    }
}
