//! The SDXL family against diffusers' SDXL pipelines run on the same tiny models with the same noise
//! (tests/golden/sdxl, made by scripts/golden/sdxl.py): both text encoders (penultimate hidden states side by side,
//! encoder 2's pooled projection), `time_ids`, zeros for an empty negative prompt under classifier-free guidance,
//! LCM-LoRA at 1, 2 and 4 steps, SDXL-Turbo with a TAESD-style VAE, full LCM (`timestep_cond`), a non-square size,
//! strength 1, txt2img, an optimum export folder (SDXL and SD1.5), and the fp16 twin. Each image case runs the
//! host loop and the frame path.

mod common;

use std::path::Path;

use latentcam::diffusion::noise::NoiseBank;
use latentcam::diffusion::text::TextEncoder;
use latentcam::diffusion::{BatchMode, Diffusion, FramePath, Inputs, Params};
use latentcam::imaging;
use latentcam::model::ModelFolder;
use ndarray::{Array2, Array3, Array4, Array5, Axis};
use ndarray_npy::read_npy;
use serde_json::Value;

fn max_abs_diff<D: ndarray::Dimension>(a: ndarray::ArrayView<f32, D>, b: ndarray::ArrayView<f32, D>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn cases(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap()
}

fn case<'a>(cases: &'a Value, name: &str) -> &'a Value {
    cases["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no case {name}"))
}

/// The case's noise: the initial noise, then one tensor per later step. diffusers' Euler (not ancestral) draws
/// none after the first, and latentcam's bank holds one per step (Euler multiplies them by 0): zeros fill in.
fn noise(dir: &Path, name: &str) -> NoiseBank {
    let noise: Array5<f32> = read_npy(dir.join(format!("{name}_noise.npy"))).unwrap();
    let mut tensors: Vec<Array4<f32>> = noise.axis_iter(Axis(0)).map(|n| n.to_owned()).collect();
    let cases = cases(dir);
    let steps = cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .map_or(0, |c| c["timesteps_run"].as_array().map_or(0, Vec::len));
    while tensors.len() < steps {
        tensors.push(Array4::zeros(tensors[0].dim()));
    }
    NoiseBank::from_tensors(tensors)
}

/// The case's parameters (explicit timesteps, or steps and strength under the LCM img2img rule).
fn params(folder: &ModelFolder, case: &Value) -> Params {
    let mut params = Params::defaults_for(folder);
    params.prompt = case["prompt"].as_str().unwrap().into();
    params.negative_prompt = case["negative_prompt"].as_str().unwrap_or("").into();
    params.guidance = case["guidance"].as_f64().unwrap();
    match case["timesteps"].as_array() {
        Some(list) => params.timesteps = Some(list.iter().map(|t| t.as_u64().unwrap() as u32).collect()),
        None => {
            params.steps = case["steps"].as_u64().unwrap() as usize;
            params.strength = case["strength"].as_f64().unwrap();
        }
    }
    params
}

/// Largest difference allowed, per stage.
#[derive(Clone, Copy)]
struct Tolerance {
    latents: f32,
    decoded: f32,
    /// 8-bit levels, host loop and frame path.
    pixels: u8,
}

/// torch (the reference) and ONNX Runtime (us) run the same f32 weights with different kernels: f32 rounding only.
const F32: Tolerance = Tolerance { latents: 1e-5, decoded: 5e-5, pixels: 1 };

