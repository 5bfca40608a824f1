//! The optimizer steps (Darknet `update_deconvolutional_layer`): SGD with momentum and weight
//! decay, and Adam.

use super::{DeconvLayer, split3};
use crate::alloc;
use crate::backend::Gemm;
use crate::element::Element;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// The update rule of [`DeconvLayer::update`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer<T> {
    /// SGD with momentum and weight decay, exactly Darknet's `update_deconvolutional_layer`.
    Sgd,
    /// Adam with bias correction, as Darknet's GPU `adam_update_gpu` (its CPU code allocates
    /// Adam's buffers but never uses them). Needs a layer built with `adam(true)`.
    Adam {
        /// Decay of the first moment (Darknet `B1`, default .9).
        beta1: T,
        /// Decay of the second moment (Darknet `B2`, default .999).
        beta2: T,
        /// Added to the root of the second moment (Darknet `eps`, default 1e-7).
        epsilon: T,
    },
}

impl<T: Element> Optimizer<T> {
    /// Adam with Darknet's defaults: `beta1 = .9`, `beta2 = .999`, `epsilon = 1e-7`.
    pub fn adam() -> Self {
        Optimizer::Adam {
            beta1: T::of(0.9),
            beta2: T::of(0.999),
            epsilon: T::of(1e-7),
        }
    }
}

/// Arguments of [`DeconvLayer::update`] (Darknet `update_args`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateArgs<T> {
    /// Learning rate, multiplied by the layer's [`learning_rate_scale`](DeconvLayer::learning_rate_scale).
    pub learning_rate: T,
    /// Momentum (SGD only).
    pub momentum: T,
    /// Weight decay (weights only).
    pub decay: T,
    /// Images the accumulated gradients are summed over (Darknet `batch * subdivisions`).
    pub batch: usize,
    /// The update rule.
    pub optimizer: Optimizer<T>,
}

impl<T: Element> UpdateArgs<T> {
    /// SGD arguments.
    pub fn sgd(learning_rate: T, momentum: T, decay: T, batch: usize) -> Self {
        UpdateArgs {
            learning_rate,
            momentum,
            decay,
            batch,
            optimizer: Optimizer::Sgd,
        }
    }
}

/// Adam's moments (Darknet `m`, `v`, `bias_m`, `bias_v`, `scale_m`, `scale_v`), laid out as the
/// layer's gradients (`[weights | biases | scales]`), and the step count.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct AdamState<T> {
    m: Vec<T>,
    v: Vec<T>,
    step: u64,
}

impl<T: Element> AdamState<T> {
    /// Zero moments for `len` parameters, step 0.
    pub(super) fn new(len: usize) -> Result<Self> {
        Ok(AdamState {
            m: alloc::zeros("Adam first moments", len)?,
            v: alloc::zeros("Adam second moments", len)?,
            step: 0,
        })
    }

    /// Elements the moments hold.
    pub(super) fn held_elements(&self) -> usize {
        self.m.len() + self.v.len()
    }

    /// Keeps the moments of the first `len` parameters.
    pub(super) fn truncate(&mut self, len: usize) {
        self.m.truncate(len);
        self.v.truncate(len);
    }

    pub(super) fn copy_from(&mut self, other: &Self) {
        self.m.copy_from_slice(&other.m);
        self.v.copy_from_slice(&other.v);
        self.step = other.step;
    }
}

/// Which parameters an optimizer buffer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Params {
    /// The weights.
    Weights,
    /// The biases.
    Biases,
    /// The batch-norm scales.
    Scales,
}

