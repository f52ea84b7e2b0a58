//! The command line as a user runs it: img2img end to end, the VAE round trip with the real TAEF2, `schedule`,
//! `models check`, and bad input (exit code 2, one clear line, never a panic).

mod common;

use std::path::Path;

use common::{assert_bad_input, latentcam, path_str, stderr};
use latentcam::imaging;

fn ok(out: &std::process::Output) {
    assert!(out.status.success(), "latentcam failed ({:?}):\n{}", out.status.code(), stderr(out));
}

fn img2img(input: &Path, output: &Path, model: &str, extra: &[&str]) -> std::process::Output {
    let model = common::model_dir(model);
    let mut args = vec!["img2img", path_str(input), path_str(output), "--model", path_str(&model)];
    args.extend_from_slice(extra);
    latentcam(&args)
}

/// A committed 64x64 photo crop (the golden input), so these tests run without ../shared.
fn small_input() -> std::path::PathBuf {
    common::golden("img2img/sd15_lcm_2steps_input.png")
}

#[test]
fn img2img_is_deterministic_per_seed_and_keeps_the_size() {
    let tmp = common::temp_dir();
    let (a, b, c) = (tmp.path().join("a.png"), tmp.path().join("b.png"), tmp.path().join("c.png"));
    let args = ["--prompt", "a watercolor", "--steps", "2", "--strength", "0.6"];
    ok(&img2img(&small_input(), &a, "tiny-sd15-lcm-lora", &[&args[..], &["--seed", "7"]].concat()));
    ok(&img2img(&small_input(), &b, "tiny-sd15-lcm-lora", &[&args[..], &["--seed", "7"]].concat()));
    ok(&img2img(&small_input(), &c, "tiny-sd15-lcm-lora", &[&args[..], &["--seed", "8"]].concat()));
    let (a, b, c) = (imaging::load_rgb(&a).unwrap(), imaging::load_rgb(&b).unwrap(), imaging::load_rgb(&c).unwrap());
    assert_eq!(a.dimensions(), (64, 64));
    assert_eq!(a, b, "same seed, same output");
    assert_ne!(a, c, "another seed changes the output");
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn img2img_on_astronaut_with_each_tiny_model() {
    let shared = common::shared();
    let astronaut = shared.join("media/astronaut.png");
    let tmp = common::temp_dir();
    for (model, extra) in [
        ("tiny-sd15-lcm-lora", vec!["--steps", "2", "--guidance", "1.5"]), // classifier-free guidance
        ("tiny-lcm-dreamshaper", vec!["--steps", "4", "--strength", "0.8", "--guidance", "2.0"]),
        ("tiny-sd-turbo", vec!["--steps", "1"]),
        ("taef2-tiny", vec!["--steps", "3", "--strength", "0.7"]),
    ] {
        let out_a = tmp.path().join(format!("{model}-a.png"));
        let out_b = tmp.path().join(format!("{model}-b.jpg"));
        let args: Vec<&str> = [&["--prompt", "an astronaut, oil painting", "--seed", "3"], &extra[..]].concat();
        ok(&img2img(&astronaut, &out_a, model, &args));
        ok(&img2img(&astronaut, &out_b, model, &args));
        let a = imaging::load_rgb(&out_a).unwrap();
        assert_eq!(a.dimensions(), (512, 512), "{model}");
        let b = imaging::load_rgb(&out_b).unwrap();
        assert_eq!(b.dimensions(), (512, 512), "{model}: JPEG output");
        let input = imaging::load_rgb(&astronaut).unwrap();
        assert!(imaging::psnr_db(&a, &input).unwrap() < 25.0, "{model}: diffusion changed the image");
    }
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn vae_round_trip_with_real_taef2_keeps_astronaut_above_30_db() {
    let shared = common::shared();
    let astronaut = shared.join("media/astronaut.png");
    let tmp = common::temp_dir();
    let out = tmp.path().join("round-trip.png");
    ok(&img2img(&astronaut, &out, "taef2-tiny", &["--strength", "0"]));
    let (a, b) = (imaging::load_rgb(&astronaut).unwrap(), imaging::load_rgb(&out).unwrap());
    assert_eq!(b.dimensions(), (512, 512));
    let psnr = imaging::psnr_db(&a, &b).unwrap();
    eprintln!("TAEF2 round trip of astronaut.png at 512x512: {psnr:.2} dB");
    assert!(psnr >= 30.0, "PSNR {psnr:.2} dB < 30 dB");
}

#[test]
fn grayscale_rgba_and_odd_sizes_are_accepted() {
    let tmp = common::temp_dir();
    // Grayscale with alpha, 70x50: cropped to 64x48 (multiples of 16 for this model).
    let gray = image::GrayAlphaImage::from_fn(70, 50, |x, y| image::LumaA([(x * 3 + y) as u8, 200]));
    let gray_path = tmp.path().join("gray.png");
    gray.save(&gray_path).unwrap();
    let out = tmp.path().join("out.png");
    ok(&img2img(&gray_path, &out, "tiny-sd-turbo", &["--steps", "1"]));
    assert_eq!(imaging::load_rgb(&out).unwrap().dimensions(), (64, 48));
    // RGBA JPEG-free path, resized with --size.
    let rgba = image::RgbaImage::from_fn(33, 17, |x, y| image::Rgba([x as u8 * 7, y as u8 * 13, 90, 128]));
    let rgba_path = tmp.path().join("rgba.png");
    rgba.save(&rgba_path).unwrap();
    ok(&img2img(&rgba_path, &out, "tiny-sd-turbo", &["--steps", "1", "--size", "96x32"]));
    assert_eq!(imaging::load_rgb(&out).unwrap().dimensions(), (96, 32));
}

#[test]
fn schedule_prints_the_golden_values() {
    let out = latentcam(&["schedule", "--steps", "4", "--strength", "1.0"]);
    ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["timesteps"], serde_json::json!([999, 759, 499, 259]));
    for key in ["alphas_cumprod", "c_skip", "c_out"] {
        assert_eq!(json[key].as_array().unwrap().len(), 4, "{key}");
    }
    let out = latentcam(&["schedule", "--steps", "1", "--strength", "0.5"]);
    ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["timesteps"], serde_json::json!([499]));
    let alpha = json["alphas_cumprod"][0].as_f64().unwrap();
    assert!((alpha - 0.27766964).abs() < 1e-6, "{alpha}");
    let out = latentcam(&["schedule", "--timesteps", "999,499"]);
    ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["timesteps"], serde_json::json!([999, 499]));
}