/// One image case of `dir`'s golden on the folder `model` (the case's own unless given): encoded latents, the
/// decoded image before clamping and the 8-bit output of the host loop, then the frame path's 8-bit output.
fn check_img2img(dir: &Path, case: &Value, model: Option<&str>, tol: Tolerance) {
    let name = case["name"].as_str().unwrap();
    let model = model.unwrap_or_else(|| case["model"].as_str().unwrap());
    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir(model)).unwrap();
    let mut diffusion = Diffusion::load(&runtime, &folder).unwrap();
    let params = params(&folder, case);
    let prepared = diffusion.prepare(&params).unwrap();
    let run: Vec<u32> = case["timesteps_run"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    assert_eq!(prepared.plan.timesteps(), run, "{name} on {model}: timesteps");

    let input = imaging::load_rgb(&dir.join(format!("{name}_input.png"))).unwrap();
    let image = imaging::to_tensor(&input);
    let noise = noise(dir, name);

    // The encoded, scaled latents first: isolates pre-processing and the VAE from the loop.
    let latents = diffusion.encode(image.view()).unwrap();
    let want_latents: Array4<f32> = read_npy(dir.join(format!("{name}_latents.npy"))).unwrap();
    let latent_err = max_abs_diff(latents.view(), want_latents.view());

    let decoded = diffusion.run_with_noise(&prepared, image.view(), &noise).unwrap();
    let (w, h) = input.dimensions();
    let want_decoded: Array4<f32> = read_npy(dir.join(format!("{name}_decoded.npy"))).unwrap();
    let decoded_err = max_abs_diff(decoded.view(), want_decoded.view());

    let want_output: Array4<f32> = read_npy(dir.join(format!("{name}_output.npy"))).unwrap();
    let ours = imaging::from_tensor(decoded.view());
    let theirs = imaging::from_tensor(want_output.view());
    let pixel_err = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    eprintln!("{name} on {model}: latents |Δ| {latent_err:.2e}, decoded |Δ| {decoded_err:.2e}, 8-bit |Δ| {pixel_err}");
    assert!(latent_err <= tol.latents, "{name} on {model}: latents differ by {latent_err}");
    assert!(decoded_err <= tol.decoded, "{name} on {model}: decoded image differs by {decoded_err}");
    assert!(pixel_err <= tol.pixels, "{name} on {model}: 8-bit output differs by {pixel_err} levels");

    // The frame path (the pipeline's: small graphs + IoBinding, 8-bit in and out) on the same noise.
    let mut path = FramePath::new(&runtime, diffusion, &params, (w, h), BatchMode::Single, Some(noise)).unwrap();
    let mut frame_out = Vec::new();
    path.push(Inputs::image(input.as_raw()), |out| frame_out = out.to_vec()).unwrap();
    assert_eq!(frame_out.len(), theirs.as_raw().len(), "{name} on {model}: frame path output size");
    let path_err = frame_out.iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    let host_err = frame_out.iter().zip(ours.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    eprintln!("{name} on {model}: frame path 8-bit |Δ| {path_err} vs diffusers, {host_err} vs the host loop");
    assert!(path_err <= tol.pixels, "{name} on {model}: the frame path differs from diffusers by {path_err} levels");
}

#[test]
fn sdxl_img2img_matches_diffusers() {
    let dir = common::golden("sdxl");
    let cases = cases(&dir);
    let mut seen = 0;
    for case in cases["cases"].as_array().unwrap().iter().filter(|c| c["kind"] == "img2img") {
        check_img2img(&dir, case, None, F32);
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} img2img cases in tests/golden/sdxl/cases.json");
}

/// diffusers' StableDiffusionXLPipeline (txt2img) starts the loop from the noise itself. latentcam's SDXL runs
/// are img2img (strength 1 is its nearest: `img2img_strength1`), so the loop is fed the equivalent start: zero
/// latents noised with noise / sqrt(1 - ᾱ) are exactly the noise (up to f32 rounding).
#[test]
fn sdxl_txt2img_matches_diffusers() {
    let dir = common::golden("sdxl");
    let cases = cases(&dir);
    let case = case(&cases, "txt2img");
    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir(case["model"].as_str().unwrap())).unwrap();
    let mut diffusion = Diffusion::load(&runtime, &folder).unwrap();
    let prepared = diffusion.prepare(&params(&folder, case)).unwrap();
    let run: Vec<u32> = case["timesteps_run"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    assert_eq!(prepared.plan.timesteps(), run, "txt2img: timesteps");

    let noise: Array5<f32> = read_npy(dir.join("txt2img_noise.npy")).unwrap();
    let mut tensors: Vec<Array4<f32>> = noise.axis_iter(Axis(0)).map(|n| n.to_owned()).collect();
    let first = prepared.plan.steps[0].sqrt_one_minus_alpha;
    tensors[0].mapv_inplace(|n| n / first);
    let latents = Array4::zeros(tensors[0].dim());
    let noise = NoiseBank::from_tensors(tensors);
    let denoised = diffusion.denoise(&prepared, latents.view(), &noise).unwrap();
    let decoded = diffusion.decode(denoised.view()).unwrap();

    let want_decoded: Array4<f32> = read_npy(dir.join("txt2img_decoded.npy")).unwrap();
    let decoded_err = max_abs_diff(decoded.view(), want_decoded.view());
    let want_output: Array4<f32> = read_npy(dir.join("txt2img_output.npy")).unwrap();
    let (ours, theirs) = (imaging::from_tensor(decoded.view()), imaging::from_tensor(want_output.view()));
    let pixel_err = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    eprintln!("txt2img: decoded |Δ| {decoded_err:.2e}, 8-bit |Δ| {pixel_err}");
    assert_eq!(ours.dimensions(), (case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32));
    assert!(decoded_err <= F32.decoded, "txt2img: decoded image differs by {decoded_err}");
    assert!(pixel_err <= F32.pixels, "txt2img: 8-bit output differs by {pixel_err} levels");
}

/// prompt_embeds (both encoders' penultimate hidden states side by side), pooled_prompt_embeds (encoder 2's
/// projection) and add_time_ids against diffusers' encode_prompt and _get_add_time_ids; a long prompt with "!!"
/// checks truncation and tokenizer 2's "!" pad.
#[test]
fn sdxl_prompt_embeddings_match_diffusers() {
    let dir = common::golden("sdxl");
    let cases = cases(&dir);
    let folder = ModelFolder::open(&common::model_dir("tiny-sdxl-lcm-lora")).unwrap();
    let mut text = TextEncoder::load(&common::runtime(), &folder).unwrap();
    for entry in cases["embeddings"].as_array().unwrap() {
        let i = entry["index"].as_u64().unwrap();
        let prompt = entry["prompt"].as_str().unwrap();
        let got = text.encode_uncached(prompt).unwrap();
        let want_context: Array3<f32> = read_npy(dir.join(format!("embeds_{i}_context.npy"))).unwrap();
        let want_pooled: Array2<f32> = read_npy(dir.join(format!("embeds_{i}_pooled.npy"))).unwrap();
        let context_err = max_abs_diff(got.context.view(), want_context.view());
        let pooled = got.pooled.as_ref().expect("an SDXL prompt has a pooled embedding");
        let pooled_err = max_abs_diff(pooled.view(), want_pooled.view());
        eprintln!("embeds_{i}: context |Δ| {context_err:.2e}, pooled |Δ| {pooled_err:.2e}");
        assert!(context_err <= 1e-5, "prompt {i}: prompt_embeds differ by {context_err}");
        assert!(pooled_err <= 1e-5, "prompt {i}: pooled_prompt_embeds differ by {pooled_err}");

        let (w, h) = (entry["width"].as_u64().unwrap() as usize, entry["height"].as_u64().unwrap() as usize);
        let want: Vec<f32> = entry["time_ids"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let ids = latentcam::diffusion::unet::time_ids(h, w, 1);
        assert_eq!(ids.row(0).to_vec(), want, "add_time_ids for {w}x{h}");
    }
}

/// The fp16 twin (UNet and VAE in float16, text encoders float32) against the f32 golden. float16 keeps 11
/// significant bits (relative step 2^-11 ≈ 4.9e-4): seen here, latents 1.1e-4, decoded 2.4e-3, 1 level in 8 bits.
/// The bounds are about 4 times that, and still below what a wrong input does to these images (time_ids with H
/// and W swapped moves the 64x48 output by 0.026 = 6.6 levels; encoding "" instead of zeros for an empty negative
/// prompt, by 0.07 = 18 levels).
#[test]
fn sdxl_fp16_twin_is_close_to_the_f32_golden() {
    let dir = common::golden("sdxl");
    let cases = cases(&dir);
    let fp16 = Tolerance { latents: 5e-4, decoded: 1e-2, pixels: 3 };
    for name in ["lcm_lora_2steps", "cfg_empty_negative"] {
        check_img2img(&dir, case(&cases, name), Some("tiny-sdxl-lcm-lora-fp16"), fp16);
    }
}

/// The SD1.5 optimum folder holds tiny-sd15-lcm-lora's weights: that model's img2img goldens (an LCM-LoRA case
/// and a classifier-free-guidance one) hold for it too, through optimum's scalar timestep and latent_parameters.
#[test]
fn sd15_optimum_folder_matches_the_img2img_golden() {
    let dir = common::golden("img2img");
    let cases = cases(&dir);
    for name in ["sd15_lcm_2steps", "sd15_cfg_explicit"] {
        let case = case(&cases, name);
        assert_eq!(case["model"], "tiny-sd15-lcm-lora");
        check_img2img(&dir, case, Some("tiny-sd15-optimum"), F32);
    }
}

// ---- Euler and Euler-ancestral (tests/golden/euler, scripts/golden/euler.py): SDXL-Turbo at 2-4 steps,
// SDXL-Lightning (4-step UNet at 2, 4 and 8 steps, explicit timesteps; the 1-step UNet predicting the sample)

#[test]
fn euler_img2img_matches_diffusers() {
    let dir = common::golden("euler");
    let cases = cases(&dir);
    let mut seen = 0;
    for case in cases["cases"].as_array().unwrap().iter().filter(|c| c["kind"] == "img2img") {
        check_img2img(&dir, case, None, F32);
        check_denoised(&dir, case);
        seen += 1;
    }
    assert!(seen >= 12, "only {seen} img2img cases in tests/golden/euler/cases.json");
}

/// The loop's final latents (before the decoder, which shrinks differences) against diffusers'.
fn check_denoised(dir: &Path, case: &Value) {
    let name = case["name"].as_str().unwrap();
    let runtime = common::runtime();
    let folder = ModelFolder::open(&common::model_dir(case["model"].as_str().unwrap())).unwrap();
    let mut diffusion = Diffusion::load(&runtime, &folder).unwrap();
    let prepared = diffusion.prepare(&params(&folder, case)).unwrap();
    let latents = match case["kind"].as_str() {
        Some("txt2img") => {
            let (w, h) = (case["width"].as_u64().unwrap() as usize, case["height"].as_u64().unwrap() as usize);
            Array4::zeros((1, folder.latent_channels, h / 8, w / 8))
        }
        _ => {
            let input = imaging::load_rgb(&dir.join(format!("{name}_input.png"))).unwrap();
            diffusion.encode(imaging::to_tensor(&input).view()).unwrap()
        }
    };
    let denoised = diffusion.denoise(&prepared, latents.view(), &noise(dir, name)).unwrap();
    let want: Array4<f32> = read_npy(dir.join(format!("{name}_denoised.npy"))).unwrap();
    let err = max_abs_diff(denoised.view(), want.view());
    // f32 rounding relative to the latents' size (a run from t = 999 has latents up to ~4 before the VAE scale).
    let largest = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let tol = 1e-5 * (1.0 + largest);
    eprintln!("{name}: final latents |Δ| {err:.2e} (largest {largest:.2}, tolerance {tol:.1e})");
    assert!(err <= tol, "{name}: the loop's final latents differ by {err} (tolerance {tol})");
}

/// Euler's txt2img starts from zero latents noised to the first timestep (init_noise_sigma σ_max: sqrt(1-ᾱ)·noise
/// on the UNet's scale), which is latentcam's img2img loop on zero latents with the noise as stored.
#[test]
fn euler_txt2img_matches_diffusers() {
    let dir = common::golden("euler");
    let cases = cases(&dir);
    let mut seen = 0;
    for case in cases["cases"].as_array().unwrap().iter().filter(|c| c["kind"] == "txt2img") {
        check_denoised(&dir, case);
        seen += 1;
    }
    assert!(seen >= 3, "only {seen} txt2img cases");
}
