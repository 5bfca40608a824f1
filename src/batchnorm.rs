//! Batch normalization over `[batch][channels][spatial]` data, with Darknet's CPU numbers.
//!
//! Forward (Darknet `forward_batchnorm_layer`, `blas.c`):
//! - training: per-channel mean over batch and spatial, **unbiased** variance (`/(N-1)`,
//!   `N = batch * spatial`), `x_hat = (x - mean) / (sqrt(var) + 1e-6)` (epsilon on the standard
//!   deviation), `y = scale * x_hat + bias`; rolling statistics `.99 * old + .01 * batch_stat`.
//! - inference: the same normalization with the rolling statistics.
//!
//! Backward is the exact gradient of that forward. Darknet's `backward_batchnorm_layer` instead
//! uses `1/sqrt(var + 1e-5)` and divides by `N` where its forward used `N - 1`, so its gradient is
//! not the gradient of its own forward; we differ on purpose (tested against finite differences).

use crate::activation::Activation;
use crate::alloc;
use crate::element::Element;
use crate::error::{Error, Result, check_len};
use crate::reduce::{sum, sum_sq_dev};
use crate::simd::multiversion;
use rayon::prelude::*;

/// Darknet's epsilon, added to the standard deviation.
pub const EPSILON: f64 = 1e-6;
/// Weight of the old value in the rolling statistics.
pub const ROLLING_MOMENTUM: f64 = 0.99;

/// The parameters and statistics of one batch-normalized layer (`channels` = filters). The
/// scale gradient lives with the layer's other gradients.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchNorm<T> {
    /// Per-channel scale (gamma, Darknet `scales`), initialized to 1.
    pub(crate) scales: Vec<T>,
    /// Last training batch's mean (Darknet `mean`).
    pub(crate) mean: Vec<T>,
    /// Last training batch's unbiased variance (Darknet `variance`).
    pub(crate) variance: Vec<T>,
    /// Rolling mean used in inference (Darknet `rolling_mean`).
    pub(crate) rolling_mean: Vec<T>,
    /// Rolling variance used in inference (Darknet `rolling_variance`).
    pub(crate) rolling_variance: Vec<T>,
    /// Normalized values of the last training forward, `[batch][channels][spatial]` (Darknet
    /// `x_norm`); empty in a layer that does not train.
    pub(crate) x_norm: Vec<T>,
    /// Backward scratch: per channel `sum(delta)`, then per channel `sum(delta * x_hat)`
    /// (`2 * channels`, one slice to sum across processes), kept so that backward does not
    /// allocate.
    sums: Vec<T>,
    /// Inference: per channel, the multiplier and offset of the whole normalization (see
    /// [`BatchNorm::set_inference_affine`]).
    pub(crate) inference_mul: Vec<T>,
    pub(crate) inference_add: Vec<T>,
    /// Backward: per channel, the coefficients `(a, b, corr)` of the input gradient
    /// `d * a + b - x_hat * corr` (see [`BatchNorm::backward_sums`]).
    coefficients: Vec<(T, T, T)>,
    /// Per `[image][channel]` plane: `(mean, sum of squared deviations)`, filled by the
    /// training forward pass as each plane is computed; backward reuses it for the planes'
    /// `(sum(delta), sum(delta * x_hat))`. Empty in a layer that does not train.
    pub(crate) plane_stats: Vec<(T, T)>,
}

impl<T: Element> BatchNorm<T> {
    /// Darknet's initial state: scales 1, statistics 0, for `total` activations per batch of
    /// `batch` images; the training buffers (`x_norm`, per-plane statistics) only if `training`.
    pub(crate) fn new(channels: usize, total: usize, batch: usize, training: bool) -> Result<Self> {
        let per_batch = |n: usize| if training { n } else { 0 };
        Ok(BatchNorm {
            scales: alloc::filled("scales", channels, T::one())?,
            mean: alloc::zeros("mean", channels)?,
            variance: alloc::zeros("variance", channels)?,
            rolling_mean: alloc::zeros("rolling_mean", channels)?,
            rolling_variance: alloc::zeros("rolling_variance", channels)?,
            x_norm: alloc::zeros("x_norm", per_batch(total))?,
            sums: alloc::zeros("batch-norm sums", per_batch(2 * channels))?,
            coefficients: alloc::filled(
                "batch-norm coefficients",
                per_batch(channels),
                Default::default(),
            )?,
            inference_mul: alloc::zeros("batch-norm inference factors", channels)?,
            inference_add: alloc::zeros("batch-norm inference offsets", channels)?,
            plane_stats: alloc::filled(
                "batch-norm plane statistics",
                per_batch(channels * batch),
                Default::default(),
            )?,
        })
    }