#[test]
#[ignore = "needs ../shared (real media and models)"]
fn models_check_passes_taef2_tiny_from_shared() {
    common::shared();
    let out = latentcam(&["models", "check", path_str(&common::model_dir("taef2-tiny"))]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("taef2-tiny: ok"));
}

#[test]
fn models_check_passes_every_committed_model() {
    let dirs = vec!["tiny-sd15-lcm-lora", "tiny-lcm-dreamshaper", "tiny-sd-turbo"];
    let paths: Vec<String> = dirs.iter().map(|d| common::model_dir(d).display().to_string()).collect();
    let mut args = vec!["models", "check"];
    args.extend(paths.iter().map(String::as_str));
    let out = latentcam(&args);
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for d in dirs {
        assert!(stdout.contains(&format!("{d}: ok")), "{d} not reported ok:\n{stdout}");
    }
    assert!(stdout.contains("timestep: int64 [batch]") && stdout.contains("timestep: float32 scalar"), "{stdout}");
    assert!(stdout.contains("timestep_cond: [batch, 256]"), "{stdout}");
}

/// A model folder `name` in `tmp` using the committed tiny-sd-turbo files, with its manifest edited.
fn broken_model(tmp: &Path, name: &str, manifest_edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let src = common::model_dir("tiny-sd-turbo");
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = std::fs::read_to_string(src.join("model.toml")).unwrap();
    let manifest = manifest
        .replace("\"unet.onnx\"", &format!("{:?}", src.join("unet.onnx")))
        .replace("\"vae_encoder.onnx\"", &format!("{:?}", src.join("vae_encoder.onnx")))
        .replace("\"vae_decoder.onnx\"", &format!("{:?}", src.join("vae_decoder.onnx")))
        .replace("\"../tiny-clip/", &format!("\"{}/", common::model_dir("tiny-clip").display()));
    std::fs::write(dir.join("model.toml"), manifest_edit(manifest)).unwrap();
    dir
}

