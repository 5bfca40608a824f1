//! Changes to a built layer: a new input size, bilinear weights, and batch norm folded into the
//! weights.

use super::DeconvLayer;
use super::plan::Plan;
use crate::backend::Gemm;
use crate::batchnorm::EPSILON;
use crate::element::Element;
use crate::error::{Error, Result};

impl<T: Element, B: Gemm<T>> DeconvLayer<T, B> {
    /// Changes the input size (Darknet `resize_deconvolutional_layer`), reallocating the output,
    /// delta, batch-norm and workspace buffers. Parameters are kept.
    ///
    /// # Errors
    /// The configuration's errors for the new size; the layer is unchanged then.
    pub fn resize(&mut self, in_h: usize, in_w: usize) -> Result<()> {
        let mut config = self.config.clone();
        config.in_h = in_h;
        config.in_w = in_w;
        let g = config.geometry()?;
        let plan = Plan::new(&config, &g)?;
        let total = g.batch() * g.outputs();
        self.output = vec![T::zero(); total];
        self.delta = vec![T::zero(); total];
        if let Some(bn) = &mut self.bn {
            bn.x_norm = vec![T::zero(); total];
        }
        if config.own_workspace {
            self.workspace = vec![T::zero(); plan.own_workspace_len(&g)];
        }
        self.plan = plan;
        self.config = config;
        self.geometry = g;
        self.last_forward = None;
        Ok(())
    }

    /// Sets the weights to the standard bilinear-upsampling kernel (Darknet `bilinear_init`).
    ///
    /// For each axis with kernel `k`, factor `f = ceil(k / 2)` and center `f - 1` (k odd) or
    /// `f - 0.5` (k even), the tap `i` weighs `1 - |i - center| / f`; the kernel is the outer
    /// product, placed on the channel diagonal (input channel `i` to output channel `i`, for `i`
    /// below both channel counts and within one group); every other weight is 0.
    // Darknet omits the `/ f` (a 4x4 kernel gets negative corners) and indexes the weights as
    // `[n][c]`, reaching the diagonal only when c == n; we write the standard kernel on `W[i][i]`.
    pub fn bilinear_init(&mut self) {
        let g = self.geometry;
        let profile = |k: usize, i: usize| {
            let f = k.div_ceil(2) as f64;
            let center = if k % 2 == 1 { f - 1.0 } else { f - 0.5 };
            1.0 - (i as f64 - center).abs() / f
        };
        let [kh, kw] = g.kernel();
        let weights = self.weights.get_mut();
        weights.fill(T::zero());
        for ch in 0..g.in_channels().min(g.filters()) {
            let group = ch / g.group_in();
            if ch / g.group_out() != group {
                continue;
            }
            let local_out = ch - group * g.group_out();
            let base = (ch * g.group_out() + local_out) * kh * kw;
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
        let Some(bn) = self.bn.take() else {
            return Err(Error::InvalidState(
                "denormalize needs a batch-normalized layer".into(),
            ));
        };
        let g = self.geometry;
        let factor: Vec<T> = (0..g.filters())
            .map(|i| bn.scales[i] / (bn.rolling_variance[i].sqrt() + T::of(EPSILON)))
            .collect();
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
        self.config.batch_normalize = false;
        self.last_forward = None;
        Ok(())
    }
}
