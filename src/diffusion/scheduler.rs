//! The schedulers: LCM (Latent Consistency Models), matching diffusers' `LCMScheduler`, and Euler /
//! Euler-ancestral with trailing spacing, matching `EulerDiscreteScheduler` / `EulerAncestralDiscreteScheduler`
//! (SDXL-Lightning; SD-Turbo and SDXL-Turbo).
//!
//! All three are one step on variance-preserving latents x (what the UNet takes; diffusers' Euler keeps
//! x/sqrt(ᾱ) and scales it back before every UNet call, the same numbers):
//!
//! ```text
//! x0  = the model's estimate of the clean latent (from ε, v or the sample it predicts)
//! d   = c_out·x0 + c_skip·x                      LCM's boundary condition; Euler: c_out 1, c_skip 0
//! ε̂   = (x - sqrt(ᾱ)·x0) / sqrt(1-ᾱ)              the noise the model sees (ε itself for ε-prediction)
//! x'  = a·d + e·ε̂ + b·z                           z: fixed noise; the last step returns d
//!       LCM:             a = sqrt(ᾱ'), e = 0,           b = sqrt(1-ᾱ')
//!       Euler:           a = sqrt(ᾱ'), e = sqrt(1-ᾱ'),  b = 0            (DDIM's deterministic step)
//!       Euler-ancestral: a = sqrt(ᾱ'), e = sqrt(ᾱ')·σ↓,  b = sqrt(ᾱ')·σ↑  (σ↑² = σ'²(σ²-σ'²)/σ², σ↓² = σ'²-σ↑²)
//! ```
//!
//! with ᾱ' and σ' = sqrt((1-ᾱ')/ᾱ') of the next timestep. At one step all three return d, and for Euler that is
//! x0: SD-Turbo and SDXL-Turbo at one step are the same under each.
//!
//! Split three ways: [`LcmConfig`] is the model's cold configuration (from the manifest, defaults =
//! the upstream `scheduler_config.json`), [`Lcm`] holds what follows from it (the `alphas_cumprod` table),
//! and a [`Plan`] is the per-run state: the timesteps for the current steps/strength and every per-step scalar,
//! computed once when those parameters change, never per frame.
//!
//! Timesteps follow the LCM img2img rule (`LatentConsistencyModelImg2ImgPipeline`): the LCM training grid
//! (every k = 1000/50 = 20th timestep) is cut at `strength` and `steps` evenly spaced entries are taken from the
//! top, so 1 step at strength 0.5 runs t = 499. The plain SD img2img rule instead drops the first
//! `(1-strength)·steps` steps of the full schedule, so 1 step below strength 1.0 runs nothing; for real-time
//! 1-4 step use the LCM rule is the only sensible one. An explicit timestep list (StreamDiffusion style) is
//! accepted too and used as given.
//!
//! Euler schedules: the last `steps` timesteps of the trailing schedule of round(steps / strength) steps
//! (t_i = round(1000 - i·1000/T) - 1), so 1 step at strength 0.5 runs t = 499 as LCM does, 2 steps run
//! [499, 249], and strength 1 runs the whole T-step schedule from t = 999 (diffusers' img2img `get_timesteps`
//! with T steps and the same strength, where T·strength is whole).

use ndarray::{Array4, ArrayView4, Zip};

use crate::error::{Error, Result};
use crate::knobs::show_f64;

/// Steps latentcam accepts; LCM / Turbo models are made for 1-4, 8 is the useful ceiling.
pub const MAX_STEPS: usize = crate::knobs::STEPS.int_bounds().1 as usize;

pub use crate::model::scheduler_config::{BetaSchedule, LcmConfig, PredictionType, SchedulerKind};

impl crate::model::ModelFolder {
    /// What image sides must be multiples of for a run on this schedule: the VAE's 8 when only the VAE runs
    /// (strength 0), else the model's `size-multiple` (the UNet's downsampling x 8). The one place this rule
    /// lives.
    pub fn size_multiple_for(&self, schedule: &Schedule) -> u32 {
        if schedule.is_vae_only() { crate::model::VAE_MULTIPLE } else { self.size_multiple }
    }
}

