//! Changes to a built layer: a new input size, bilinear weights, and batch norm folded into the
//! weights.

use super::DeconvLayer;
use super::plan::Plan;
use crate::alloc;
use crate::backend::Gemm;
use crate::batchnorm::EPSILON;
use crate::element::Element;
use crate::error::{Error, Result};

impl<T: Element, B: Gemm<T>> DeconvLayer<T, B> {
    /// Changes the input size (Darknet `resize_deconvolutional_layer`), reallocating the output,
    /// delta, batch-norm and workspace buffers. Parameters are kept.
    ///
    /// # Errors
    /// The configuration's errors for the new size, [`Error::Allocation`] when the new buffers
    /// do not fit; the layer is unchanged then (the new buffers are all reserved before the
    /// old ones go).
    pub fn resize(&mut self, in_h: usize, in_w: usize) -> Result<()> {
        let mut config = self.config.clone();
        config.in_h = in_h;
        config.in_w = in_w;
        let g = config.geometry()?;
        let mut plan = Plan::new(&config, &g)?;
        let back = plan.backward_for(&config, &g);
        let what = "the resized layer's buffers";
        let plans = (&plan, back.as_ref());
        let workspace_len = super::memory::sized_workspace(&config, &g, plans, what)?;
        plan.reserve_forward(&g)?;
        let total = g.batch() * g.outputs();
        let output = alloc::zeros("output", total)?;
        let delta = match self.train {
            Some(_) => alloc::zeros("delta", total)?,
            None => Vec::new(),
        };
        let x_norm = match (&self.bn, &self.train) {
            (Some(_), Some(_)) => alloc::zeros("x_norm", total)?,
            _ => Vec::new(),
        };
        let workspace = alloc::zeros("workspace", workspace_len)?;
        self.output = output;
        if let Some(t) = &mut self.train {
            t.delta = delta;
        }
        if let Some(bn) = &mut self.bn {
            bn.x_norm = x_norm;
        }
        self.workspace = workspace;
        self.plan = plan;
        self.back = back;
        self.config = config;
        self.geometry = g;
        self.last_forward = None;
        Ok(())
    }

    /// Sets the weights to the standard bilinear-upsampling kernel (Darknet `bilinear_init`).
    ///
    /// For each axis with kernel `k`, factor `f = ceil(k / 2)` and center `f - 1` (k odd) or
    /// `f - 0.5` (k even), the tap `i` weighs `1 - |i - center| / f`; the kernel is the outer
    /// product. As in Darknet, every filter gets it, from one input channel: filter `f` reads
    /// channel `f % in_channels` (within its group: local filter `f` reads the group's local
    /// channel `f % (in_channels / groups)`); every other weight is 0. With as many filters as
    /// channels that is the channel diagonal; with more filters, channels are read again.
    // Darknet omits the `/ f` (a 4x4 kernel gets negative corners) and writes at
    // `f*k*k*c + (f%c)*k*k`, i.e. indexes the weights `[n][c]` although they are `[c][n]`; we
    // write the standard kernel on `W[f % c][f]`.
    pub fn bilinear_init(&mut self) {
        let g = self.geometry;
        let profile = |k: usize, i: usize| {
            let f = k.div_ceil(2) as f64;
            let center = if k % 2 == 1 { f - 1.0 } else { f - 0.5 };
            1.0 - (i as f64 - center).abs() / f
        };
        let [kh, kw] = g.kernel();
        let (cg, ng) = (g.group_in(), g.group_out());
        let weights = self.weights.get_mut();
        weights.fill(T::zero());
        for filter in 0..g.filters() {
            let (group, local) = (filter / ng, filter % ng);
            let channel = group * cg + local % cg;
            let base = (channel * ng + local) * kh * kw;
            for i in 0..kh {
                for j in 0..kw {
                    weights[base + i * kw + j] = T::of(profile(kh, i) * profile(kw, j));
                }
            }
        }
    }

    /// Folds batch norm into the weights and biases (Darknet `denormalize_deconvolutional_layer`)
    /// and turns batch norm off, so that inference gives the same output as the normalized layer
    /// did (to rounding).
    ///
    /// Filter `i` gets the factor `s = scales[i] / (sqrt(rolling_variance[i]) + 1e-6)`, the
    /// epsilon of the forward pass: `W[c][i] *= s` for every input channel `c`, and
    /// `biases[i] -= rolling_mean[i] * s`.
    // Darknet scales `weights[i*c*k*k ..]`, i.e. indexes them `[n][c*k*k]` although they are
    // `[c][n][k][k]`, and uses `sqrt(var + 1e-5)`: its folded layer does not reproduce its output.
    ///
    /// # Errors
    /// [`Error::InvalidState`] when the layer has no batch norm.
    pub fn denormalize(&mut self) -> Result<()> {
        let Some(mut bn) = self.bn.take() else {
            return Err(Error::InvalidState(
                "denormalize needs a batch-normalized layer".into(),
            ));
        };
        let g = self.geometry;
        // The per-filter factors, in a buffer batch norm no longer needs.
        let factor = &mut bn.inference_mul;
        for (i, f) in factor.iter_mut().enumerate() {
            *f = bn.scales[i] / (bn.rolling_variance[i].sqrt() + T::of(EPSILON));
        }
        let (ng, taps) = (g.group_out(), g.taps());
        for (row, w) in self.weights.get_mut().chunks_mut(taps).enumerate() {
            // Row = (c, local filter); its filter is local + group(c) * ng.
            let (c, local) = (row / ng, row % ng);
            let filter = c / g.group_in() * ng + local;
            w.iter_mut().for_each(|x| *x *= factor[filter]);
        }
        for (i, b) in self.biases.iter_mut().enumerate() {
            *b -= bn.rolling_mean[i] * factor[i];
        }
        // The scales' part of the gradients (and of Adam's moments) goes with batch norm.
        if let Some(t) = &mut self.train {
            let params = g.weight_count() + g.filters();
            t.gradients.truncate(params);
            if let Some(adam) = &mut t.adam {
                adam.truncate(params);
            }
        }
        self.config.batch_normalize = false;
        self.last_forward = None;
        Ok(())
    }
}
