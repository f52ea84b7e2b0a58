//! Will a working size fit in memory? Estimated before any model is loaded, so a size that cannot run is
//! refused at once with the largest one that can, instead of failing seconds in with ONNX Runtime's
//! "BFCArena ... Failed to allocate".
//!
//! What dominates (measured on the CPU, tiny-sd-turbo, peak RSS of `img2img --steps 1`, BENCHMARKS.md): the
//! UNet's self-attention at its highest resolution materialises a `tokens × tokens` score matrix per head and
//! batch item (tokens = latent pixels there), and ONNX Runtime keeps about two of them alive (the scores and
//! their softmax). That grows with the fourth power of the side: 256² 0.16 GB, 512² 0.78 GB, 768² 3.2 GB,
//! 1024² 9.3 GB, 1280² 22.5 GB. The estimate is
//!
//! ```text
//! need = model files × 1.1 + 200 MB (runtime)                        the weights, loaded once
//!      + batch × heads × tokens² × 4 B × 2.5                         the attention scores (the 2.5: measured 2.1-2.4)
//!      + batch × latent pixels × 32 KB                               convolution activations (SD1.5's 320 channels)
//! ```
//!
//! `heads` and the level of the first attention come from model.toml's `[unet]` (the export script writes
//! them from the UNet's config; without them SD1.5's 8 heads at full latent resolution, the largest of the
//! SD1/SD2 family). Classifier-free guidance doubles the batch (counted whenever guidance is above 1, though
//! full LCM models take guidance as an embedding: an estimate errs on the side of refusing).
//!
//! What there is: on the CPU the least of MemAvailable, the cgroup's limit less its use, and half of what the
//! address-space limit (`ulimit -v`) leaves (the arena reserves address space in doubling chunks). On CUDA
//! ONNX Runtime's fused attention never materialises the score matrix, so the attention term would refuse sizes
//! that run: there a run is refused only when the weights and activations alone exceed the device's free
//! memory (nvidia-smi), and the full estimate is a warning. That path cannot be tested on a machine without a
//! GPU.

use crate::config::WorkingSize;
use crate::model::ModelFolder;

const GB: f64 = 1e9;
/// ONNX Runtime, its thread pools and our own buffers, besides the weights.
const RUNTIME_BYTES: f64 = 200e6;
/// Score matrices alive at once per attention (measured 2.1-2.4 on the CPU).
const ATTENTION_COPIES: f64 = 2.5;
/// Convolution activations per latent pixel and batch item (SD1.5: 320 channels x ~25 maps x 4 bytes).
const ACTIVATION_BYTES_PER_LATENT_PIXEL: f64 = 32e3;
/// Of what is available, what a run may plan to use (the rest: the OS, the frames in flight, the sinks).
pub const USABLE_FRACTION: f64 = 0.85;

/// What a run at one working size needs, by part.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Need {
    pub weights_bytes: f64,
    pub attention_bytes: f64,
    pub activation_bytes: f64,
}

impl Need {
    pub fn total_bytes(&self) -> f64 {
        self.weights_bytes + self.attention_bytes + self.activation_bytes
    }
}

/// What a model needs at `width`×`height` with `batch` items through the UNet at once.
pub fn estimate(model: &ModelFolder, width: u32, height: u32, batch: u32) -> Need {
    let files: u64 = model.files().iter().map(|f| file_bytes(f)).sum();
    let scale = 8.0 * f64::from(1u32 << model.unet_memory.attention_level.min(8));
    let tokens = (f64::from(width) / scale).ceil() * (f64::from(height) / scale).ceil();
    let latent_pixels = (f64::from(width) / 8.0).ceil() * (f64::from(height) / 8.0).ceil();
    let batch = f64::from(batch.max(1));
    Need {
        weights_bytes: files as f64 * 1.1 + RUNTIME_BYTES,
        attention_bytes: batch
            * f64::from(model.unet_memory.attention_heads)
            * tokens
            * tokens
            * 4.0
            * ATTENTION_COPIES,
        activation_bytes: batch * latent_pixels * ACTIVATION_BYTES_PER_LATENT_PIXEL,
    }
}

/// A file's bytes with its ONNX external data (`x.onnx.data`, or `x.onnx_data` beside it).
fn file_bytes(path: &std::path::Path) -> u64 {
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut total = size(path);
    for suffix in [".data", "_data"] {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        total += size(std::path::Path::new(&name));
    }
    total
}

/// Memory a run may use, and which limit set it (for the message).
#[derive(Clone, Debug, PartialEq)]
pub struct Available {
    pub bytes: f64,
    pub limit: String,
}

/// What this process may still allocate on the CPU: the least of the machine's available memory, the
/// cgroup's headroom and the address-space headroom. None when nothing can be read (not Linux).
pub fn available_cpu() -> Option<Available> {
    let mut found: Vec<Available> = Vec::new();
    if let Some(kb) = meminfo_kb("MemAvailable") {
        found.push(Available { bytes: kb * 1e3 * 1.024, limit: "available memory (MemAvailable)".into() });
    }
    if let Some(bytes) = cgroup_headroom() {
        found.push(Available { bytes, limit: "the cgroup's memory limit".into() });
    }
    if let Some(bytes) = address_space_headroom() {
        found.push(Available { bytes, limit: "the address-space limit (ulimit -v)".into() });
    }
    found.into_iter().min_by(|a, b| a.bytes.total_cmp(&b.bytes))
}