/// The scheduler for one model: its config and the `alphas_cumprod` table.
#[derive(Clone, Debug)]
pub struct Lcm {
    config: LcmConfig,
    /// ᾱ_t for t in 0..num_train_timesteps, computed in f64 (diffusers does it in f32; the difference is
    /// below 1e-6 and inside the comparison tolerance).
    alphas_cumprod: Vec<f64>,
}

impl Lcm {
    pub fn new(config: LcmConfig) -> Lcm {
        let n = config.num_train_timesteps as usize;
        let betas: Vec<f64> = match config.beta_schedule {
            BetaSchedule::ScaledLinear => {
                linspace(config.beta_start.sqrt(), config.beta_end.sqrt(), n).map(|b| b * b).collect()
            }
            BetaSchedule::Linear => linspace(config.beta_start, config.beta_end, n).collect(),
        };
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Lcm { config, alphas_cumprod }
    }

    pub fn config(&self) -> &LcmConfig {
        &self.config
    }

    pub fn alpha_cumprod(&self, t: u32) -> f64 {
        self.alphas_cumprod[t as usize]
    }

    /// The schedule of one run: the explicit list when one is given (checked, used as given; steps and strength
    /// do not apply), else the LCM img2img timesteps for `steps` at `strength`. The one place that choice is
    /// made.
    pub fn schedule(&self, explicit: Option<&[u32]>, steps: usize, strength: f64) -> Result<Schedule> {
        let timesteps = match explicit {
            Some(list) => {
                self.check_timesteps(list)?;
                list.to_vec()
            }
            None => match self.config.kind {
                SchedulerKind::Lcm => self.timesteps(steps, strength)?,
                SchedulerKind::Euler | SchedulerKind::EulerAncestral => self.trailing_timesteps(steps, strength)?,
            },
        };
        Ok(Schedule { timesteps })
    }

    /// The Euler timesteps for `steps` at `strength`: the last `steps` of the trailing schedule of
    /// round(steps / strength) steps. Strength 0 gives none (the VAE only).
    pub fn trailing_timesteps(&self, steps: usize, strength: f64) -> Result<Vec<u32>> {
        check_steps(steps)?;
        check_strength(strength)?;
        if strength == 0.0 {
            return Ok(Vec::new());
        }
        let n = self.config.num_train_timesteps;
        let total = ((steps as f64 / strength).round() as u32).clamp(steps as u32, n);
        // numpy: np.round(np.arange(n, 0, -n / total)) - 1 (round half to even, as np.round).
        // numpy's arange fills start + i·delta with delta = (start + step) - start, not the step itself: the same
        // f64 operations, or an 8-step schedule at strength 0.5 ends in 62 instead of 61.
        let start = f64::from(n);
        let delta = (start - start / f64::from(total)) - start;
        let all: Vec<u32> =
            (0..total).map(|i| (start + f64::from(i) * delta).round_ties_even().max(1.0) as u32 - 1).collect();
        Ok(all[all.len() - steps..].to_vec())
    }

    /// The LCM img2img timesteps for `steps` at `strength` (diffusers `LCMScheduler.set_timesteps` with
    /// `strength`). Strength 0 gives no timesteps: the caller runs the VAE only.
    pub fn timesteps(&self, steps: usize, strength: f64) -> Result<Vec<u32>> {
        check_steps(steps)?;
        check_strength(strength)?;
        if strength == 0.0 {
            return Ok(Vec::new());
        }
        let original = self.config.original_inference_steps;
        let k = self.config.num_train_timesteps / original;
        // Python's int() truncates; strength is f64 exactly as the user wrote it, like diffusers' float.
        let count = (f64::from(original) * strength) as u32;
        if (count as usize) < steps {
            // The least strength that leaves enough timesteps, rounded up to hundredths.
            let least = (steps as u64 * 100).div_ceil(u64::from(original)) as f64 / 100.0;
            return Err(Error::invalid(
                "strength",
                format!(
                    "{} leaves {count} of the {original} LCM timesteps, fewer than the {steps} steps asked for; use \
                     strength >= {} or fewer steps",
                    show_f64(strength),
                    show_f64(least)
                ),
            ));
        }
        // The LCM grid 1·k-1, 2·k-1, ..., count·k-1, largest first, at floor(linspace(0, count, steps)) indices.
        let step = f64::from(count) / steps as f64;
        Ok((0..steps)
            .map(|i| {
                let index = (i as f64 * step).floor() as u32; // index into the descending grid
                (count - index) * k - 1
            })
            .collect())
    }

