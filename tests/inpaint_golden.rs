//! Latent blending with a mask against diffusers' inpainting pipelines with a 4-channel UNet
//! (StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline; tests/golden/inpaint, made by
//! scripts/golden/inpaint.py): the mask binarised at one half and taken to latent size by nearest sampling, the
//! kept latents re-noised with the frame's first noise to each next step's level and clean after the last step,
//! strength 1 from the noise alone. And the 9-channel inpainting UNet against StableDiffusionInpaintPipeline's
//! 9-channel branch (tests/golden/inpaint9, scripts/golden/inpaint9.py): the UNet reads the latents, the mask and
//! the masked image's latents, nothing is blended back. Through the frame path latentcam runs, in every batch
//! mode.

mod common;

use std::sync::Arc;

use latentcam::diffusion::noise::NoiseBank;
use latentcam::diffusion::{BatchMode, Diffusion, FramePath, Inputs, Params};
use latentcam::frame::Conditioning;
use latentcam::imaging;
use latentcam::model::ModelFolder;
use ndarray::{Array4, Array5, Axis};
use ndarray_npy::read_npy;
use serde_json::Value;

#[test]
fn masked_runs_match_diffusers_inpainting_with_a_4_channel_unet() {
    let checked = check_cases("inpaint");
    assert!(checked >= 10, "only {checked} inpainting cases");
}

#[test]
fn the_9_channel_inpainting_unet_matches_diffusers() {
    let checked = check_cases("inpaint9");
    assert!(checked >= 5, "only {checked} 9-channel cases");
}

/// Every case of a golden folder through the frame path against diffusers' output (8-bit, at most 1 level).
fn check_cases(folder_name: &str) -> usize {
    let dir = common::golden(folder_name);
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let runtime = common::runtime();
    let mut checked = 0;
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let folder = ModelFolder::open(&common::model_dir(case["model"].as_str().unwrap())).unwrap();
        let mut params = Params::defaults_for(&folder);
        params.prompt = case["prompt"].as_str().unwrap().into();
        params.negative_prompt = case["negative_prompt"].as_str().unwrap_or("").into();
        params.guidance = case["guidance"].as_f64().unwrap();
        params.steps = case["steps"].as_u64().unwrap() as usize;
        params.strength = case["strength"].as_f64().unwrap();
        let input = imaging::load_rgb(&dir.join(format!("{name}_input.png"))).unwrap();
        let mask = Arc::new(image::open(dir.join(format!("{name}_mask.png"))).unwrap().to_luma8());
        let noise: Array5<f32> = read_npy(dir.join(format!("{name}_noise.npy"))).unwrap();
        let noise = NoiseBank::from_tensors(noise.axis_iter(Axis(0)).map(|n| n.to_owned()).collect());
        let want: Array4<f32> = read_npy(dir.join(format!("{name}_output.npy"))).unwrap();
        let theirs = imaging::from_tensor(want.view());
        let diffusion = Diffusion::load(&runtime, &folder).unwrap();
        let size = input.dimensions();
        let mut path =
            FramePath::with_mask(&runtime, diffusion, &params, size, BatchMode::Single, Some(noise)).unwrap();
        let run: Vec<u32> = case
            .get("timesteps_run")
            .unwrap_or(&case["timesteps"])
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(path.prepared().plan.timesteps(), run, "{name}: timesteps");
        let conditioning = Conditioning::mask(mask);
        let mut ours = Vec::new();
        path.push(Inputs { image: Some(input.as_raw()), conditioning: &conditioning }, |o| ours = o.to_vec()).unwrap();
        let err = ours.iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        eprintln!("{folder_name}/{name}: 8-bit |Δ| {err} vs diffusers");
        assert!(err <= 1, "{name}: the masked output differs from diffusers by {err} levels");
        checked += 1;
    }
    checked
}

/// In a stream batch each frame keeps its own mask and clean latents: batched outputs equal unbatched ones.
#[test]
fn masked_stream_batches_give_each_frame_its_unbatched_output() {
    stream_batches_match(ModelFolder::open(&common::model_dir("tiny-sd15-lcm-lora")).unwrap());
}

/// The same with the 9-channel UNet: each frame's masked image latents travel with it.
#[test]
fn inpainting_unet_stream_batches_give_each_frame_its_unbatched_output() {
    stream_batches_match(ModelFolder::open(&common::model_dir("tiny-sd15-inpainting-lcm-lora")).unwrap());
}

/// An inpainting model without a mask is refused, naming what it needs.
#[test]
fn an_inpainting_model_needs_a_mask() {
    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir("tiny-sd15-inpainting-lcm-lora")).unwrap();
    let diffusion = Diffusion::load(&runtime, &folder).unwrap();
    let params = Params::defaults_for(&folder);
    let err = FramePath::new(&runtime, diffusion, &params, (64, 64), BatchMode::Single, None).err().unwrap();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("is an inpainting model"), "{err}");
}

fn stream_batches_match(folder: ModelFolder) {
    let runtime = common::runtime();
    let (w, h) = (64u32, 64u32);
    let frame = |i: u32| image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 4 + i * 9) as u8, (y * 4) as u8, 90]));
    // A mask that moves with the frame: the kept area differs per frame.
    let mask =
        |i: u32| Arc::new(image::GrayImage::from_fn(w, h, |x, _| image::Luma([if x < 16 + i * 8 { 0 } else { 255 }])));
    for (steps, mode) in [(1, BatchMode::Frames(3)), (2, BatchMode::Denoising(2)), (3, BatchMode::Denoising(3))] {
        for strength in [0.6, 1.0] {
            let mut params = Params::defaults_for(&folder);
            params.prompt = "a watercolor fox".into();
            params.steps = steps;
            params.strength = strength;
            let run = |mode: BatchMode| {
                let diffusion = Diffusion::load(&runtime, &folder).unwrap();
                let mut path = FramePath::with_mask(&runtime, diffusion, &params, (w, h), mode, None).unwrap();
                let mut out = Vec::new();
                for i in 0..5 {
                    let input = frame(i);
                    let conditioning = Conditioning::mask(mask(i));
                    let inputs = Inputs { image: Some(input.as_raw()), conditioning: &conditioning };
                    path.push(inputs, |o| out.push(o.to_vec())).unwrap();
                }
                path.finish(|o| out.push(o.to_vec())).unwrap();
                out
            };
            let (alone, batched) = (run(BatchMode::Single), run(mode));
            assert_eq!(batched.len(), 5, "{mode:?}: every frame comes out");
            for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
                let d = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
                assert!(d <= 1, "{mode:?} strength {strength} frame {i}: batched differs from unbatched by {d} levels");
            }
            assert_ne!(alone[0], alone[1], "each frame follows its own mask and picture (the check is not vacuous)");
        }
    }
}