    /// Elements (of `T`, counting a pair as two and a triple as three) that [`new`](Self::new)
    /// reserves.
    pub(crate) fn elements(channels: usize, total: usize, batch: usize, training: bool) -> u128 {
        let (c, t, b) = (channels as u128, total as u128, batch as u128);
        7 * c + if training { t + 5 * c + 2 * c * b } else { 0 }
    }

    /// Elements (counting a pair as two and a triple as three) the buffers hold now.
    pub(crate) fn held_elements(&self) -> usize {
        let singles = [
            &self.scales,
            &self.mean,
            &self.variance,
            &self.rolling_mean,
            &self.rolling_variance,
            &self.x_norm,
            &self.inference_mul,
            &self.inference_add,
            &self.sums,
        ];
        singles.iter().map(|v| v.len()).sum::<usize>()
            + 2 * self.plane_stats.len()
            + 3 * self.coefficients.len()
    }

    /// Copies every value of `other` (same sizes) into `self`.
    pub(crate) fn copy_from(&mut self, other: &Self) {
        self.scales.copy_from_slice(&other.scales);
        self.mean.copy_from_slice(&other.mean);
        self.variance.copy_from_slice(&other.variance);
        self.rolling_mean.copy_from_slice(&other.rolling_mean);
        self.rolling_variance
            .copy_from_slice(&other.rolling_variance);
        self.x_norm.copy_from_slice(&other.x_norm);
        self.sums.copy_from_slice(&other.sums);
        self.inference_mul.copy_from_slice(&other.inference_mul);
        self.inference_add.copy_from_slice(&other.inference_add);
        self.coefficients.copy_from_slice(&other.coefficients);
        self.plane_stats.copy_from_slice(&other.plane_stats);
    }

    /// Training forward on `data` in place: statistics (combined from `plane_stats`, which the
    /// caller filled for these planes, and over every process of `synced`), rolling update,
    /// normalize, then `activation(scale * x_hat + bias)`. Keeps `x_hat` for backward. The
    /// batch (all processes') times `spatial` must be at least 2 (checked by the layer).
    ///
    /// # Errors
    /// Those of `synced`'s sum; `data` is then not normalized, the statistics are not updated.
    pub(crate) fn forward_train(
        &mut self,
        data: &mut [T],
        biases: &[T],
        spatial: usize,
        activation: Activation,
        synced: Option<Synced<'_, T>>,
    ) -> Result<()> {
        let channels = self.scales.len();
        combine_plane_stats(
            &self.plane_stats,
            spatial,
            &mut self.mean,
            &mut self.variance,
            synced,
        )?;
        let keep = T::of(ROLLING_MOMENTUM);
        let take = T::one() - keep;
        for f in 0..channels {
            self.rolling_mean[f] = keep * self.rolling_mean[f] + take * self.mean[f];
            self.rolling_variance[f] = keep * self.rolling_variance[f] + take * self.variance[f];
        }
        let (mean, var, scales) = (&self.mean, &self.variance, &self.scales);
        data.par_chunks_mut(spatial)
            .zip(self.x_norm.par_chunks_mut(spatial))
            .enumerate()
            .for_each(|(p, (plane, norm))| {
                let f = p % channels;
                let inv = (var[f].sqrt() + T::of(EPSILON)).recip();
                let normalize = (inv, -mean[f] * inv);
                activation.normalize_affine(plane, norm, normalize, (scales[f], biases[f]));
            });
        Ok(())
    }