    /// Checks an explicit timestep list (used as given, strength does not apply).
    pub fn check_timesteps(&self, timesteps: &[u32]) -> Result<()> {
        if !(1..=MAX_STEPS).contains(&timesteps.len()) {
            return Err(Error::invalid(
                "timesteps",
                format!("{timesteps:?} has {} entries (expected 1 to {MAX_STEPS})", timesteps.len()),
            ));
        }
        let n = self.config.num_train_timesteps;
        if let Some(t) = timesteps.iter().find(|t| **t >= n) {
            return Err(Error::invalid("timesteps", format!("{t} is out of range (expected 0..{})", n - 1)));
        }
        if timesteps.windows(2).any(|w| w[1] >= w[0]) {
            return Err(Error::invalid("timesteps", format!("{timesteps:?} must be strictly descending")));
        }
        if self.config.kind != SchedulerKind::Lcm {
            return Ok(()); // Euler takes any timestep
        }
        let k = n / self.config.original_inference_steps;
        let off_grid: Vec<u32> = timesteps.iter().copied().filter(|t| (t + 1) % k != 0).collect();
        if !off_grid.is_empty() {
            tracing::warn!(?off_grid, "timesteps not on the LCM training grid (t = i*{k} - 1); results may suffer");
        }
        Ok(())
    }

    /// The per-run plan for these timesteps: every scalar the loop needs, computed once.
    pub fn plan(&self, schedule: &Schedule) -> Plan {
        let timesteps = schedule.timesteps();
        let sigma_data = 0.5f64;
        let kind = self.config.kind;
        let steps = timesteps
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let a = self.alpha_cumprod(t);
                let (c_skip, c_out) = match kind {
                    SchedulerKind::Lcm => {
                        let scaled = f64::from(t) * self.config.timestep_scaling;
                        let c_skip = sigma_data * sigma_data / (scaled * scaled + sigma_data * sigma_data);
                        (c_skip, scaled / (scaled * scaled + sigma_data * sigma_data).sqrt())
                    }
                    SchedulerKind::Euler | SchedulerKind::EulerAncestral => (0.0, 1.0),
                };
                // To the next timestep; the last step returns the denoised sample as is.
                let renoise = timesteps.get(i + 1).map(|&next| {
                    let a_next = self.alpha_cumprod(next);
                    let sqrt_a_next = a_next.sqrt();
                    let (eps, noise) = match kind {
                        SchedulerKind::Lcm => (0.0, (1.0 - a_next).sqrt()),
                        SchedulerKind::Euler => ((1.0 - a_next).sqrt(), 0.0),
                        SchedulerKind::EulerAncestral => {
                            let sigma = ((1.0 - a) / a).sqrt();
                            let sigma_next = ((1.0 - a_next) / a_next).sqrt();
                            let up = (sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next)
                                / (sigma * sigma))
                                .sqrt();
                            let down = (sigma_next * sigma_next - up * up).sqrt();
                            (sqrt_a_next * down, sqrt_a_next * up)
                        }
                    };
                    Renoise { sample: sqrt_a_next as f32, eps: eps as f32, noise: noise as f32 }
                });
                let a32 = a as f32;
                StepScalars {
                    timestep: t,
                    alpha_cumprod: a32,
                    sqrt_alpha: a32.sqrt(),
                    sqrt_one_minus_alpha: (1.0 - a32).sqrt(),
                    c_skip: c_skip as f32,
                    c_out: c_out as f32,
                    renoise,
                }
            })
            .collect();
        Plan { steps, prediction: self.config.prediction_type, kind }
    }
}

fn check_strength(strength: f64) -> Result<()> {
    if strength.is_finite() && (0.0..=1.0).contains(&strength) {
        Ok(())
    } else {
        Err(Error::invalid("strength", format!("{} (expected a number from 0 to 1)", show_f64(strength))))
    }
}

fn check_steps(steps: usize) -> Result<()> {
    if (1..=MAX_STEPS).contains(&steps) {
        Ok(())
    } else {
        Err(Error::invalid("steps", format!("{steps} (expected 1 to {MAX_STEPS})")))
    }
}