impl<T: Element, B: Gemm<T>> DeconvLayer<T, B> {
    /// Applies the accumulated updates (Darknet `update_deconvolutional_layer`).
    ///
    /// With [`Optimizer::Sgd`], exactly Darknet's formulas, `lr = learning_rate * learning_rate_scale`:
    /// `biases += lr/batch * bias_updates; bias_updates *= momentum` (the same for batch-norm
    /// scales), `weight_updates -= decay*batch * weights; weights += lr/batch * weight_updates;
    /// weight_updates *= momentum`.
    ///
    /// With [`Optimizer::Adam`], Darknet's GPU rule for weights, biases and scales alike:
    /// `d = updates - decay*batch * params; m = b1*m + (1-b1)*d; v = b2*v + (1-b2)*d^2;
    /// params += lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps); updates = 0`, where `t`
    /// counts this layer's Adam steps from 1.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for `batch == 0`; [`Error::InvalidState`] for Adam on a
    /// layer built without `adam(true)`.
    pub fn update(&mut self, args: &UpdateArgs<T>) -> Result<()> {
        if args.batch == 0 {
            return Err(Error::InvalidParameter {
                param: "batch",
                reason: "update needs batch >= 1".into(),
            });
        }
        if let Optimizer::Adam { beta1, beta2, .. } = args.optimizer {
            for (param, beta) in [("beta1", beta1), ("beta2", beta2)] {
                if !(beta >= T::zero() && beta < T::one()) {
                    return Err(Error::InvalidParameter {
                        param,
                        reason: format!("Adam's {param} must be in [0, 1), not {beta:?}"),
                    });
                }
            }
        }
        let (wc, n) = (self.geometry.weight_count(), self.geometry.filters());
        let lr = args.learning_rate * self.learning_rate_scale;
        let batch = T::of(args.batch as f64);
        let train = self.train.as_mut().ok_or_else(|| {
            Error::InvalidState(
                "update needs gradient state: the layer was built with training(false)".into(),
            )
        })?;
        let (weight_updates, bias_updates, scale_updates) = split3(&mut train.gradients, wc, n);
        match args.optimizer {
            Optimizer::Sgd => {
                sgd_step(&mut self.biases, bias_updates, lr / batch, args.momentum);
                if let Some(bn) = &mut self.bn {
                    sgd_step(&mut bn.scales, scale_updates, lr / batch, args.momentum);
                }
                let decay = -args.decay * batch;
                weight_updates
                    .par_iter_mut()
                    .zip(self.weights.get_mut().par_iter_mut())
                    .for_each(|(u, w)| {
                        *u += decay * *w;
                        *w += lr / batch * *u;
                        *u *= args.momentum;
                    });
            }
            Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
            } => {
                let Some(adam) = &mut train.adam else {
                    return Err(Error::InvalidState(
                        "Adam needs the layer built with DeconvConfig::adam(true)".into(),
                    ));
                };
                // Saturates instead of wrapping to 0; the corrections are computed in f64 for
                // any step count (an i32 exponent would truncate past 2^31).
                adam.step = adam.step.saturating_add(1);
                let correction =
                    |beta: T| T::of(1.0 - beta.to_f64_lossless().powf(adam.step as f64));
                let rule = AdamRule {
                    beta1,
                    beta2,
                    epsilon,
                    lr,
                    decay: args.decay * batch,
                    correction1: correction(beta1),
                    correction2: correction(beta2),
                };
                let (m, v) = (&mut adam.m, &mut adam.v);
                let (mw, mb, ms) = split3(m, wc, n);
                let (vw, vb, vs) = split3(v, wc, n);
                rule.apply(self.weights.get_mut(), weight_updates, mw, vw);
                rule.apply(&mut self.biases, bias_updates, mb, vb);
                if let Some(bn) = &mut self.bn {
                    rule.apply(&mut bn.scales, scale_updates, ms, vs);
                }
            }
        }
        Ok(())
    }

    /// Adam steps taken so far (Darknet `t`), `None` without Adam buffers.
    pub fn adam_step(&self) -> Option<u64> {
        self.train.as_ref()?.adam.as_ref().map(|a| a.step)
    }

    /// Sets Adam's step count (to restore an optimizer state with
    /// [`adam_moments_mut`](Self::adam_moments_mut)). Any count works: the next step saturates
    /// at `u64::MAX`, where the bias corrections are 1.
    ///
    /// # Errors
    /// [`Error::InvalidState`] when the layer has no Adam buffers.
    pub fn set_adam_step(&mut self, step: u64) -> Result<()> {
        match self.train.as_mut().and_then(|t| t.adam.as_mut()) {
            Some(a) => {
                a.step = step;
                Ok(())
            }
            None => Err(Error::InvalidState(
                "the layer has no Adam buffers: build it with DeconvConfig::adam(true)".into(),
            )),
        }
    }

    /// Adam's first and second moments `(m, v)` for `params` (Darknet `m`/`v`, `bias_m`/`bias_v`,
    /// `scale_m`/`scale_v`); `None` without Adam buffers (empty for scales without batch norm).
    pub fn adam_moments(&self, params: Params) -> Option<(&[T], &[T])> {
        let (wc, n) = (self.geometry.weight_count(), self.geometry.filters());
        let adam = self.train.as_ref()?.adam.as_ref()?;
        let range = params.range(wc, n, adam.m.len());
        Some((&adam.m[range.clone()], &adam.v[range]))
    }

    /// Mutable [`adam_moments`](Self::adam_moments), to restore an optimizer state.
    pub fn adam_moments_mut(&mut self, params: Params) -> Option<(&mut [T], &mut [T])> {
        let (wc, n) = (self.geometry.weight_count(), self.geometry.filters());
        let adam = self.train.as_mut()?.adam.as_mut()?;
        let range = params.range(wc, n, adam.m.len());
        Some((&mut adam.m[range.clone()], &mut adam.v[range]))
    }
}

impl Params {
    /// Where these parameters' values sit in a `[weights | biases | scales]` buffer of `len`.
    fn range(self, weights: usize, filters: usize, len: usize) -> std::ops::Range<usize> {
        match self {
            Params::Weights => 0..weights,
            Params::Biases => weights..weights + filters,
            Params::Scales => weights + filters..len,
        }
    }
}

fn sgd_step<T: Element>(params: &mut [T], updates: &mut [T], rate: T, momentum: T) {
    for (p, u) in params.iter_mut().zip(updates.iter_mut()) {
        *p += rate * *u;
        *u *= momentum;
    }
}

struct AdamRule<T> {
    beta1: T,
    beta2: T,
    epsilon: T,
    lr: T,
    decay: T,
    correction1: T,
    correction2: T,
}

impl<T: Element> AdamRule<T> {
    fn apply(&self, params: &mut [T], updates: &mut [T], m: &mut [T], v: &mut [T]) {
        let one = T::one();
        for (((p, u), m), v) in params
            .iter_mut()
            .zip(updates.iter_mut())
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            let d = *u - self.decay * *p;
            *m = self.beta1 * *m + (one - self.beta1) * d;
            *v = self.beta2 * *v + (one - self.beta2) * d * d;
            let m_hat = *m / self.correction1;
            let v_hat = *v / self.correction2;
            *p += self.lr * m_hat / (v_hat.sqrt() + self.epsilon);
            *u = T::zero();
        }
    }
}
