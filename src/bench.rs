//! Stage timings: text encoder, VAE encode, one UNet step, VAE decode, and a whole img2img frame.
//!
//! Every stage runs `warmup` times untimed, then `iterations` times timed; the report gives median, mean,
//! min and max in milliseconds. Compare numbers taken in one run on one machine.

use std::time::Instant;

use ndarray::Array4;
use serde::Serialize;

use crate::diffusion::{Diffusion, Params};
use crate::error::Result;

#[derive(Clone, Debug, Serialize)]
pub struct StageStats {
    pub stage: &'static str,
    pub median_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub iterations: usize,
}

impl StageStats {
    fn from_samples(stage: &'static str, mut samples_ms: Vec<f64>) -> StageStats {
        samples_ms.sort_by(f64::total_cmp);
        let n = samples_ms.len();
        let median_ms = if n % 2 == 1 { samples_ms[n / 2] } else { (samples_ms[n / 2 - 1] + samples_ms[n / 2]) / 2.0 };
        StageStats {
            stage,
            median_ms,
            mean_ms: samples_ms.iter().sum::<f64>() / n as f64,
            min_ms: samples_ms[0],
            max_ms: samples_ms[n - 1],
            iterations: n,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub execution_provider: String,
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub classifier_free_guidance: bool,
    pub stages: Vec<StageStats>,
}

impl BenchReport {
    /// A fixed-width table for terminals and BENCHMARKS.md.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} {}x{} on {} ({} steps{})\n{:<22} {:>10} {:>10} {:>10} {:>10}\n",
            self.model,
            self.width,
            self.height,
            self.execution_provider,
            self.steps,
            if self.classifier_free_guidance { ", CFG batch 2" } else { "" },
            "stage",
            "median ms",
            "mean ms",
            "min ms",
            "max ms"
        );
        for s in &self.stages {
            out += &format!(
                "{:<22} {:>10.2} {:>10.2} {:>10.2} {:>10.2}\n",
                s.stage, s.median_ms, s.mean_ms, s.min_ms, s.max_ms
            );
        }
        out
    }
}

fn time_stage(warmup: usize, iterations: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        f()?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(samples)
}

/// A smooth deterministic test image (gradients and rings), RGB 0..1.
pub fn test_image(width: u32, height: u32) -> Array4<f32> {
    let (w, h) = (width as f32, height as f32);
    Array4::from_shape_fn((1, 3, height as usize, width as usize), |(_, c, y, x)| {
        let (u, v) = (x as f32 / w, y as f32 / h);
        let r = ((u - 0.5).powi(2) + (v - 0.5).powi(2)).sqrt();
        match c {
            0 => u,
            1 => v,
            _ => 0.5 + 0.5 * (r * 40.0).sin(),
        }
    })
}

/// Time every stage of `diffusion` at `width`×`height` with `params` (steps, strength, guidance, prompt).
pub fn run(
    diffusion: &mut Diffusion,
    params: &Params,
    width: u32,
    height: u32,
    warmup: usize,
    iterations: usize,
) -> Result<BenchReport> {
    let iterations = iterations.max(1);
    let image = test_image(width, height);
    let prepared = diffusion.prepare(params)?;
    let mut stages = Vec::new();

    let prompt = params.prompt.clone();
    let text = time_stage(warmup, iterations, || diffusion.text_encoder_mut().encode_uncached(&prompt).map(|_| ()))?;
    stages.push(StageStats::from_samples("text encoder", text));

    let latents = diffusion.encode(image.view())?;
    let encode = time_stage(warmup, iterations, || diffusion.encode(image.view()).map(|_| ()))?;
    stages.push(StageStats::from_samples("VAE encode", encode));

    if !prepared.vae_only() {
        let unet = time_stage(warmup, iterations, || diffusion.unet_once(&prepared, latents.view()).map(|_| ()))?;
        stages.push(StageStats::from_samples("UNet step", unet));
    }

    let decode = time_stage(warmup, iterations, || diffusion.decode(latents.view()).map(|_| ()))?;
    stages.push(StageStats::from_samples("VAE decode", decode));

    let frame = time_stage(warmup, iterations, || diffusion.run(&prepared, image.view()).map(|_| ()))?;
    stages.push(StageStats::from_samples("img2img frame", frame));

    Ok(BenchReport {
        model: diffusion.folder().name.clone(),
        execution_provider: diffusion.unet().model().ep.to_string(),
        width,
        height,
        steps: prepared.plan.steps.len(),
        classifier_free_guidance: prepared.uses_cfg(),
        stages,
    })
}