    /// Inference: sets `inference_mul` and `inference_add` so that `x * mul[f] + add[f]` is
    /// the normalization with the rolling statistics, scaled and shifted by `biases` (the layer
    /// applies it to each plane as it is finished, followed by the activation).
    pub(crate) fn set_inference_affine(&mut self, biases: &[T]) {
        let per_channel = self
            .inference_mul
            .iter_mut()
            .zip(self.inference_add.iter_mut())
            .zip(biases);
        for (f, ((m, a), &bias)) in per_channel.enumerate() {
            let inv = (self.rolling_variance[f].sqrt() + T::of(EPSILON)).recip();
            // (x - mean) * inv * scale + bias, as one multiply-add per element.
            *m = inv * self.scales[f];
            *a = bias - self.rolling_mean[f] * *m;
        }
    }

    /// Backward of the last training forward, from `delta` at the activation's `output`, in two
    /// halves. This batch-wide half applies the activation's gradient to `delta`, accumulates
    /// `bias_updates` and `scale_updates` (`+=`, descent direction like `delta`) and sets the
    /// per-channel coefficients with which [`backward_image`](Self::backward_image) then turns
    /// each image's `delta` into the gradient w.r.t. the BN input, in place (the layer does so
    /// just before that image's own backward, while the image is in cache). With `synced`, the
    /// sums are this process's in the gradients and all processes' in the coefficients.
    ///
    /// # Errors
    /// Those of `synced`'s sum.
    pub(crate) fn backward_sums(
        &mut self,
        delta: &mut [T],
        output: &[T],
        activation: Activation,
        (bias_updates, scale_updates): (&mut [T], &mut [T]),
        spatial: usize,
        synced: Option<Synced<'_, T>>,
    ) -> Result<()> {
        let channels = self.scales.len();
        let images = synced.map_or(delta.len() / (channels * spatial), |s| s.batch);
        let n = T::of((images * spatial) as f64);
        // Per plane, in one pass: the activation's gradient, then sum(delta) and
        // sum(delta * x_hat); combined per channel below.
        delta
            .par_chunks_mut(spatial)
            .zip(output.par_chunks(spatial))
            .zip(self.x_norm.par_chunks(spatial))
            .zip(self.plane_stats.par_iter_mut())
            .for_each(|(((d, y), x), s)| *s = activation.gradient_sum_and_dot(y, d, x));
        let (sums, dots) = self.sums.split_at_mut(channels);
        for (f, (s, d)) in sums.iter_mut().zip(dots.iter_mut()).enumerate() {
            (*s, *d) = (T::zero(), T::zero());
            for &(a, b) in self.plane_stats.iter().skip(f).step_by(channels) {
                *s += a;
                *d += b;
            }
        }
        // This process's part of the gradients: summed over processes with the others.
        for (u, &s) in bias_updates.iter_mut().zip(&*sums) {
            *u += s;
        }
        for (u, &d) in scale_updates.iter_mut().zip(&*dots) {
            *u += d;
        }
        if let Some(synced) = synced {
            (synced.sum)(&mut self.sums)?;
        }
        let (sums, dots) = self.sums.split_at(channels);
        let per_channel = sums
            .iter()
            .zip(dots)
            .zip(&self.scales)
            .zip(&self.variance)
            .zip(self.coefficients.iter_mut());
        for ((((&sum, &dot), &scale), &var), coef) in per_channel {
            let sigma = var.sqrt();
            // With g = scale * delta (gradient w.r.t. x_hat):
            // dx = (g - mean(g)) / (sigma + eps) - x_hat * sum(g * x_hat) / ((N - 1) * sigma).
            let inv = (sigma + T::of(EPSILON)).recip();
            let mean_g = scale * sum / n;
            // A constant channel has x_hat == 0 everywhere: the second term vanishes.
            let corr = if sigma > T::zero() {
                scale * dot / ((n - T::one()) * sigma)
            } else {
                T::zero()
            };
            *coef = (scale * inv, -mean_g * inv, corr);
        }
        Ok(())
    }

    /// The per-image half of the backward: turns image `b`'s `delta` (`channels * spatial`,
    /// after [`backward_sums`](Self::backward_sums)) into the gradient w.r.t. the BN input.
    pub(crate) fn backward_image(&self, delta: &mut [T], b: usize, spatial: usize, parallel: bool) {
        let image = delta.len();
        let x_norm = &self.x_norm[b * image..][..image];
        let one = |(f, (d, x)): (usize, (&mut [T], &[T]))| {
            let (a, shift, corr) = self.coefficients[f];
            backward_kernel(d, x, a, shift, corr);
        };
        if parallel {
            delta
                .par_chunks_mut(spatial)
                .zip(x_norm.par_chunks(spatial))
                .enumerate()
                .for_each(one);
        } else {
            delta
                .chunks_mut(spatial)
                .zip(x_norm.chunks(spatial))
                .enumerate()
                .for_each(one);
        }
    }
}

