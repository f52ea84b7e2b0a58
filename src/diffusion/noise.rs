//! Fixed noise per seed: drawn once and reused for every frame (the first defence against flicker in live
//! video), and the reason the same seed gives the same image.
//!
//! Tensor 0 noises the encoded image to the first timestep; tensor i (i >= 1) re-noises after step i. The
//! generator is ChaCha8 (portable and reproducible across machines and releases of `rand`), one stream per
//! seed, filled in that order.

use ndarray::{Array4, ArrayView4};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

#[derive(Clone, Debug)]
pub struct NoiseBank {
    seed: u64,
    shape: (usize, usize, usize, usize),
    tensors: Vec<Array4<f32>>,
}

impl NoiseBank {
    /// Noise for `count` uses (1 + steps - 1 = steps) of latents of `shape`.
    pub fn new(seed: u64, shape: (usize, usize, usize, usize), count: usize) -> NoiseBank {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let tensors =
            (0..count).map(|_| Array4::from_shape_simple_fn(shape, || StandardNormal.sample(&mut rng))).collect();
        NoiseBank { seed, shape, tensors }
    }

    /// Noise given explicitly (golden tests feed the reference implementation's noise).
    pub fn from_tensors(tensors: Vec<Array4<f32>>) -> NoiseBank {
        let shape = tensors.first().map(|t| t.dim()).unwrap_or((0, 0, 0, 0));
        NoiseBank { seed: u64::MAX, shape, tensors }
    }

    /// Reuse when seed and shape match and there is enough of it.
    pub fn fits(&self, seed: u64, shape: (usize, usize, usize, usize), count: usize) -> bool {
        self.seed == seed && self.shape == shape && self.tensors.len() >= count
    }

    pub fn shape(&self) -> (usize, usize, usize, usize) {
        self.shape
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn get(&self, i: usize) -> ArrayView4<'_, f32> {
        self.tensors[i].view()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_and_roughly_standard_normal() {
        let a = NoiseBank::new(7, (1, 4, 16, 16), 2);
        let b = NoiseBank::new(7, (1, 4, 16, 16), 2);
        let c = NoiseBank::new(8, (1, 4, 16, 16), 2);
        assert_eq!(a.get(0), b.get(0));
        assert_eq!(a.get(1), b.get(1));
        assert_ne!(a.get(0), c.get(0));
        assert_ne!(a.get(0), a.get(1));
        let n = a.get(0).len() as f32;
        let mean = a.get(0).sum() / n;
        let var = a.get(0).mapv(|x| (x - mean) * (x - mean)).sum() / n;
        assert!(mean.abs() < 0.1, "{mean}");
        assert!((var - 1.0).abs() < 0.15, "{var}");
    }
}
