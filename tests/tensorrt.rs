//! What TensorRT is told for a pipeline's models (fp16, shape profiles, the engine-cache key), checked without a
//! GPU: the settings a session would be created with, from a pipeline file as `run` reads it.

mod common;

use std::path::{Path, PathBuf};

use latentcam::config::Pipeline;
use latentcam::infer::contract;
use latentcam::infer::onnx_graph::graph_inputs;
use latentcam::infer::tensorrt::{Fp16, ModelRole, TensorRt};
use latentcam::infer::{ExecutionProvider, Model};
use latentcam::pipeline::build::tensorrt_settings;

/// A 512x512 pipeline on the tiny SD1.5 twin (SD VAE, no timestep_cond): stream batch 2 at 1 step, guidance 1.5.
fn sd15_pipeline(dir: &Path, extra: &str, overrides: &[&str]) -> Pipeline {
    let file = dir.join("pipeline.toml");
    let model = common::model_dir("tiny-sd15-lcm-lora");
    let text = format!(
        r#"
mode = "offline"
[source]
kind = "test-pattern"
frames = 2
[model]
dir = "{}"
size = [512, 512]
[params]
steps = 1
guidance = 1.5
[engine]
stream-batch = 2
{extra}
[[sink]]
kind = "null"
"#,
        model.display()
    );
    std::fs::write(&file, text).unwrap();
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    Pipeline::load(&file, &overrides).unwrap_or_else(|e| panic!("{e}"))
}

fn shapes(
    settings: &latentcam::infer::ep::SessionSettings,
    pick: fn(&latentcam::infer::ep::ShapeProfile) -> &[i64],
) -> String {
    let one = |p: &latentcam::infer::ep::ShapeProfile| {
        format!("{}:{}", p.input, pick(p).iter().map(i64::to_string).collect::<Vec<_>>().join("x"))
    };
    settings.shape_profiles.iter().map(one).collect::<Vec<_>>().join(",")
}

#[test]
fn an_sd15_pipeline_with_stream_batch_2_and_guidance_gets_fp16_engines_for_its_batches() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = sd15_pipeline(dir.path(), "", &[]);
    assert_eq!(pipeline.engine.tensorrt_fp16, Fp16::Auto);
    let size = pipeline.size.unwrap();
    let trt = tensorrt_settings(&pipeline, size, false);
    let runtime = common::runtime().with_tensorrt(trt);
    let model = &pipeline.model;
    let session = |role: &str, path: &Path| runtime.session_settings(ExecutionProvider::TensorRt, role, path);

    let unet = session("UNet", &model.unet);
    assert!(unet.fp16);
    // The tiny twin declares SD1.5's dynamic axes (batch, size, tokens); its embeddings are 32 wide.
    let opt = shapes(&unet, |p| &p.opt);
    assert!(opt.starts_with("sample:4x4x64x64,timestep:4,encoder_hidden_states:4x77x"), "{opt}");
    assert_eq!(shapes(&unet, |p| &p.min), opt);
    assert_eq!(shapes(&unet, |p| &p.max), opt);

    let encoder = session("VAE encoder", &model.vae_encoder);
    assert!(encoder.fp16);
    assert_eq!(shapes(&encoder, |p| &p.opt), "sample:2x3x512x512");
    let decoder = session("VAE decoder", &model.vae_decoder);
    assert!(decoder.fp16);
    assert_eq!(shapes(&decoder, |p| &p.opt), "latent_sample:2x4x64x64");
    let text = session("text encoder", &model.text_encoder);
    assert!(!text.fp16);
    assert_eq!(shapes(&text, |p| &p.opt), "input_ids:1x77");

    // Only the TensorRT provider gets them.
    let cpu = runtime.session_settings(ExecutionProvider::Cpu, "UNet", &model.unet);
    assert!(!cpu.fp16 && cpu.shape_profiles.is_empty());

    // With live changes guidance may drop to 1 (batch 2) and the steps may turn the frame batch into a
    // denoising batch (one frame per VAE run).
    let live = common::runtime().with_tensorrt(tensorrt_settings(&pipeline, size, true));
    let unet = live.session_settings(ExecutionProvider::TensorRt, "UNet", &model.unet);
    assert!(shapes(&unet, |p| &p.min).starts_with("sample:2x4x64x64,timestep:2,"), "{unet:?}");
    assert_eq!(shapes(&unet, |p| &p.opt), opt);
    assert_eq!(shapes(&unet, |p| &p.max), opt);
    let decoder = live.session_settings(ExecutionProvider::TensorRt, "VAE decoder", &model.vae_decoder);
    assert_eq!(shapes(&decoder, |p| &p.min), "latent_sample:1x4x64x64");
    assert_eq!(shapes(&decoder, |p| &p.max), "latent_sample:2x4x64x64");
}