/// numpy/torch `linspace(start, end, n)` with the endpoint.
fn linspace(start: f64, end: f64, n: usize) -> impl Iterator<Item = f64> {
    let step = if n > 1 { (end - start) / (n - 1) as f64 } else { 0.0 };
    (0..n).map(move |i| start + step * i as f64)
}

/// The timesteps one run goes through, resolved by [`Lcm::schedule`]. Empty: the VAE only (strength 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    timesteps: Vec<u32>,
}

impl Schedule {
    pub fn timesteps(&self) -> &[u32] {
        &self.timesteps
    }

    /// True when no denoising step runs (strength 0): encode and decode only.
    pub fn is_vae_only(&self) -> bool {
        self.timesteps.is_empty()
    }
}

/// Everything one denoising step needs, as f32 (what the tensors are).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepScalars {
    pub timestep: u32,
    pub alpha_cumprod: f32,
    pub sqrt_alpha: f32,
    pub sqrt_one_minus_alpha: f32,
    pub c_skip: f32,
    pub c_out: f32,
    /// The move to the next timestep, or None on the last step.
    pub renoise: Option<Renoise>,
}

/// x' = sample·d + eps·ε̂ + noise·z (the module's table).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Renoise {
    pub sample: f32,
    pub eps: f32,
    pub noise: f32,
}

/// The per-run state of the scheduler.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub steps: Vec<StepScalars>,
    pub prediction: PredictionType,
    pub kind: SchedulerKind,
}

impl Plan {
    pub fn timesteps(&self) -> Vec<u32> {
        self.steps.iter().map(|s| s.timestep).collect()
    }

    /// Forward diffusion to the first timestep: sqrt(ᾱ)·x0 + sqrt(1-ᾱ)·noise (diffusers `add_noise`).
    pub fn add_noise(&self, x0: ArrayView4<f32>, noise: ArrayView4<f32>) -> Array4<f32> {
        let s = &self.steps[0];
        Zip::from(&x0).and(&noise).map_collect(|&x, &n| s.sqrt_alpha * x + s.sqrt_one_minus_alpha * n)
    }

    /// One LCM step in place: `sample` (x_t) becomes the next step's input, and the denoised estimate is
    /// written to `denoised`. `noise` is the re-noising noise, used on every step but the last.
    pub fn step(
        &self,
        index: usize,
        model_output: ArrayView4<f32>,
        sample: &mut Array4<f32>,
        denoised: &mut Array4<f32>,
        noise: Option<ArrayView4<f32>>,
    ) {
        let s = self.steps[index];
        let prediction = self.prediction;
        let x0_of = |x: f32, m: f32| match prediction {
            PredictionType::Epsilon => (x - s.sqrt_one_minus_alpha * m) / s.sqrt_alpha,
            PredictionType::VPrediction => s.sqrt_alpha * x - s.sqrt_one_minus_alpha * m,
            PredictionType::Sample => m,
        };
        // The noise the model sees; for ε-prediction that is its output as it is.
        let eps_of = |x: f32, m: f32, x0: f32| match prediction {
            PredictionType::Epsilon => m,
            _ => (x - s.sqrt_alpha * x0) / s.sqrt_one_minus_alpha,
        };
        Zip::from(&mut *denoised).and(&*sample).and(&model_output).for_each(|d, &x, &m| {
            *d = s.c_out * x0_of(x, m) + s.c_skip * x;
        });
        match (s.renoise, noise) {
            (Some(r), Some(noise)) if r.eps == 0.0 => {
                Zip::from(&mut *sample)
                    .and(&*denoised)
                    .and(&noise)
                    .for_each(|x, &d, &n| *x = r.sample * d + r.noise * n);
            }
            (Some(r), Some(noise)) => {
                Zip::from(&mut *sample).and(&*denoised).and(&model_output).and(&noise).for_each(|x, &d, &m, &z| {
                    let eps = eps_of(*x, m, x0_of(*x, m));
                    *x = r.sample * d + r.eps * eps + r.noise * z;
                });
            }
            (Some(r), None) if r.noise == 0.0 => {
                // Euler: no fresh noise.
                Zip::from(&mut *sample).and(&*denoised).and(&model_output).for_each(|x, &d, &m| {
                    let eps = eps_of(*x, m, x0_of(*x, m));
                    *x = r.sample * d + r.eps * eps;
                });
            }
            (Some(_), _) => panic!("step {index} of {} needs noise", self.steps.len()),
            (None, _) => sample.assign(denoised),
        }
    }
}

