//! The optimizer steps (Darknet `update_deconvolutional_layer`): SGD with momentum and weight
//! decay, and Adam.

use super::DeconvLayer;
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

/// Adam's moments (Darknet `m`, `v`, `bias_m`, `bias_v`, `scale_m`, `scale_v`) and step count.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct AdamState<T> {
    pub(super) weights: Moments<T>,
    pub(super) biases: Moments<T>,
    pub(super) scales: Moments<T>,
    pub(super) step: u64,
}

impl<T> AdamState<T> {
    pub(super) fn moments(&self, params: Params) -> &Moments<T> {
        match params {
            Params::Weights => &self.weights,
            Params::Biases => &self.biases,
            Params::Scales => &self.scales,
        }
    }
    pub(super) fn moments_mut(&mut self, params: Params) -> &mut Moments<T> {
        match params {
            Params::Weights => &mut self.weights,
            Params::Biases => &mut self.biases,
            Params::Scales => &mut self.scales,
        }
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

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Moments<T> {
    pub(super) m: Vec<T>,
    pub(super) v: Vec<T>,
}

impl<T: Element> Moments<T> {
    pub(super) fn new(len: usize) -> Self {
        Moments {
            m: vec![T::zero(); len],
            v: vec![T::zero(); len],
        }
    }
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
        let lr = args.learning_rate * self.learning_rate_scale;
        let batch = T::of(args.batch as f64);
        match args.optimizer {
            Optimizer::Sgd => {
                sgd_step(
                    &mut self.biases,
                    &mut self.bias_updates,
                    lr / batch,
                    args.momentum,
                );
                if let Some(bn) = &mut self.bn {
                    sgd_step(
                        &mut bn.scales,
                        &mut bn.scale_updates,
                        lr / batch,
                        args.momentum,
                    );
                }
                let decay = -args.decay * batch;
                self.weight_updates
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
                let Some(adam) = &mut self.adam else {
                    return Err(Error::InvalidState(
                        "Adam needs the layer built with DeconvConfig::adam(true)".into(),
                    ));
                };
                adam.step += 1;
                let rule = AdamRule {
                    beta1,
                    beta2,
                    epsilon,
                    lr,
                    decay: args.decay * batch,
                    correction1: T::one() - beta1.powi(adam.step as i32),
                    correction2: T::one() - beta2.powi(adam.step as i32),
                };
                rule.apply(
                    self.weights.get_mut(),
                    &mut self.weight_updates,
                    &mut adam.weights,
                );
                rule.apply(&mut self.biases, &mut self.bias_updates, &mut adam.biases);
                if let Some(bn) = &mut self.bn {
                    rule.apply(&mut bn.scales, &mut bn.scale_updates, &mut adam.scales);
                }
            }
        }
        Ok(())
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
    fn apply(&self, params: &mut [T], updates: &mut [T], moments: &mut Moments<T>) {
        let one = T::one();
        for (((p, u), m), v) in params
            .iter_mut()
            .zip(updates.iter_mut())
            .zip(moments.m.iter_mut())
            .zip(moments.v.iter_mut())
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
