//! The working size: what a run uses when none is given, and whether a size can run at all.
//!
//! Without `--size` (or `[model] size`), stills, `convert` and pipelines keep the input's aspect ratio at about
//! the model's native² pixels (512² for SD1.5 and SD-Turbo: what it was trained at, and what fits a machine),
//! sides rounded to the model's multiple, never larger than the input:
//! - an input of at most native² pixels keeps its resolution and is centre-cropped to multiples (at most
//!   multiple − 1 pixels per axis: no resampling, so a strength-0 round trip measures the VAE alone);
//! - a larger one is scaled down (Lanczos3) to that area and centre-cropped by the rounding (a few pixels).
//!
//! `--size WxH` is taken as given: the input is scaled to cover it and centre-cropped (never distorted).
//! Either way what is cut or scaled is logged. Then [`ensure_fits`] compares the size's memory need with what
//! there is ([`crate::memory`]) before a model loads.

use crate::config::WorkingSize;
use crate::error::{Error, Result};
use crate::memory::{self, Verdict};
use crate::model::ModelFolder;

/// The default working size for an input of `width`×`height` (see the module's notes).
pub fn default_size(width: u32, height: u32, native: u32, multiple: u32) -> std::result::Result<WorkingSize, String> {
    let crop = WorkingSize::crop_of(width, height, multiple)?;
    let native_area = f64::from(native) * f64::from(native);
    let area = f64::from(width) * f64::from(height);
    if area <= native_area && crop.width() <= crate::config::values::MAX_WORKING_SIDE {
        return Ok(crop);
    }
    let scale = (native_area / area).sqrt();
    let m = f64::from(multiple);
    // Nearest multiple, but never above the input's own (cropped) side: no upscaling.
    let side = |s: u32, cap: u32| ((((f64::from(s) * scale) / m).round() as u32).max(1) * multiple).min(cap);
    WorkingSize::new(side(width, crop.width()), side(height, crop.height()), multiple)
}

/// How the input is brought to `size`, for the log (None: it is that size already).
pub fn describe_fit(width: u32, height: u32, size: WorkingSize) -> Option<String> {
    let (w, h) = size.dims();
    if (w, h) == (width, height) {
        return None;
    }
    if w <= width && h <= height && width - w < size.multiple() && height - h < size.multiple() {
        return Some(format!(
            "{width}x{height} centre-cropped to {w}x{h} (sides multiples of {}: {} and {} pixels cut)",
            size.multiple(),
            width - w,
            height - h
        ));
    }
    let scale = (f64::from(w) / f64::from(width)).max(f64::from(h) / f64::from(height));
    let (covered_w, covered_h) = ((f64::from(width) * scale).round(), (f64::from(height) * scale).round());
    Some(format!(
        "{width}x{height} scaled by {scale:.3} to cover {w}x{h} and centre-cropped ({} and {} pixels cut)",
        (covered_w - f64::from(w)).max(0.0),
        (covered_h - f64::from(h)).max(0.0)
    ))
}

/// Where a run's working size came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeOrigin {
    /// `--size`, or a file's `[model] size`.
    Given,
    /// The default for the input.
    Default,
}

/// Does `size` fit in memory for `model` with `batch` items per UNet run? A given size that does not is
/// refused with the largest of its shape that fits (`refuse` makes the error, naming the flag or key: exit
/// code 2); a default one is replaced by that, with a warning. On a GPU only a warning: see [`crate::memory`].
pub fn ensure_fits(
    model: &ModelFolder,
    size: WorkingSize,
    batch: u32,
    origin: SizeOrigin,
    on_gpu: bool,
    refuse: &dyn Fn(String) -> Error,
) -> Result<WorkingSize> {
    let available = if on_gpu { memory::available_gpu() } else { memory::available_cpu() };
    let Verdict::TooLarge { need, available, largest } = memory::judge(model, size, batch, available) else {
        return Ok(size);
    };
    let what = format!(
        "{size} needs about {} with {} at a UNet batch of {batch}, more than {} leaves ({:.1} GB)",
        memory::describe(&need),
        model.name,
        available.limit,
        available.bytes / 1e9
    );
    if on_gpu {
        // Fused attention makes the score matrices small there, but the weights and the activations are
        // needed all the same: a card without room for them cannot run this model at all.
        let floor_bytes = need.weights_bytes + need.activation_bytes;
        if floor_bytes > available.bytes * memory::USABLE_FRACTION {
            return Err(refuse(format!(
                "{} needs about {:.1} GB on the GPU with {} even without the attention scores (its weights {:.1} \
                 GB), more than {} leaves ({:.1} GB): use a card with more memory, the model's fp16 twin, or a \
                 smaller model",
                size,
                floor_bytes / 1e9,
                model.name,
                need.weights_bytes / 1e9,
                available.limit,
                available.bytes / 1e9
            )));
        }
        tracing::warn!(
            "{what}; ONNX Runtime's fused attention on the GPU needs far less than this CPU estimate, so the run \
             goes on"
        );
        return Ok(size);
    }
    let suggestion = match largest {
        Some(s) => format!("the largest size of this shape ({}) that fits is {s}", aspect(size)),
        None => "not even the smallest size fits: free memory, or use a smaller model".to_string(),
    };
    match (origin, largest) {
        (SizeOrigin::Default, Some(smaller)) => {
            tracing::warn!("the default working size {what}: running at {smaller} instead");
            Ok(smaller)
        }
        _ => Err(refuse(format!("{what}: {suggestion}"))),
    }
}

/// "16:9" for a message.
fn aspect(size: WorkingSize) -> String {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let g = gcd(size.width(), size.height()).max(1);
    format!("{}:{}", size.width() / g, size.height() / g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_inputs_are_cropped_large_ones_scaled_to_the_native_area() {
        // At most native²: the resolution is kept, cropped to multiples.
        assert_eq!(default_size(640, 360, 512, 64).unwrap().dims(), (640, 320));
        assert_eq!(default_size(451, 300, 512, 64).unwrap().dims(), (448, 256));
        // A 12-megapixel phone photo: about 512² pixels, 4:3 kept.
        let s = default_size(4032, 3024, 512, 64).unwrap();
        assert_eq!(s.dims(), (576, 448));
        // Portrait, and wider than the largest working side: fitted, never cropped to the centre.
        assert_eq!(default_size(3024, 4032, 512, 8).unwrap().dims(), (440, 592));
        let wide = default_size(8000, 1000, 512, 16).unwrap();
        assert!(wide.width() > 1300 && wide.height() < 200, "{wide}");
        // Never larger than the input.
        let s = default_size(520, 520, 512, 64).unwrap();
        assert!(s.width() <= 520 && s.height() <= 520);
        assert!(default_size(40, 40, 512, 64).is_err());
    }

    #[test]
    fn fits_are_described() {
        let s = WorkingSize::new(640, 320, 64).unwrap();
        assert!(describe_fit(640, 360, s).unwrap().contains("centre-cropped to 640x320"));
        let s = WorkingSize::new(576, 448, 64).unwrap();
        assert!(describe_fit(4032, 3024, s).unwrap().contains("scaled by"));
        assert_eq!(describe_fit(576, 448, s), None);
    }
}
