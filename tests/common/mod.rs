//! Helpers shared by the integration tests.
#![allow(dead_code)]

use deconv::{Activation, DeconvConfig};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A random valid configuration: stride > kernel, padding, dilation, output padding, groups.
pub fn random_config(rng: &mut ChaCha8Rng) -> DeconvConfig {
    loop {
        let groups = rng.random_range(1..=2);
        let kernel = [rng.random_range(1..=4), rng.random_range(1..=4)];
        let stride = [rng.random_range(1..=3), rng.random_range(1..=3)];
        let dilation = [rng.random_range(1..=2), rng.random_range(1..=2)];
        let pad = [0, 1].map(|a| rng.random_range(0..kernel[a]));
        let op = [0, 1].map(|a| rng.random_range(0..stride[a].max(dilation[a])));
        let config = DeconvConfig::new(
            rng.random_range(1..=3),
            groups * rng.random_range(1..=3),
            rng.random_range(1..=6),
            rng.random_range(1..=6),
            groups * rng.random_range(1..=3),
            1,
        )
        .kernel_hw(kernel[0], kernel[1])
        .stride_hw(stride[0], stride[1])
        .pad_hw(pad[0], pad[1])
        .dilation_hw(dilation[0], dilation[1])
        .output_padding_hw(op[0], op[1])
        .groups(groups)
        .activation(Activation::Linear)
        .seed(rng.random());
        if config.geometry().is_ok() {
            return config;
        }
    }
}

/// Small whole numbers in [-3, 3]: sums of their products are exact in f32 and f64.
pub fn whole(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-3i32..=3) as f64).collect()
}

/// Uniform values in [-1, 1).
pub fn uniform(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

pub fn cast<T: deconv::Element>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::of(x)).collect()
}

/// Largest |a - b| / (1 + |b|).
pub fn max_rel_diff<T: deconv::Element>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let (x, y) = (x.to_f64_lossless(), y.to_f64_lossless());
            (x - y).abs() / (1.0 + y.abs())
        })
        .fold(0.0, f64::max)
}