/// The guidance-scale embedding full LCM models take as `timestep_cond` (diffusers
/// `get_guidance_scale_embedding(w - 1)`), computed in f32 in the same order as torch so it matches bit for bit
/// where the maths libraries agree.
pub fn guidance_embedding(guidance: f64, dim: usize) -> Vec<f32> {
    // diffusers: torch.tensor(guidance_scale - 1) (the subtraction in f64), then * 1000 in f32
    let w = (guidance - 1.0) as f32 * 1000.0;
    let half = dim / 2;
    let scale = 10000f32.ln() / (half as f32 - 1.0);
    let freqs: Vec<f32> = (0..half).map(|k| (k as f32 * -scale).exp()).collect();
    let mut out: Vec<f32> = freqs.iter().map(|f| (w * f).sin()).collect();
    out.extend(freqs.iter().map(|f| (w * f).cos()));
    out.resize(dim, 0.0); // odd sizes are zero-padded
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn euler(kind: SchedulerKind) -> Lcm {
        Lcm::new(LcmConfig { kind, ..LcmConfig::default() })
    }

    #[test]
    fn trailing_rule_examples() {
        let e = euler(SchedulerKind::Euler);
        let t = |steps, strength| e.schedule(None, steps, strength).unwrap().timesteps().to_vec();
        assert_eq!(t(4, 1.0), [999, 749, 499, 249]);
        assert_eq!(t(3, 1.0), [999, 666, 332]); // np.round(666.67) - 1, np.round(333.33) - 1
        assert_eq!(t(8, 1.0), [999, 874, 749, 624, 499, 374, 249, 124]);
        assert_eq!(t(1, 0.5), [499]);
        assert_eq!(t(2, 0.5), [499, 249]);
        assert_eq!(t(3, 0.6), [599, 399, 199]);
        // numpy's arange arithmetic (a plain n - i·n/T rounds 311.5 and 61.5 the other way).
        assert_eq!(t(8, 0.5), [499, 437, 374, 311, 249, 187, 124, 61]);
        assert!(t(1, 0.0).is_empty());
        // Any timestep goes for Euler (no LCM grid).
        assert_eq!(e.schedule(Some(&[750, 250]), 1, 0.5).unwrap().timesteps(), [750, 250]);
    }

    /// diffusers' Euler in its own variables: x_k = x / sqrt(ᾱ), σ = sqrt((1-ᾱ)/ᾱ), d = (x_k - x0)/σ.
    fn k_diffusion_step(ancestral: bool, a: f64, a_next: f64, x: f64, eps: f64, z: f64) -> f64 {
        let (sigma, sigma_next) = (((1.0 - a) / a).sqrt(), ((1.0 - a_next) / a_next).sqrt());
        let x_k = x / a.sqrt();
        let x0 = x_k - sigma * eps;
        let d = (x_k - x0) / sigma;
        let (down, up) = if ancestral {
            let up = (sigma_next.powi(2) * (sigma.powi(2) - sigma_next.powi(2)) / sigma.powi(2)).sqrt();
            ((sigma_next.powi(2) - up * up).sqrt(), up)
        } else {
            (sigma_next, 0.0)
        };
        let next_k = x_k + d * (down - sigma) + z * up;
        next_k * a_next.sqrt() // back to the UNet's input scale
    }

    #[test]
    fn euler_steps_match_diffusers_formulation() {
        for (kind, ancestral) in [(SchedulerKind::Euler, false), (SchedulerKind::EulerAncestral, true)] {
            let e = euler(kind);
            let plan = e.plan(&e.schedule(None, 2, 1.0).unwrap());
            let (a, a_next) = (e.alpha_cumprod(999), e.alpha_cumprod(499));
            let (x, eps, z) = (0.7f32, -1.3f32, 0.4f32);
            let mut sample = Array4::from_elem((1, 1, 1, 1), x);
            let mut denoised = Array4::zeros((1, 1, 1, 1));
            let noise = Array4::from_elem((1, 1, 1, 1), z);
            let out = Array4::from_elem((1, 1, 1, 1), eps);
            plan.step(0, out.view(), &mut sample, &mut denoised, Some(noise.view()));
            let want = k_diffusion_step(ancestral, a, a_next, f64::from(x), f64::from(eps), f64::from(z));
            let got = f64::from(sample[[0, 0, 0, 0]]);
            assert!((got - want).abs() < 1e-5, "{kind:?}: {got} vs {want}");
            // The last step returns x0.
            plan.step(1, out.view(), &mut sample, &mut denoised, None);
            let x1 = f64::from(got as f32);
            let a1 = e.alpha_cumprod(499);
            let want_x0 = (x1 - (1.0 - a1).sqrt() * f64::from(eps)) / a1.sqrt();
            assert!((f64::from(sample[[0, 0, 0, 0]]) - want_x0).abs() < 1e-4);
        }
    }

    #[test]
    fn lcm_img2img_rule_examples() {
        let lcm = Lcm::new(LcmConfig::default());
        assert_eq!(lcm.timesteps(1, 0.5).unwrap(), vec![499]);
        assert_eq!(lcm.timesteps(1, 1.0).unwrap(), vec![999]);
        assert_eq!(lcm.timesteps(4, 1.0).unwrap(), vec![999, 759, 499, 259]);
        assert!(lcm.timesteps(0, 0.5).is_err());
        assert!(lcm.timesteps(9, 1.0).is_err());
        assert!(lcm.timesteps(4, 0.05).is_err()); // 2 grid points < 4 steps
        assert!(lcm.timesteps(1, 1.5).is_err());
        assert!(lcm.timesteps(1, f64::NAN).is_err());
        assert!(lcm.timesteps(2, 0.0).unwrap().is_empty());
    }

    #[test]
    fn messages_show_strength_short() {
        let lcm = Lcm::new(LcmConfig::default());
        let e = lcm.timesteps(2, 1e-320).unwrap_err().to_string();
        assert!(e.contains("1e-320 leaves 0 of the 50 LCM timesteps"), "{e}");
        assert!(e.contains("strength >= 0.04"), "{e}");
        assert!(e.len() < 200, "{e}");
        let e = lcm.timesteps(1, 1e300).unwrap_err().to_string();
        assert!(e.contains("1e300 (expected"), "{e}");
        let e = LcmConfig { beta_start: 1e-320, beta_end: 1e-321, ..LcmConfig::default() }.validate().unwrap_err();
        assert!(e.ends_with("found 1e-320 and 1e-321"), "{e}");
        let e = LcmConfig { timestep_scaling: -1e-310, ..LcmConfig::default() }.validate().unwrap_err();
        assert!(e.ends_with("found -1e-310"), "{e}");
        // The advice is enough: 30 original steps need 1/30 = 0.0333..., 0.04 leaves one.
        let lcm = Lcm::new(LcmConfig { original_inference_steps: 30, ..LcmConfig::default() });
        let e = lcm.timesteps(1, 0.01).unwrap_err().to_string();
        assert!(e.contains("strength >= 0.04"), "{e}");
        assert_eq!(lcm.timesteps(1, 0.04).unwrap().len(), 1);
    }

    #[test]
    fn explicit_timesteps_are_checked() {
        let lcm = Lcm::new(LcmConfig::default());
        assert!(lcm.check_timesteps(&[999, 499]).is_ok());
        assert!(lcm.check_timesteps(&[499, 999]).is_err());
        assert!(lcm.check_timesteps(&[1000]).is_err());
        assert!(lcm.check_timesteps(&[]).is_err());
    }

    #[test]
    fn last_step_returns_denoised_and_boundary_scalings_hold() {
        let lcm = Lcm::new(LcmConfig::default());
        let plan = lcm.plan(&lcm.schedule(Some(&[999]), 1, 1.0).unwrap());
        let s = plan.steps[0];
        assert!(s.renoise.is_none());
        assert!((s.c_skip + s.c_out * s.c_out - 1.0).abs() < 1e-6, "c_skip + c_out² = 1 for sigma_data 0.5");
        let x = Array4::from_elem((1, 1, 2, 2), 0.3f32);
        let eps = Array4::from_elem((1, 1, 2, 2), 0.1f32);
        let mut sample = x.clone();
        let mut denoised = Array4::zeros((1, 1, 2, 2));
        plan.step(0, eps.view(), &mut sample, &mut denoised, None);
        assert_eq!(sample, denoised);
    }
}