#[test]
fn bad_models_give_exit_code_2_and_name_the_problem() {
    let tmp = common::temp_dir();
    let out_png = tmp.path().join("out.png");
    let input = small_input();
    let run = |model: &Path| {
        latentcam(&["img2img", path_str(&input), path_str(&out_png), "--model", path_str(model), "--steps", "1"])
    };

    // Missing folder.
    assert_bad_input(&run(&tmp.path().join("no-such-model")), "no-such-model");

    // Folder without model.toml.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_bad_input(&run(&empty), "model.toml");

    // Wrong ONNX signature: the VAE encoder where the UNet should be.
    let wrong = broken_model(tmp.path(), "wrong-signature", |m| {
        m.replace(
            &format!("unet = {:?}", common::model_dir("tiny-sd-turbo").join("unet.onnx")),
            &format!("unet = {:?}", common::model_dir("tiny-sd-turbo").join("vae_encoder.onnx")),
        )
    });
    let out = run(&wrong);
    assert_bad_input(&out, "UNet model");
    assert!(stderr(&out).contains("expected inputs") && stderr(&out).contains("found"), "{}", stderr(&out));

    // Corrupt ONNX file.
    let corrupt = tmp.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"this is not a protobuf").unwrap();
    let bad = broken_model(tmp.path(), "corrupt", |m| {
        m.replace(
            &format!("{:?}", common::model_dir("tiny-sd-turbo").join("vae_decoder.onnx")),
            &format!("{corrupt:?}"),
        )
    });
    assert_bad_input(&run(&bad), "corrupt.onnx");

    // Unknown key in model.toml, with its line.
    let typo = broken_model(tmp.path(), "typo", |m| {
        m.replace("latent-channels = 4", "latent-channels = 4\nlatent-chanels = 4")
    });
    let out = run(&typo);
    assert_bad_input(&out, "latent-chanels");
    assert!(stderr(&out).contains("line"), "{}", stderr(&out));

    // models check reports the same and fails.
    assert_bad_input(&latentcam(&["models", "check", path_str(&bad)]), "corrupt.onnx");
    assert!(!out_png.exists(), "no output written on failure");
}

#[test]
fn bad_images_outputs_and_parameters_give_exit_code_2() {
    let tmp = common::temp_dir();
    let input = small_input();
    let out_png = tmp.path().join("out.png");
    let run = |input: &Path, output: &Path, extra: &[&str]| img2img(input, output, "tiny-sd-turbo", extra);

    assert_bad_input(&run(&tmp.path().join("missing.png"), &out_png, &[]), "missing.png");
    let garbage = tmp.path().join("garbage.png");
    std::fs::write(&garbage, b"\x89PNG\r\n\x1a\n but then nothing sensible").unwrap();
    assert_bad_input(&run(&garbage, &out_png, &[]), "garbage.png");
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    assert_bad_input(&run(&text, &out_png, &[]), "notes.txt");
    let tiny = tmp.path().join("tiny.png");
    image::RgbImage::new(8, 8).save(&tiny).unwrap();
    assert_bad_input(&run(&tiny, &out_png, &[]), "8x8");

    assert_bad_input(&run(&input, &tmp.path().join("no/such/dir/out.png"), &[]), "does not exist");
    assert_bad_input(&run(&input, &tmp.path().join("out.bmp"), &[]), "out.bmp");
    assert_bad_input(&run(&input, tmp.path(), &[]), "output");

    for (args, needle) in [
        (&["--steps", "0"][..], "steps"),
        (&["--steps", "9"][..], "steps"),
        (&["--strength", "1.5"][..], "strength"),
        (&["--strength", "-0.1"][..], "strength"),
        (&["--steps", "4", "--strength", "0.05"][..], "strength"),
        (&["--guidance", "50"][..], "guidance"),
        (&["--timesteps", "499,999"][..], "descending"),
        (&["--timesteps", "1000"][..], "1000"),
        (&["--size", "100x64"][..], "multiples of 16"),
        (&["--size", "big"][..], "size"),
    ] {
        assert_bad_input(&run(&input, &out_png, args), needle);
    }
    assert!(!out_png.exists(), "no output written on failure");
}

