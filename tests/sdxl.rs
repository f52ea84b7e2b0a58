//! The SDXL family as a user meets it: `models check` shows both text encoders, the pooled embedding and
//! `time_ids`; optimum export folders (SD1.5 and SDXL) load without a model.toml and give what their model.toml
//! twins give; the SDXL pipeline files run on the tiny twins; what cannot run is refused at start (exit 2) with
//! the reason. The numerics against diffusers are in tests/sdxl_golden.rs; the frame path's batch modes,
//! similarity filter, feedback, transitions and fp16 ports for SDXL in tests/frame_path.rs and
//! tests/live_control.rs.

mod common;

use std::path::Path;

use common::{assert_bad_input, latentcam, path_str, stderr};

const SDXL_TWINS: [&str; 5] =
    ["tiny-sdxl-lcm-lora", "tiny-sdxl-turbo", "tiny-lcm-sdxl", "tiny-sdxl-lcm-lora-fp16", "tiny-sdxl-optimum"];

fn model(name: &str) -> String {
    common::model_dir(name).display().to_string()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn models_check_shows_the_family_both_encoders_and_the_added_conditions() {
    for name in SDXL_TWINS {
        let out = latentcam(&["models", "check", &model(name)]);
        let text = stdout(&out);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        for needle in [
            "text encoder 2",
            "family: SDXL",
            "hidden_states.1",          // encoder 1 (2 layers): the penultimate hidden state
            "hidden_states.2 + pooled", // encoder 2 (3 layers): its penultimate, and its pooled projection
            "text_embeds 16 wide",
            "time_ids [H, W, 0, 0, H, W]",
            "empty negative prompt with guidance: zeros",
            "(pad \"!\")",
            "memory at",
        ] {
            assert!(text.contains(needle), "{name}: `models check` should say {needle:?}:\n{text}");
        }
    }
    let sd = stdout(&latentcam(&["models", "check", &model("tiny-sd15-optimum")]));
    assert!(sd.contains("family: SD (one text encoder)") && sd.contains("timestep: float32 scalar"), "{sd}");
}

#[test]
fn steps_and_strength_mean_for_sdxl_what_they_mean_for_sd() {
    let schedule = |name: &str| {
        let out = latentcam(&["schedule", "--model", &model(name), "--steps", "4", "--strength", "0.5"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["timesteps"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(schedule("tiny-sdxl-lcm-lora"), [499, 379, 259, 139]);
    assert_eq!(schedule("tiny-sdxl-lcm-lora"), schedule("tiny-sd15-lcm-lora"));
    assert_eq!(schedule("tiny-sdxl-optimum"), schedule("tiny-sdxl-lcm-lora"), "scheduler/ read like [scheduler]");
}

/// img2img through the command line; the output PNG's pixels.
fn img2img(name: &str, dir: &Path, extra: &[&str]) -> image::RgbImage {
    let input = common::root().join("tests/golden/img2img/sd15_lcm_2steps_input.png");
    let output = dir.join(format!("{name}.png"));
    let mut args = vec!["img2img", path_str(&input), path_str(&output), "--model"];
    let folder = model(name);
    args.push(&folder);
    args.extend_from_slice(&["--prompt", "a watercolor fox", "--seed", "3", "--size", "64x64"]);
    args.extend_from_slice(extra);
    let out = latentcam(&args);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    image::open(&output).unwrap().to_rgb8()
}

/// A short H.264 test-pattern clip (ffmpeg's, so the test needs no ../shared).
fn clip(path: &Path, seconds: f64) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25", "-t"])
        .arg(seconds.to_string())
        .args(["-pix_fmt", "yuv420p", "-c:v", "libx264", "-y"])
        .arg(path)
        .output()
        .expect("ffmpeg (scripts/setup.sh installs it)");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
}

fn max_level(a: &image::RgbImage, b: &image::RgbImage) -> u8 {
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

#[test]
fn optimum_folders_give_what_their_model_toml_twins_give() {
    // Same weights, other layout: a scalar timestep, a `latent_parameters` VAE encoder, vocab.json + merges.txt
    // tokenizers, the schedule and sizes from the diffusers configs.
    let dir = common::temp_dir();
    for (optimum, twin, extra) in [
        ("tiny-sdxl-optimum", "tiny-sdxl-lcm-lora", &["--steps", "2", "--strength", "0.6"][..]),
        ("tiny-sdxl-optimum", "tiny-sdxl-lcm-lora", &["--steps", "1", "--guidance", "1.5"][..]),
        ("tiny-sdxl-optimum", "tiny-sdxl-lcm-lora", &["--guidance", "1.5", "--negative-prompt", "blurry"][..]),
        ("tiny-sd15-optimum", "tiny-sd15-lcm-lora", &["--steps", "2", "--strength", "0.6"][..]),
    ] {
        let a = img2img(optimum, dir.path(), extra);
        let b = img2img(twin, dir.path(), extra);
        let d = max_level(&a, &b);
        assert!(d <= 1, "{optimum} vs {twin} {extra:?}: {d} levels apart");
    }
}

#[test]
fn an_empty_negative_prompt_is_zeros_and_a_given_one_is_not() {
    let dir = common::temp_dir();
    let plain = img2img("tiny-sdxl-lcm-lora", dir.path(), &["--guidance", "1.5"]);
    let empty = img2img("tiny-sdxl-lcm-lora", dir.path(), &["--guidance", "1.5", "--negative-prompt", ""]);
    let given = img2img("tiny-sdxl-lcm-lora", dir.path(), &["--guidance", "1.5", "--negative-prompt", "blurry"]);
    assert_eq!(plain, empty);
    assert_ne!(plain, given, "a negative prompt is encoded, not zeros");
}

#[test]
fn the_sdxl_pipeline_files_run_on_the_tiny_twins() {
    let dir = common::temp_dir();
    let input = dir.path().join("in.mp4");
    clip(&input, 1.0);
    let output = dir.path().join("out.mp4");
    let text = std::fs::read_to_string(common::root().join("pipelines/video2video-sdxl.toml")).unwrap();
    let text = text
        .replace("uri = \"input.mp4\"", &format!("uri = {:?}", path_str(&input)))
        .replace("path = \"output.mp4\"", &format!("path = {:?}", path_str(&output)));
    let file = dir.path().join("video2video-sdxl.toml");
    std::fs::write(&file, text).unwrap();
    for twin in ["tiny-sdxl-lcm-lora", "tiny-lcm-sdxl"] {
        let dir_set = format!("model.dir={}", model(twin));
        let stats = dir.path().join("stats.json");
        let out = latentcam(&[
            "run",
            path_str(&file),
            "--set",
            &dir_set,
            "--set",
            "model.size=128x80",
            "--stats-json",
            path_str(&stats),
        ]);
        assert!(out.status.success(), "{twin}: {}", stderr(&out));
        let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
        assert_eq!(stats["model"]["family"], "sdxl", "the statistics name the family: {stats}");
        assert_eq!(stats["model"]["name"], twin);
        let frames = common::ffmpeg::decoded_video_frames(&output).unwrap();
        assert_eq!(frames, common::ffmpeg::decoded_video_frames(&input).unwrap(), "{twin}: every frame out");
    }

    let live = common::root().join("pipelines/webcam-stylize-sdxl-turbo.toml");
    let dir_set = format!("model.dir={}", model("tiny-sdxl-turbo"));
    let out = latentcam(&["check", path_str(&live), "--set", &dir_set]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("timesteps [499]"), "1 step at strength 0.5: {}", stdout(&out));
    // Without the export, the message says how to make it.
    let out = latentcam(&["check", path_str(&live)]);
    if !common::root().join("models/sdxl-turbo").exists() {
        assert_bad_input(&out, "scripts/export_models.py real sdxl-turbo");
    }
}

#[test]
fn what_cannot_run_is_refused_at_start_with_the_reason() {
    let dir = common::temp_dir();
    let input = common::root().join("tests/golden/img2img/sd15_lcm_2steps_input.png");
    let output = dir.path().join("out.png");
    let video = dir.path().join("in.mp4");
    clip(&video, 0.5);
    let out_video = dir.path().join("out.mp4");

    // An optimum UNet takes one scalar timestep: no denoising batch.
    let optimum = model("tiny-sdxl-optimum");
    let out = latentcam(&[
        "convert",
        path_str(&video),
        path_str(&out_video),
        "--model",
        &optimum,
        "--steps",
        "2",
        "--stream-batch",
        "2",
        "--size",
        "64x64",
    ]);
    assert_bad_input(&out, "scalar");
    assert!(!out_video.exists(), "nothing written");

    // Pose guidance runs SD1.5-family ControlNets only.
    let pose = common::root().join("pipelines/openpose-character.toml");
    let out = latentcam(&["check", path_str(&pose), "--set", &format!("model.dir={}", model("tiny-sdxl-turbo"))]);
    assert_bad_input(&out, "ControlNet");

    // More memory than the machine has: the largest size of the shape that fits is named.
    let twin = model("tiny-sdxl-lcm-lora");
    let out = latentcam(&["img2img", path_str(&input), path_str(&output), "--model", &twin, "--size", "4096x4096"]);
    assert_bad_input(&out, "that fits is");

    // A folder that says sdxl but whose UNet is SD1.5's, and the reverse.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    let sdxl_toml = std::fs::read_to_string(common::model_dir("tiny-sdxl-lcm-lora").join("model.toml")).unwrap();
    let sd_unet = common::model_dir("tiny-sd15-lcm-lora").join("unet.onnx");
    let sdxl_dir = common::model_dir("tiny-sdxl-lcm-lora");
    let absolute = |text: &str| {
        text.replace("\"../", &format!("\"{}/../", sdxl_dir.display()))
            .replace("\"vae_", &format!("\"{}/vae_", sdxl_dir.display()))
    };
    let toml = absolute(&sdxl_toml).replace("unet = \"unet.onnx\"", &format!("unet = {:?}", path_str(&sd_unet)));
    std::fs::write(mixed.join("model.toml"), toml).unwrap();
    let out = latentcam(&["img2img", path_str(&input), path_str(&output), "--model", path_str(&mixed)]);
    assert_bad_input(&out, "no text_embeds and time_ids");

    let sd_toml: String = absolute(&sdxl_toml)
        .replace("unet = \"unet.onnx\"", &format!("unet = {:?}", path_str(&sdxl_dir.join("unet.onnx"))))
        .lines()
        .filter(|l| !l.starts_with("family") && !l.starts_with("text-encoder-2") && !l.starts_with("tokenizer-2"))
        .map(|l| format!("{l}\n"))
        .collect();
    let sd_toml = sd_toml.replace("[tokenizer-2]\npad-token = \"!\"\n", "").replace(
        "[sdxl]\nhidden-layer = -2\npooled-output = \"text_embeds\"\nforce-zeros-for-empty-prompt = true\n",
        "",
    );
    std::fs::write(mixed.join("model.toml"), sd_toml).unwrap();
    let out = latentcam(&["img2img", path_str(&input), path_str(&output), "--model", path_str(&mixed)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("family") && err.contains("sdxl"), "names the missing family: {err}");
}
