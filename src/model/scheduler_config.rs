//! `[scheduler]` of model.toml: the scheduler's cold configuration (LCM, Euler or Euler-ancestral), as the
//! manifest states it (defaults = the upstream `scheduler_config.json`). The scheduler itself, which follows from it, is
//! [`crate::diffusion::scheduler`]; the configuration lives with the manifest so that reading a model folder needs
//! nothing from diffusion.

use serde::Deserialize;

use crate::knobs::show_f64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum BetaSchedule {
    #[serde(rename = "scaled_linear")]
    ScaledLinear,
    #[serde(rename = "linear")]
    Linear,
}

/// What the UNet predicts (diffusers' `prediction_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum PredictionType {
    #[serde(rename = "epsilon")]
    Epsilon,
    #[serde(rename = "v_prediction")]
    VPrediction,
    #[serde(rename = "sample")]
    Sample,
}

/// Which step a model's scheduler takes (`[scheduler] kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchedulerKind {
    /// Latent Consistency Models (LCM, LCM-LoRA); also exact for SD-Turbo and SDXL-Turbo at 1 step.
    #[default]
    Lcm,
    /// diffusers' `EulerDiscreteScheduler` (SDXL-Lightning): no fresh noise between steps.
    Euler,
    /// diffusers' `EulerAncestralDiscreteScheduler` (SD-Turbo, SDXL-Turbo): part of each step's noise is fresh.
    EulerAncestral,
}

impl SchedulerKind {
    /// The name model.toml uses.
    pub fn key(self) -> &'static str {
        match self {
            SchedulerKind::Lcm => "lcm",
            SchedulerKind::Euler => "euler",
            SchedulerKind::EulerAncestral => "euler-ancestral",
        }
    }
}

/// How an Euler schedule spaces its timesteps (diffusers' `timestep_spacing`). Only "trailing" is taken: the
/// spacing of every distilled few-step model (SD-Turbo, SDXL-Turbo, SDXL-Lightning), the only one whose 1- to
/// 4-step schedules start at the last trained timestep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimestepSpacing {
    #[default]
    Trailing,
}

/// `[scheduler]` in model.toml (`kind = "lcm"`, `"euler"` or `"euler-ancestral"`). Field names are diffusers'
/// in kebab-case; `original-inference-steps` and `timestep-scaling` are LCM's, `timestep-spacing` Euler's.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LcmConfig {
    /// Set from the `kind` tag.
    #[serde(skip)]
    pub kind: SchedulerKind,
    pub timestep_spacing: TimestepSpacing,
    /// diffusers' `steps_offset`: read so that hub configs carry over, but trailing spacing does not use it (as in
    /// diffusers), and LCM's grid neither.
    pub steps_offset: u32,
    pub num_train_timesteps: u32,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub original_inference_steps: u32,
    pub timestep_scaling: f64,
    pub prediction_type: PredictionType,
}

impl Default for LcmConfig {
    /// SD1.5 / LCM-LoRA / LCM-Dreamshaper / SD-Turbo values (diffusers `LCMScheduler` defaults).
    fn default() -> Self {
        LcmConfig {
            kind: SchedulerKind::Lcm,
            timestep_spacing: TimestepSpacing::Trailing,
            steps_offset: 0,
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            original_inference_steps: 50,
            timestep_scaling: 10.0,
            prediction_type: PredictionType::Epsilon,
        }
    }
}

impl LcmConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.num_train_timesteps < 2 {
            return Err(format!("num-train-timesteps must be at least 2, found {}", self.num_train_timesteps));
        }
        if !(self.beta_start > 0.0 && self.beta_start < self.beta_end && self.beta_end < 1.0) {
            return Err(format!(
                "betas must satisfy 0 < beta-start < beta-end < 1, found {} and {}",
                show_f64(self.beta_start),
                show_f64(self.beta_end)
            ));
        }
        if self.original_inference_steps == 0 || self.original_inference_steps > self.num_train_timesteps {
            return Err(format!(
                "original-inference-steps must be in 1..={}, found {}",
                self.num_train_timesteps, self.original_inference_steps
            ));
        }
        if !(self.timestep_scaling.is_finite() && self.timestep_scaling > 0.0) {
            return Err(format!("timestep-scaling must be positive, found {}", show_f64(self.timestep_scaling)));
        }
        Ok(())
    }
}