#[test]
fn runtime_problems_give_exit_code_2_with_advice() {
    let input = small_input();
    let tmp = common::temp_dir();
    let out = tmp.path().join("o.png");
    let model = common::model_dir("tiny-sd-turbo");
    let args = ["img2img", path_str(&input), path_str(&out), "--model", path_str(&model)];
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_latentcam"))
        .args(["--ort-lib", "/nonexistent/libonnxruntime.so"])
        .args(args)
        .output()
        .unwrap();
    assert_bad_input(&missing, "/nonexistent/libonnxruntime.so");
    let not_a_library = tmp.path().join("libonnxruntime.so");
    std::fs::write(&not_a_library, b"nope").unwrap();
    let out2 = std::process::Command::new(env!("CARGO_BIN_EXE_latentcam"))
        .args(["--ort-lib", path_str(&not_a_library)])
        .args(args)
        .output()
        .unwrap();
    assert_bad_input(&out2, "could not load the ONNX Runtime library");
    if !cfg!(feature = "cuda") {
        let cuda = std::process::Command::new(env!("CARGO_BIN_EXE_latentcam"))
            .args(["--ep", "cuda"])
            .args(args)
            .output()
            .unwrap();
        assert_bad_input(&cuda, "--features cuda");
    }
    let bad_ep = latentcam(&["--ep", "metal", "schedule"]);
    assert_eq!(bad_ep.status.code(), Some(2), "{}", stderr(&bad_ep));
}

/// `latentcam bench` on the tiny model, 8 frames, one stage-table iteration, JSON to `json`.
fn bench(json: &Path, extra: &[&str]) -> std::process::Output {
    let model = common::model_dir("tiny-sd15-lcm-lora");
    let mut args = vec!["bench", "--model", path_str(&model), "--frames", "8", "--iterations", "1", "--warmup", "0"];
    args.extend_from_slice(&["--json", path_str(json)]);
    args.extend_from_slice(extra);
    latentcam(&args)
}

/// One size's bench figures: every key there, finite and positive, the ratio what it says.
fn check_bench_figures(v: &serde_json::Value, width: u64, height: u64) {
    let figure = |key: &str| {
        let x = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing or not a number: {v:#}"));
        assert!(x.is_finite() && x > 0.0, "{key} = {x}");
        x
    };
    let (pipeline, bare, ratio) = (figure("pipeline_fps"), figure("bare_fps"), figure("pipeline_over_bare"));
    assert!((ratio - pipeline / bare).abs() <= 1e-9 * ratio, "{ratio} != {pipeline} / {bare}");
    let (p50, p95) = (figure("latency_p50_ms"), figure("latency_p95_ms"));
    assert!(p95 >= p50, "p95 {p95} < p50 {p50}");
    figure("first_frame_ms");
    figure("startup_ms");
    // The warm-up's own duration (startup_ms includes it).
    let warm_up = figure("warm_up_ms");
    assert!(warm_up <= figure("startup_ms"), "warm-up {warm_up} ms is part of start-up");
    assert_eq!(v["frames"], 8);
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(width), Some(height)));
    assert_eq!(v["execution_provider"], "cpu");
    assert_eq!(v["model"], "tiny-sd15-lcm-lora");
    assert_eq!(v["stream_batch"], 1);
    let stages = v["stages"].as_array().expect("stages");
    let names: Vec<&str> = stages.iter().filter_map(|s| s["stage"].as_str()).collect();
    assert_eq!(names, ["text encoder", "VAE encode", "UNet step", "VAE decode", "img2img frame"]);
    for s in stages {
        assert!(s["median_ms"].as_f64().is_some_and(|ms| ms.is_finite() && ms > 0.0), "{s}");
    }
}