multiversion! {
/// `norm = x * inv + shift`, then `x = norm`: with `affine_slice` after it, the reference that
/// the fused `Activation::normalize_affine` is tested against.
#[cfg(test)]
fn normalize_kernel<T: Element>(x: &mut [T], norm: &mut [T], inv: T, shift: T) {
    for (n, v) in norm.iter_mut().zip(x.iter_mut()) {
        *n = *v * inv + shift;
        *v = *n;
    }
}
}

multiversion! {
/// `d = d * a + b - x_hat * corr`: the input gradient of batch norm, per element.
fn backward_kernel<T: Element>(d: &mut [T], x_hat: &[T], a: T, b: T, corr: T) {
    for (d, &x) in d.iter_mut().zip(x_hat) {
        *d = *d * a + b - x * corr;
    }
}
}

/// Per-channel mean and unbiased variance from per-plane `(mean, sum of squared deviations)`
/// of `[batch][channels][spatial]` planes of `spatial` values each (Chan et al.'s pairwise
/// combination: exact, and as stable as the two-pass formula within each plane). With
/// `synced`, over the planes of every process: the sums of the plane means, then of the
/// squared deviations from the mean of all, are summed across processes.
fn combine_plane_stats<T: Element>(
    planes: &[(T, T)],
    spatial: usize,
    mean: &mut [T],
    variance: &mut [T],
    synced: Option<Synced<'_, T>>,
) -> Result<()> {
    let channels = mean.len();
    let batch = synced.map_or(planes.len() / channels, |s| s.batch);
    let n = T::of(spatial as f64);
    let count = T::of((batch * spatial) as f64);
    let of_f = |f: usize| planes.iter().skip(f).step_by(channels);
    for (f, m) in mean.iter_mut().enumerate() {
        *m = of_f(f).map(|s| s.0).sum::<T>();
    }
    if let Some(synced) = synced {
        (synced.sum)(mean)?;
    }
    for m in mean.iter_mut() {
        *m = *m / T::of(batch as f64);
    }
    for (f, v) in variance.iter_mut().enumerate() {
        let m = mean[f];
        *v = of_f(f)
            .map(|&(pm, pm2)| pm2 + n * (pm - m) * (pm - m))
            .sum();
    }
    if let Some(synced) = synced {
        (synced.sum)(variance)?;
    }
    for v in variance.iter_mut() {
        *v = *v / (count - T::one());
    }
    Ok(())
}

/// Synchronized batch norm: the per-channel sums of a training forward and backward are summed
/// over every process that holds a part of the batch, by `sum` (an allreduce that gives every
/// process the same result), so that each normalizes with the statistics of the whole batch of
/// `batch` images.
#[derive(Clone, Copy)]
pub(crate) struct Synced<'a, T> {
    /// Sums a slice element by element over the processes, in place.
    pub(crate) sum: &'a dyn Fn(&mut [T]) -> Result<()>,
    /// Images in the whole batch, over all processes.
    pub(crate) batch: usize,
}