#[test]
fn tensorrt_fp16_takes_auto_on_off_and_names_the_key_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    for (value, fp16) in [("auto", Fp16::Auto), ("on", Fp16::On), ("off", Fp16::Off)] {
        let pipeline = sd15_pipeline(dir.path(), &format!("tensorrt-fp16 = \"{value}\""), &[]);
        assert_eq!(pipeline.engine.tensorrt_fp16, fp16);
        assert_eq!(fp16.as_str(), value);
    }
    let pipeline = sd15_pipeline(dir.path(), "", &["engine.tensorrt-fp16=off"]);
    let runtime = common::runtime().with_tensorrt(tensorrt_settings(&pipeline, pipeline.size.unwrap(), false));
    for (role, path) in [("UNet", &pipeline.model.unet), ("VAE decoder", &pipeline.model.vae_decoder)] {
        assert!(!runtime.session_settings(ExecutionProvider::TensorRt, role, path).fp16, "off: {role}");
    }

    let file = dir.path().join("pipeline.toml");
    for bad in ["engine.tensorrt-fp16=maybe", "engine.tensorrt-fp16=true", "engine.tensorrt-fp16=16"] {
        let err = Pipeline::load(&file, &[bad.to_string()]).unwrap_err().to_string();
        assert!(
            err.contains("engine.tensorrt-fp16") && err.contains(r#"expected one of "auto", "on", "off""#),
            "{bad}: {err}"
        );
    }
    let out = common::latentcam(&["check", file.to_str().unwrap(), "--set", "engine.tensorrt-fp16=fast"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("engine.tensorrt-fp16"), "{}", common::stderr(&out));
}

/// A copy of the tiny SD1.5 twin's folder whose model.toml marks the VAE fp32-only.
fn fp32_vae_folder(dir: &Path) -> PathBuf {
    let source = common::model_dir("tiny-sd15-lcm-lora");
    let folder = dir.join("fp32-vae");
    std::fs::create_dir_all(&folder).unwrap();
    let manifest = std::fs::read_to_string(source.join("model.toml")).unwrap();
    let manifest = manifest
        .replace("image-range =", "vae-fp32-only = true\nimage-range =")
        .replace("\"unet.onnx\"", &format!("{:?}", source.join("unet.onnx")))
        .replace("\"vae_encoder.onnx\"", &format!("{:?}", source.join("vae_encoder.onnx")))
        .replace("\"vae_decoder.onnx\"", &format!("{:?}", source.join("vae_decoder.onnx")))
        .replace("\"../tiny-clip/", &format!("\"{}/", source.join("../tiny-clip").display()));
    std::fs::write(folder.join("model.toml"), manifest).unwrap();
    folder
}

#[test]
fn an_fp32_only_vae_stays_fp32_under_auto_but_not_under_on() {
    let dir = tempfile::tempdir().unwrap();
    let folder = fp32_vae_folder(dir.path());
    let model = format!("model.dir={:?}", folder.display().to_string());
    for (fp16, vae_fp16) in [("auto", false), ("on", true), ("off", false)] {
        let pipeline = sd15_pipeline(dir.path(), "", &[&model, &format!("engine.tensorrt-fp16={fp16}")]);
        assert!(pipeline.model.vae_fp32_only);
        let runtime = common::runtime().with_tensorrt(tensorrt_settings(&pipeline, pipeline.size.unwrap(), false));
        let session = |role: &str, path: &Path| runtime.session_settings(ExecutionProvider::TensorRt, role, path);
        assert_eq!(session("VAE encoder", &pipeline.model.vae_encoder).fp16, vae_fp16, "{fp16}");
        assert_eq!(session("VAE decoder", &pipeline.model.vae_decoder).fp16, vae_fp16, "{fp16}");
        assert_eq!(session("UNet", &pipeline.model.unet).fp16, fp16 != "off", "{fp16}");
    }
}

/// ONNX Runtime's view of a model's inputs (name, dims with -1 where dynamic).
fn session_inputs(model: &Model) -> Vec<(String, Vec<i64>)> {
    let b = &model.binding;
    b.inputs.iter().flatten().chain(&b.extra_inputs).map(|p| (p.name.clone(), p.shape.clone())).collect()
}

/// The graph inputs read from the file agree with what ONNX Runtime reports, for every committed diffusion model.
#[test]
fn declared_inputs_agree_with_onnx_runtime() {
    let runtime = common::runtime();
    let models = common::root().join("models");
    let unet_extras = &contract::unet_controlnet::EXTRAS;
    let cases: Vec<(&str, PathBuf, &contract::Contract, &contract::Extras)> = vec![
        ("UNet", models.join("tiny-sd15-lcm-lora/unet.onnx"), &contract::unet::CONTRACT, &contract::Extras::NONE),
        ("UNet", models.join("tiny-lcm-dreamshaper/unet.onnx"), &contract::unet::CONTRACT, &contract::Extras::NONE),
        ("UNet", models.join("tiny-sd-turbo/unet.onnx"), &contract::unet::CONTRACT, &contract::Extras::NONE),
        ("UNet", models.join("tiny-sd15-lcm-lora-fp16/unet.onnx"), &contract::unet::CONTRACT, &contract::Extras::NONE),
        (
            "UNet",
            models.join("tiny-sd15-lcm-lora-controlnet/unet_controlnet.onnx"),
            &contract::unet::CONTRACT,
            unet_extras,
        ),
        (
            "ControlNet",
            models.join("tiny-sd15-lcm-lora-controlnet/controlnet.onnx"),
            &contract::controlnet::CONTRACT,
            &contract::controlnet::EXTRAS,
        ),
        (
            "VAE encoder",
            models.join("tiny-sd15-lcm-lora/vae_encoder.onnx"),
            &contract::vae_encoder::CONTRACT,
            &contract::Extras::NONE,
        ),
        (
            "VAE decoder",
            models.join("tiny-sd-turbo/vae_decoder.onnx"),
            &contract::vae_decoder::CONTRACT,
            &contract::Extras::NONE,
        ),
        (
            "text encoder",
            models.join("tiny-clip/text_encoder.onnx"),
            &contract::text_encoder::CONTRACT,
            &contract::Extras::NONE,
        ),
    ];
    for (role, path, contract, extras) in cases {
        if !path.is_file() {
            continue;
        }
        let model = runtime.load_with_extras(role, &path, contract, extras).unwrap_or_else(|e| panic!("{e}"));
        let mut from_ort = session_inputs(&model);
        let mut from_file: Vec<(String, Vec<i64>)> =
            graph_inputs(&path).unwrap().into_iter().map(|i| (i.name, i.dims.expect("a declared shape"))).collect();
        from_ort.sort();
        from_file.sort();
        assert_eq!(from_file, from_ort, "{}", path.display());
    }
}

/// What the pipeline's UNet with ControlNet residuals gets: its residual inputs' sizes are only known at run time,
/// so ONNX Runtime makes the profile, and the working shapes go into the cache key instead.
#[test]
fn a_controlnet_unet_leaves_its_profile_to_onnx_runtime_but_keys_the_working_size() {
    let dir = tempfile::tempdir().unwrap();
    let model = format!("model.dir={:?}", common::model_dir("tiny-sd15-lcm-lora-controlnet").display().to_string());
    let pose =
        format!("[pose]\nmode = \"img2img\"\nmodel = {:?}", common::model_dir("tiny-dwpose").display().to_string());
    let pipeline = sd15_pipeline(dir.path(), &pose, &[&model]);
    let trt: TensorRt = tensorrt_settings(&pipeline, pipeline.size.unwrap(), false);
    let files = pipeline.model.controlnet.clone().unwrap();
    assert_eq!(trt.unet, files.unet);
    let runtime = common::runtime().with_tensorrt(trt);
    let unet = runtime.session_settings(ExecutionProvider::TensorRt, "UNet", &files.unet);
    assert!(unet.fp16);
    let inputs = graph_inputs(&files.unet).unwrap();
    if inputs.iter().any(|i| i.name.starts_with("down_block_additional_residuals_") && i.is_dynamic()) {
        assert!(unet.shape_profiles.is_empty());
        let hint = unet.shape_hint.clone().expect("the working shapes");
        assert!(hint.contains("image 512x512") && hint.contains("opt 4"), "{hint}");
    }
    // The ControlNet itself is profiled: its inputs are the UNet's and the conditioning image.
    let controlnet = runtime.session_settings(ExecutionProvider::TensorRt, "ControlNet", &files.controlnet);
    assert!(controlnet.fp16);
    let opt = shapes(&controlnet, |p| &p.opt);
    assert!(opt.contains("sample:4x4x64x64") && opt.contains("controlnet_cond:4x3x512x512"), "{opt}");
    assert_eq!(ModelRole::of("ControlNet"), ModelRole::ControlNet);
}
