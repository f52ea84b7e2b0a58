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