/// Per-channel mean and unbiased variance of `[batch][channels][spatial]` data (Darknet
/// `mean_cpu` and `variance_cpu`).
///
/// # Example
/// ```
/// use deconv::batchnorm::channel_stats;
///
/// // 2 images of 2 channels of 2 values.
/// let data = [1.0, 3.0, 10.0, 10.0, 5.0, 7.0, 10.0, 10.0];
/// let (mut mean, mut var) = ([0.0; 2], [0.0; 2]);
/// channel_stats(&data, 2, 2, &mut mean, &mut var)?;
/// assert_eq!(mean, [4.0, 10.0]);
/// assert_eq!(var, [20.0 / 3.0, 0.0]);
/// # Ok::<(), deconv::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidParameter`] for 0 channels, 0 values per plane, or fewer than 2 values per
/// channel (the unbiased variance divides by `N - 1`); [`Error::BufferLength`] when `data` is
/// not a whole number of `channels * spatial` images or `mean` / `variance` do not have
/// `channels` elements.
pub fn channel_stats<T: Element>(
    data: &[T],
    channels: usize,
    spatial: usize,
    mean: &mut [T],
    variance: &mut [T],
) -> Result<()> {
    let invalid = |param, reason: &str| {
        Err(Error::InvalidParameter {
            param,
            reason: reason.into(),
        })
    };
    if channels == 0 {
        return invalid("channels", "must be at least 1");
    }
    if spatial == 0 {
        return invalid("spatial", "must be at least 1");
    }
    check_len("mean", channels, mean.len())?;
    check_len("variance", channels, variance.len())?;
    let image = crate::error::mul("image size", &[channels, spatial])?;
    check_len("data", data.len().next_multiple_of(image), data.len())?;
    if data.len() / channels < 2 {
        return invalid("data", "needs at least 2 values per channel");
    }
    let count = T::of((data.len() / channels) as f64);
    mean.par_iter_mut()
        .zip(variance.par_iter_mut())
        .enumerate()
        .for_each(|(f, (m, v))| {
            let planes = || data.chunks(spatial).skip(f).step_by(channels);
            *m = planes().map(sum).sum::<T>() / count;
            *v = planes().map(|p| sum_sq_dev(p, *m)).sum::<T>() / (count - T::one());
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused normalization gives the same bits as normalizing, then the affine map and
    /// activation.
    #[test]
    fn fused_normalize_equals_normalize_then_affine() {
        fn check<T: Element>(to_bits: fn(T) -> u64) {
            for act in Activation::ALL {
                for len in [0, 1, 7, 8, 9, 64, 1003] {
                    let x: Vec<T> = (0..len)
                        .map(|i| T::of(((i as f64 + 0.3) * 0.7).sin() * 5.0 + 1.0))
                        .collect();
                    let (inv, shift, mul, add) = (T::of(0.8), T::of(-0.7), T::of(1.3), T::of(0.2));
                    let (mut want, mut want_norm) = (x.clone(), vec![T::zero(); len]);
                    normalize_kernel(&mut want, &mut want_norm, inv, shift);
                    act.affine_slice(&mut want, mul, add);
                    let (mut got, mut got_norm) = (x.clone(), vec![T::zero(); len]);
                    act.normalize_affine(&mut got, &mut got_norm, (inv, shift), (mul, add));
                    let bits = |v: &[T]| v.iter().map(|&t| to_bits(t)).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{act} len {len}: output");
                    assert_eq!(bits(&got_norm), bits(&want_norm), "{act} len {len}: x_norm");
                }
            }
        }
        check::<f32>(|v| u64::from(v.to_bits()));
        check::<f64>(f64::to_bits);
    }

    /// The statistics the training forward combines from per-plane parts equal the direct
    /// two-pass statistics (Darknet's `mean_cpu` / `variance_cpu`).
    #[test]
    fn combined_plane_stats_equal_two_pass_stats() {
        let (batch, channels, spatial) = (3, 4, 37);
        let data: Vec<f64> = (0..batch * channels * spatial)
            .map(|i| ((i * 7919 % 1013) as f64 / 97.0).sin() * 3.0 + (i % 5) as f64)
            .collect();
        let (mut m1, mut v1) = (vec![0.0; channels], vec![0.0; channels]);
        channel_stats(&data, channels, spatial, &mut m1, &mut v1).unwrap();
        let planes: Vec<(f64, f64)> = data
            .chunks(spatial)
            .map(|p| {
                let m = sum(p) / spatial as f64;
                (m, sum_sq_dev(p, m))
            })
            .collect();
        let (mut m2, mut v2) = (vec![0.0; channels], vec![0.0; channels]);
        combine_plane_stats(&planes, spatial, &mut m2, &mut v2, None).unwrap();
        for f in 0..channels {
            assert!(
                (m1[f] - m2[f]).abs() < 1e-12,
                "mean {f}: {} vs {}",
                m1[f],
                m2[f]
            );
            assert!(
                (v1[f] - v2[f]).abs() < 1e-12 * v1[f].abs().max(1.0),
                "variance {f}"
            );
        }
    }
}