#[test]
fn bench_reports_pipeline_bare_and_live_figures_as_json() {
    let tmp = common::temp_dir();
    let json = tmp.path().join("bench.json");
    let out = bench(&json, &["--size", "64x64", "--set", "params.steps=1"]);
    ok(&out);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_bench_figures(&v, 64, 64);
    assert_eq!(v["steps"], 1, "--set reached the pipeline (the model's default is 2 steps)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in ["img2img frame", "bare_fps", "pipeline_fps", "pipeline_over_bare", "p95", "first frame"] {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
}

#[test]
fn bench_with_several_sizes_writes_one_object_per_size() {
    let tmp = common::temp_dir();
    let json = tmp.path().join("bench.json");
    ok(&bench(&json, &["--size", "64x64,128x64"]));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let sizes = v["sizes"].as_array().unwrap_or_else(|| panic!("no sizes array: {v:#}"));
    assert_eq!(sizes.len(), 2);
    check_bench_figures(&sizes[0], 64, 64);
    check_bench_figures(&sizes[1], 128, 64);
}

#[test]
fn bench_bad_flags_give_exit_code_2_and_name_the_flag() {
    let tmp = common::temp_dir();
    let json = tmp.path().join("bench.json");
    for (args, needle) in [
        (&["--frames", "0"][..], "--frames"),
        (&["--frames", "-3"][..], "--frames"),
        (&["--size", "7x7"][..], "--size"),
        (&["--size", "64x64,big"][..], "--size"),
        (&["--iterations", "0"][..], "--iterations"),
        (&["--steps", "9"][..], "--steps"),
        (&["--set", "novalue"][..], "--set"),
        (&["--set", "params.steps=9"][..], "--set"),
        (&["--set", "params.stepz=1"][..], "stepz"),
        (&["--set", "engine.no-such-key=1"][..], "--set"),
        (&["--set", "source.width=64"][..], "--set"),
        (&["--set", "mode=live"][..], "--set"),
    ] {
        assert_bad_input(&bench(&json, args), needle);
    }
    assert_bad_input(&bench(&tmp.path().join("no/such/dir/b.json"), &[]), "does not exist");
    assert!(!json.exists(), "no JSON written on failure");
}

#[test]
#[ignore = "needs ../shared (models/movenet, media/astronaut.png)"]
fn pose_writes_the_skeleton_the_overlay_and_the_keypoints() {
    let shared = common::shared();
    let tmp = common::temp_dir();
    let (input, skeleton, overlay, json) = (
        shared.join("media/astronaut.png"),
        tmp.path().join("skeleton.png"),
        tmp.path().join("overlay.png"),
        tmp.path().join("people.json"),
    );
    let model = shared.join("models/movenet");
    let out = latentcam(&[
        "pose",
        path_str(&input),
        path_str(&skeleton),
        "--json",
        path_str(&json),
        "--model",
        path_str(&model),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let picture = image::open(&skeleton).unwrap().to_rgb8();
    let source = image::open(&input).unwrap().to_rgb8();
    assert_eq!(picture.dimensions(), source.dimensions(), "the conditioning image has the input's size");
    let lit = picture.pixels().filter(|p| p.0 != [0, 0, 0]).count();
    assert!(lit > 1000 && lit < picture.len() / 3 / 4, "a skeleton on black: {lit} lit pixels");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let people = v["people"].as_array().unwrap();
    assert_eq!(people.len(), 1, "{v}");
    let keypoints = people[0]["keypoints"].as_array().unwrap();
    assert_eq!(keypoints.len(), 18);
    // The nose is found, inside the picture, with its score.
    let nose: Vec<f64> = keypoints[0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!(nose[2] > 0.3 && nose[0] > 0.0 && nose[0] < 512.0 && nose[1] > 0.0 && nose[1] < 512.0, "{nose:?}");

    let out = latentcam(&["pose", path_str(&input), path_str(&overlay), "--overlay", "--model", path_str(&model)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let over = image::open(&overlay).unwrap().to_rgb8();
    let same = over.pixels().zip(source.pixels()).filter(|(a, b)| a == b).count();
    assert!(same > over.len() / 3 / 2 && same < over.len() / 3, "the overlay keeps the picture and adds the skeleton");
}

#[test]
fn pose_with_a_model_that_is_not_a_pose_model_is_bad_input() {
    let tmp = common::temp_dir();
    let input = tmp.path().join("in.png");
    image::RgbImage::from_pixel(64, 48, image::Rgb([90, 120, 200])).save(&input).unwrap();
    let not_pose = common::model_dir("tiny-sd15-lcm-lora").join("unet.onnx");
    let out =
        latentcam(&["pose", path_str(&input), path_str(&tmp.path().join("o.png")), "--model", path_str(&not_pose)]);
    assert_bad_input(&out, "MoveNet");
    let out = latentcam(&["pose", path_str(&input), path_str(&tmp.path().join("o.png")), "--model", "/no/such/model"]);
    assert_bad_input(&out, "/no/such/model");
}