fn meminfo_kb(key: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// cgroup v2: `memory.max` less `memory.current` of this process's cgroup.
fn cgroup_headroom() -> Option<f64> {
    let line = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = line.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok()?.trim().parse::<f64>().ok();
    Some((read("memory.max")? - read("memory.current").unwrap_or(0.0)).max(0.0))
}

/// Half of what `RLIMIT_AS` leaves of the address space (VmSize already mapped): ONNX Runtime's arena grows by
/// doubling chunks (up to 1 GB each), which reserve address space well beyond what is touched (measured: a size
/// whose peak RSS is 1.9 GB failed to allocate under 2.5 GB of address space).
fn address_space_headroom() -> Option<f64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let mapped_kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmSize:")?.trim().strip_suffix("kB")?.trim().parse().ok())?;
    Some(((limit.rlim_cur as f64 - mapped_kb * 1024.0) / 2.0).max(0.0))
}

/// Free memory on the first CUDA device, by nvidia-smi (None where there is none).
pub fn available_gpu() -> Option<Available> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=memory.free", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    let mib: f64 = String::from_utf8_lossy(&out.stdout).lines().next()?.trim().parse().ok()?;
    Some(Available { bytes: mib * 1024.0 * 1024.0, limit: "the GPU's free memory (nvidia-smi)".into() })
}

/// The largest size of the same shape (sides multiples of `multiple`, the aspect ratio kept as closely as the
/// multiple allows) whose need fits in `bytes`; None when not even `multiple`² fits.
pub fn largest_fitting(model: &ModelFolder, size: WorkingSize, batch: u32, bytes: f64) -> Option<WorkingSize> {
    let (w, h, m) = (size.width(), size.height(), size.multiple());
    let fits = |s: WorkingSize| estimate(model, s.width(), s.height(), batch).total_bytes() <= bytes;
    // Scale the long side down a multiple at a time; the short side follows the aspect ratio.
    let (long, short) = if w >= h { (w, h) } else { (h, w) };
    let mut side = long / m * m;
    while side >= m {
        let other = ((f64::from(side) * f64::from(short) / f64::from(long) / f64::from(m)).round() as u32).max(1) * m;
        let (sw, sh) = if w >= h { (side, other) } else { (other, side) };
        if let Ok(candidate) = WorkingSize::new(sw, sh, m)
            && fits(candidate)
        {
            return Some(candidate);
        }
        side -= m;
    }
    None
}

/// A need, said for a message: "172 GB (the UNet's attention 171 GB)".
pub fn describe(need: &Need) -> String {
    format!("{:.1} GB (the UNet's attention alone {:.1} GB)", need.total_bytes() / GB, need.attention_bytes / GB)
}

/// The verdict on a working size.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// It fits (or nothing can be said: no limit readable).
    Fits,
    /// It does not; the largest of its shape that would (None: not even the smallest).
    TooLarge { need: Need, available: Available, largest: Option<WorkingSize> },
}

/// Whether `size` fits in what `available` leaves (the usable fraction of it).
pub fn judge(model: &ModelFolder, size: WorkingSize, batch: u32, available: Option<Available>) -> Verdict {
    let Some(available) = available else { return Verdict::Fits };
    let usable = available.bytes * USABLE_FRACTION;
    let need = estimate(model, size.width(), size.height(), batch);
    if need.total_bytes() <= usable {
        return Verdict::Fits;
    }
    Verdict::TooLarge { need, largest: largest_fitting(model, size, batch, usable), available }
}

/// The UNet batch a run makes: its stream batch, doubled when classifier-free guidance may run.
pub fn unet_batch(stream_batch: usize, guidance: f64) -> u32 {
    let items = u32::try_from(stream_batch.max(1)).unwrap_or(u32::MAX);
    if guidance > 1.0 { items.saturating_mul(2) } else { items }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelFolder {
        ModelFolder::open(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-sd-turbo")).unwrap()
    }

    #[test]
    fn the_estimate_bounds_the_measured_peaks_closely() {
        // Peak RSS of `img2img --steps 1` on tiny-sd-turbo (4 heads at full latent resolution), BENCHMARKS.md.
        let model = tiny();
        for (side, measured_gb) in [(256, 0.164), (512, 0.783), (768, 3.21), (1024, 9.33), (1280, 22.5)] {
            let need = estimate(&model, side, side, 1).total_bytes() / GB;
            assert!(need >= measured_gb, "{side}: estimate {need:.2} GB below the measured {measured_gb} GB");
            let bound = measured_gb * 1.5 + 0.25;
            assert!(need <= bound, "{side}: estimate {need:.2} GB far above the measured {measured_gb} GB");
        }
    }

    #[test]
    fn the_largest_fitting_size_keeps_the_shape() {
        let model = tiny();
        let size = WorkingSize::new(2048, 1152, 16).unwrap();
        let available = Available { bytes: 4e9, limit: "test".into() };
        let Verdict::TooLarge { largest: Some(largest), need, .. } = judge(&model, size, 1, Some(available.clone()))
        else {
            panic!("2048x1152 cannot fit in 4 GB")
        };
        assert!(need.attention_bytes > need.weights_bytes);
        let (w, h) = largest.dims();
        assert!(w % 16 == 0 && h % 16 == 0 && w < 2048);
        assert!((f64::from(w) / f64::from(h) - 2048.0 / 1152.0).abs() < 0.05, "{w}x{h}");
        assert!(estimate(&model, w, h, 1).total_bytes() <= 4e9 * USABLE_FRACTION);
        assert!(estimate(&model, w + 16, h + 16, 1).total_bytes() > 4e9 * USABLE_FRACTION * 0.9);
        assert_eq!(judge(&model, largest, 1, Some(available)), Verdict::Fits);
        assert_eq!(judge(&model, size, 1, None), Verdict::Fits);
    }

    #[test]
    fn guidance_doubles_the_batch() {
        assert_eq!(unet_batch(1, 1.0), 1);
        assert_eq!(unet_batch(4, 1.5), 8);
    }
}
