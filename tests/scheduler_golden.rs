//! The LCM scheduler against diffusers' `LCMScheduler` (tests/golden/lcm_scheduler.json, made by
//! scripts/golden/scheduler.py). Tolerance |Δ| <= 2e-5 + 1e-5·|ref| in f32.

mod common;

use latentcam::diffusion::scheduler::{Lcm, LcmConfig, PredictionType, guidance_embedding};
use latentcam::error::ErrorKind;
use ndarray::{Array4, ArrayView4};
use serde_json::Value;

fn load() -> Value {
    let text = std::fs::read_to_string(common::golden("lcm_scheduler.json")).expect("golden file");
    serde_json::from_str(&text).expect("json")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 2e-5 + 1e-5 * w.abs();
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, diffusers {w} (|Δ| {} > {tol})", (g - w).abs());
    }
}

#[test]
fn timesteps_and_scalars_match_diffusers_for_steps_1_to_4_and_many_strengths() {
    let golden = load();
    let lcm = Lcm::new(LcmConfig::default());
    let mut checked = 0;
    for case in golden["schedules"].as_array().unwrap() {
        let schedule = if let Some(custom) = case.get("custom") {
            let list: Vec<u32> = custom.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
            lcm.schedule(Some(&list), 1, 1.0).expect("custom list accepted")
        } else {
            let steps = case["steps"].as_u64().unwrap() as usize;
            let strength = case["strength"].as_f64().unwrap();
            let result = lcm.schedule(None, steps, strength);
            if case.get("error").is_some() {
                let err = result.expect_err(&format!("diffusers refuses steps {steps} strength {strength}"));
                assert!(err.kind() == ErrorKind::BadInput && err.to_string().contains("strength"), "{err}");
                continue;
            }
            result.unwrap_or_else(|e| panic!("steps {steps} strength {strength}: {e}"))
        };
        let want: Vec<u32> = case["timesteps"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        assert_eq!(schedule.timesteps(), want, "case {case}");
        let plan = lcm.plan(&schedule);
        let ctx = format!("{:?}", case.get("strength").or(case.get("custom")));
        close(
            &format!("alphas_cumprod {ctx}"),
            &plan.steps.iter().map(|s| s.alpha_cumprod).collect::<Vec<_>>(),
            &floats(&case["alphas_cumprod"]),
        );
        close(
            &format!("c_skip {ctx}"),
            &plan.steps.iter().map(|s| s.c_skip).collect::<Vec<_>>(),
            &floats(&case["c_skip"]),
        );
        close(
            &format!("c_out {ctx}"),
            &plan.steps.iter().map(|s| s.c_out).collect::<Vec<_>>(),
            &floats(&case["c_out"]),
        );
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} schedules checked");
}

fn tensor(shape: (usize, usize, usize, usize), v: &Value) -> Array4<f32> {
    Array4::from_shape_vec(shape, floats(v)).expect("shape")
}

fn flat(a: ArrayView4<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

#[test]
fn full_trajectories_with_renoising_match_diffusers_for_every_prediction_type() {
    let golden = load();
    for case in golden["trajectories"].as_array().unwrap() {
        let prediction = match case["prediction_type"].as_str().unwrap() {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            "sample" => PredictionType::Sample,
            other => panic!("unknown prediction type {other}"),
        };
        let lcm = Lcm::new(LcmConfig { prediction_type: prediction, ..LcmConfig::default() });
        let steps = case["steps"].as_u64().unwrap() as usize;
        let schedule = lcm.schedule(None, steps, case["strength"].as_f64().unwrap()).unwrap();
        let want_t: Vec<u32> =
            case["timesteps"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        assert_eq!(schedule.timesteps(), want_t);
        let plan = lcm.plan(&schedule);
        let s: Vec<usize> = case["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let shape = (s[0], s[1], s[2], s[3]);
        let noise: Vec<Array4<f32>> = case["noise"].as_array().unwrap().iter().map(|n| tensor(shape, n)).collect();
        let x0 = tensor(shape, &case["x0"]);
        let mut sample = plan.add_noise(x0.view(), noise[0].view());
        let ctx = format!("{:?} steps {steps}", prediction);
        close(&format!("add_noise {ctx}"), &flat(sample.view()), &floats(&case["noisy"]));
        let mut denoised = Array4::zeros(shape);
        for i in 0..steps {
            let output = tensor(shape, &case["model_outputs"][i]);
            let renoise = (i + 1 < steps).then(|| noise[i + 1].view());
            plan.step(i, output.view(), &mut sample, &mut denoised, renoise);
            close(&format!("denoised step {i} {ctx}"), &flat(denoised.view()), &floats(&case["denoised"][i]));
            close(&format!("prev_sample step {i} {ctx}"), &flat(sample.view()), &floats(&case["prev_sample"][i]));
        }
    }
}

#[test]
fn guidance_embedding_matches_diffusers() {
    let golden = load();
    for case in golden["guidance"].as_array().unwrap() {
        let g = case["guidance"].as_f64().unwrap();
        let dim = case["dim"].as_u64().unwrap() as usize;
        let got = guidance_embedding(g, dim);
        close(&format!("guidance embedding {g}"), &got, &floats(&case["embedding"]));
    }
}

// ---- Euler and Euler-ancestral (tests/golden/euler/scheduler.json, made by scripts/golden/euler.py) -------------

fn euler_golden() -> Value {
    let text = std::fs::read_to_string(common::golden("euler/scheduler.json")).expect("golden file");
    serde_json::from_str(&text).expect("json")
}

fn euler_scheduler(kind: &str, prediction: &str) -> Lcm {
    use latentcam::diffusion::scheduler::SchedulerKind;
    let kind = match kind {
        "euler" => SchedulerKind::Euler,
        "euler-ancestral" => SchedulerKind::EulerAncestral,
        other => panic!("kind {other}"),
    };
    let prediction_type = match prediction {
        "epsilon" => PredictionType::Epsilon,
        "sample" => PredictionType::Sample,
        "v-prediction" | "v_prediction" => PredictionType::VPrediction,
        other => panic!("prediction {other}"),
    };
    Lcm::new(LcmConfig { kind, prediction_type, ..LcmConfig::default() })
}

fn ints(v: &Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("integer") as u32).collect()
}

/// σ = sqrt((1-ᾱ)/ᾱ) of each step and 0 after the last, as diffusers' Euler schedulers state them.
fn sigmas(lcm: &Lcm, timesteps: &[u32]) -> Vec<f32> {
    let sigma = |t: u32| ((1.0 - lcm.alpha_cumprod(t)) / lcm.alpha_cumprod(t)).sqrt() as f32;
    timesteps.iter().map(|&t| sigma(t)).chain([0.0]).collect()
}

#[test]
fn euler_schedules_match_diffusers_trailing_spacing() {
    let golden = euler_golden();
    let mut checked = 0;
    for case in golden["schedules"].as_array().unwrap() {
        let kind = case["kind"].as_str().unwrap();
        let lcm = euler_scheduler(kind, case["prediction_type"].as_str().unwrap());
        let (steps, strength) = (case["steps"].as_u64().unwrap() as usize, case["strength"].as_f64().unwrap());
        let what = format!("{kind} {steps} steps at {strength}");
        let schedule = lcm.schedule(None, steps, strength).unwrap();
        // Where diffusers' img2img rule runs another count (T·strength not whole), ours runs `steps`.
        assert_eq!(schedule.timesteps(), ints(&case["timesteps"]), "{what}: timesteps");
        close(&format!("{what}: sigmas"), &sigmas(&lcm, schedule.timesteps()), &floats(&case["sigmas"]));
        if kind == "euler-ancestral" {
            // The plan's fresh-noise share is sqrt(ᾱ')·σ↑ and its predicted-noise share sqrt(ᾱ')·σ↓.
            let plan = lcm.plan(&schedule);
            let share = |f: fn(&latentcam::diffusion::scheduler::Renoise) -> f32| -> Vec<f32> {
                plan.steps.iter().map(|s| s.renoise.map_or(0.0, |r| f(&r) / r.sample)).collect()
            };
            close(&format!("{what}: sigma_up"), &share(|r| r.noise), &floats(&case["sigma_up"]));
            close(&format!("{what}: sigma_down"), &share(|r| r.eps), &floats(&case["sigma_down"]));
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} Euler schedules checked");
}

#[test]
fn euler_steps_replay_diffusers_trajectories() {
    let golden = euler_golden();
    let tensor = |v: &Value| Array4::from_shape_vec((1, 4, 2, 2), floats(v)).unwrap();
    let mut checked = 0;
    for t in golden["trajectories"].as_array().unwrap() {
        let kind = t["kind"].as_str().unwrap();
        let prediction = t["prediction_type"].as_str().unwrap();
        let lcm = euler_scheduler(kind, prediction);
        let timesteps = ints(&t["timesteps"]);
        let plan = lcm.plan(&lcm.schedule(Some(&timesteps), 1, 1.0).unwrap());
        let noise: Vec<Array4<f32>> = t["noise"].as_array().unwrap().iter().map(tensor).collect();
        let outputs: Vec<Array4<f32>> = t["model_outputs"].as_array().unwrap().iter().map(tensor).collect();
        let inputs = t["model_inputs"].as_array().unwrap();
        let (prev_vp, denoised_want) = (t["prev_vp"].as_array().unwrap(), t["denoised"].as_array().unwrap());
        let mut sample = tensor(&inputs[0]);
        let mut denoised = Array4::zeros(sample.dim());
        for i in 0..timesteps.len() {
            let what = format!("{kind} {prediction} {timesteps:?} step {i}");
            close(&format!("{what}: UNet input"), sample.as_slice().unwrap(), &floats(&inputs[i]));
            // Euler draws no noise: its golden has the initial noise only.
            let fresh = noise.get(i + 1).map(|n| n.view());
            plan.step(i, outputs[i].view(), &mut sample, &mut denoised, fresh);
            close(&format!("{what}: x0"), denoised.as_slice().unwrap(), &floats(&denoised_want[i]));
            close(&format!("{what}: next"), sample.as_slice().unwrap(), &floats(&prev_vp[i]));
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} trajectories");
}

/// The host step's cost per scheduler on a 1024² frame's latents ([1, 4, 128, 128]), not a pass/fail test:
/// `cargo test --release --test scheduler_golden step_cost -- --ignored --nocapture` (BENCHMARKS.md).
#[test]
#[ignore = "a measurement, run by hand"]
fn step_cost() {
    use latentcam::diffusion::scheduler::SchedulerKind;
    let shape = (1, 4, 128, 128);
    let model_out = Array4::from_shape_fn(shape, |(_, c, y, x)| ((c * 7 + y * 3 + x) % 13) as f32 / 13.0 - 0.5);
    let noise = Array4::from_shape_fn(shape, |(_, c, y, x)| ((c * 5 + y + x * 3) % 11) as f32 / 11.0 - 0.5);
    for kind in [SchedulerKind::Lcm, SchedulerKind::Euler, SchedulerKind::EulerAncestral] {
        let lcm = Lcm::new(LcmConfig { kind, ..LcmConfig::default() });
        let plan = lcm.plan(&lcm.schedule(Some(&[999, 759, 499, 259]), 4, 1.0).unwrap());
        let mut sample = noise.clone();
        let mut denoised = Array4::zeros(shape);
        let rounds = 200;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            sample.assign(&noise);
            for i in 0..4 {
                plan.step(i, model_out.view(), &mut sample, &mut denoised, Some(noise.view()));
            }
        }
        let per_step_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds * 4);
        eprintln!("{}: {per_step_us:.1} µs per step on [1, 4, 128, 128]", kind.key());
    }
}
