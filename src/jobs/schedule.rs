//! `latentcam schedule`: the schedule (LCM, Euler or Euler-ancestral: the model's) a step count and strength
//! make, without a model run.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::Origin;
use crate::diffusion::scheduler::{Lcm, LcmConfig};
use crate::error::Result;
use crate::knobs::{self, Checked};
use crate::model::ModelFolder;

/// `latentcam schedule` as given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScheduleRequest {
    /// `--steps`, `--strength`, `--timesteps` as typed.
    pub steps: String,
    pub strength: String,
    pub timesteps: Option<Vec<String>>,
    /// Take the scheduler config from this model folder (default: diffusers' LCMScheduler defaults).
    pub model: Option<PathBuf>,
}

/// What `latentcam schedule` prints: the scheduler, then one entry per denoising step.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ScheduleJson {
    /// `lcm`, `euler` or `euler-ancestral`.
    pub scheduler: &'static str,
    pub timesteps: Vec<u32>,
    pub alphas_cumprod: Vec<f32>,
    /// σ = sqrt((1-ᾱ)/ᾱ), the noise level diffusers' Euler schedulers state.
    pub sigmas: Vec<f32>,
    pub c_skip: Vec<f32>,
    pub c_out: Vec<f32>,
    /// The move to the next timestep (scheduler.rs): the denoised sample's, the predicted noise's and the fresh
    /// noise's shares; 0 on the last step.
    pub next_sample: Vec<f32>,
    pub next_predicted_noise: Vec<f32>,
    pub next_fresh_noise: Vec<f32>,
}

impl ScheduleRequest {
    pub fn run(&self) -> Result<ScheduleJson> {
        let config = match &self.model {
            Some(dir) => ModelFolder::open(dir)?.scheduler,
            None => LcmConfig::default(),
        };
        let lcm = Lcm::new(config);
        let flags = Origin::Flags;
        let steps = match flags.knob(&knobs::STEPS, &Some(super::flag_value(&self.steps)))? {
            Some(Checked::Int(n)) => n as usize,
            _ => 1,
        };
        let strength = match flags.knob(&knobs::STRENGTH, &Some(super::flag_value(&self.strength)))? {
            Some(Checked::Float(x)) => x,
            _ => 0.5,
        };
        let explicit = match flags.knob(&knobs::TIMESTEPS, &self.timesteps.as_deref().map(super::flag_list))? {
            Some(Checked::IntList(list)) => list.map(|l| l.into_iter().map(|t| t as u32).collect::<Vec<u32>>()),
            _ => None,
        };
        // The model's own timestep range and the steps against the strength: the schedule's checks.
        let schedule = lcm.schedule(explicit.as_deref(), steps, strength)?;
        let plan = lcm.plan(&schedule);
        let each = |f: &dyn Fn(&crate::diffusion::scheduler::StepScalars) -> f32| plan.steps.iter().map(f).collect();
        Ok(ScheduleJson {
            scheduler: plan.kind.key(),
            timesteps: plan.timesteps(),
            alphas_cumprod: each(&|s| s.alpha_cumprod),
            sigmas: each(&|s| ((1.0 - f64::from(s.alpha_cumprod)) / f64::from(s.alpha_cumprod)).sqrt() as f32),
            c_skip: each(&|s| s.c_skip),
            c_out: each(&|s| s.c_out),
            next_sample: each(&|s| s.renoise.map_or(0.0, |r| r.sample)),
            next_predicted_noise: each(&|s| s.renoise.map_or(0.0, |r| r.eps)),
            next_fresh_noise: each(&|s| s.renoise.map_or(0.0, |r| r.noise)),
        })
    }
}
