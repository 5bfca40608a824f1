//! Layer configuration and its validated geometry.
//!
//! Names map to Darknet's `layer` fields: `batch` = `batch`, `in_channels` = `c`, `in_h`/`in_w` =
//! `h`/`w`, `filters` = `n` (= `out_c`), `kernel` = `size`, `stride` = `stride`, `pad` = `pad`.
//! Beyond Darknet (as PyTorch `ConvTranspose2d`): rectangular kernel/stride/pad, `dilation`,
//! `output_padding` and `groups`.

use crate::activation::Activation;
use crate::error::{Error, Result, mul};

/// How the forward pass is computed. The choice is made once, when the layer is built or
/// resized; every algorithm gives the same results (to rounding) and is tested against the
/// direct-loop [`reference`](crate::reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Pick per geometry: phases where the kernel does not tile the output, the layer has few
    /// input channels per group (col2im then costs most next to the GEMM) and each phase class
    /// gives a GEMM of at least 256 rows; columns otherwise.
    #[default]
    Auto,
    /// Darknet's way: one GEMM into a column matrix, then col2im (scatter-add); backward runs
    /// im2col of the delta and two GEMMs, tile by tile (bands of input rows, or blocks of
    /// filters) when an image's columns would not fit a core's cache.
    Columns,
    /// Sub-pixel decomposition: one GEMM per class of output phases, each output pixel written
    /// once, no col2im; backward is the adjoint of the same products, no im2col. Needs
    /// dilation 1 and at most 4096 phases (`stride_h * stride_w`).
    Phases,
    /// No GEMM: each kernel tap adds a whole input plane, shifted, to one phase plane of the
    /// output (one contiguous run of multiply-adds), then the phases are interleaved; the
    /// backward runs the same taps back. For layers with few channels per group (depthwise),
    /// whose work is bound by memory; any geometry. Its workspace is a few planes per task
    /// (phase planes and padded inputs), not a column matrix.
    Direct,
}

/// The input a layer takes: `batch` images of `channels` channels of `h x w`, NCHW.
///
/// Every function of the crate that takes these four sizes takes them in this order, channels
/// before the image size, as [`DeconvConfig::new`] and the C `deconv_config_from_cfg` do; the
/// Darknet readers take this type, whose field names say which is which.
///
/// ```
/// use deconv::InputShape;
///
/// let shape = InputShape { batch: 2, channels: 3, h: 8, w: 16 };
/// assert_eq!(shape, InputShape::new(2, 3, 8, 16));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InputShape {
    /// Images per batch (Darknet `batch`).
    pub batch: usize,
    /// Channels per image (Darknet `c`).
    pub channels: usize,
    /// Height (Darknet `h`).
    pub h: usize,
    /// Width (Darknet `w`).
    pub w: usize,
}

impl InputShape {
    /// `batch` images of `channels` channels of `h x w` (the order of NCHW).
    pub fn new(batch: usize, channels: usize, h: usize, w: usize) -> Self {
        InputShape {
            batch,
            channels,
            h,
            w,
        }
    }
}

/// What a [`DeconvLayer`](crate::DeconvLayer) is built from. Build one with [`DeconvConfig::new`]
/// and the chained setters; [`DeconvConfig::geometry`] validates it.
///
/// Pairs are `[height, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeconvConfig {
    /// Images per batch (Darknet `batch`).
    pub batch: usize,
    /// Input channels (Darknet `c`).
    pub in_channels: usize,
    /// Input height (Darknet `h`).
    pub in_h: usize,
    /// Input width (Darknet `w`).
    pub in_w: usize,
    /// Output channels (Darknet `n`, `filters`).
    pub filters: usize,
    /// Kernel size `[kh, kw]` (Darknet `size`, square).
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]` (default 1).
    pub stride: [usize; 2],
    /// Zero padding removed from each side of the output `[ph, pw]` (default 0).
    pub pad: [usize; 2],
    /// Kernel dilation `[dh, dw]` (default 1; Darknet has none).
    pub dilation: [usize; 2],
    /// Extra rows/columns added to one side of the output `[oh, ow]` (default 0; Darknet has
    /// none). Each must be smaller than the stride or the dilation on its axis.
    pub output_padding: [usize; 2],
    /// Channel groups (default 1; Darknet has none). Both channel counts must be multiples.
    pub groups: usize,
    /// Activation applied last (default [`Activation::Linear`]; Darknet's cfg default is logistic).
    pub activation: Activation,
    /// Batch normalization instead of a plain bias (Darknet `batch_normalize`).
    pub batch_normalize: bool,
    /// Allocate Adam's moment buffers so [`Optimizer::Adam`](crate::Optimizer::Adam) can be used.
    pub adam: bool,
    /// Whether the layer holds gradient state (default `true`): `delta`, the weight, bias and
    /// scale gradients, batch norm's training buffers, and per-thread gradient sums at the
    /// first backward. A layer built with `false` is for inference only: it holds none of
    /// these (its gradient accessors return empty slices) and a training forward, `backward`
    /// or `update` is [`Error::InvalidState`].
    pub training: bool,
    /// Seed of the weight initialization (the layer's RNG is ChaCha8).
    pub seed: u64,
    /// Whether the layer owns a workspace (default `true`). With `false`, forward and backward
    /// need one passed in ([`DeconvLayer::forward_with_workspace`](crate::DeconvLayer::forward_with_workspace)),
    /// so that many layers can share one buffer.
    pub own_workspace: bool,
    /// How the forward pass is computed (default [`Algorithm::Auto`]).
    pub algorithm: Algorithm,
}

impl DeconvConfig {
    /// A square-kernel configuration with Darknet's defaults: stride 1, no padding, dilation 1,
    /// no output padding, 1 group, linear activation, no batch norm, seed 0.
    pub fn new(
        batch: usize,
        in_channels: usize,
        in_h: usize,
        in_w: usize,
        filters: usize,
        kernel: usize,
    ) -> Self {
        DeconvConfig {
            batch,
            in_channels,
            in_h,
            in_w,
            filters,
            kernel: [kernel, kernel],
            stride: [1, 1],
            pad: [0, 0],
            dilation: [1, 1],
            output_padding: [0, 0],
            groups: 1,
            activation: Activation::Linear,
            batch_normalize: false,
            adam: false,
            training: true,
            seed: 0,
            own_workspace: true,
            algorithm: Algorithm::Auto,
        }
    }

    /// Sets a rectangular kernel `[kh, kw]`.
    #[must_use]
    pub fn kernel_hw(mut self, kh: usize, kw: usize) -> Self {
        self.kernel = [kh, kw];
        self
    }
    /// Sets the same stride on both axes.
    #[must_use]
    pub fn stride(self, s: usize) -> Self {
        self.stride_hw(s, s)
    }
    /// Sets the stride per axis.
    #[must_use]
    pub fn stride_hw(mut self, sh: usize, sw: usize) -> Self {
        self.stride = [sh, sw];
        self
    }
    /// Sets the same padding on both axes.
    #[must_use]
    pub fn pad(self, p: usize) -> Self {
        self.pad_hw(p, p)
    }
    /// Sets the padding per axis.
    #[must_use]
    pub fn pad_hw(mut self, ph: usize, pw: usize) -> Self {
        self.pad = [ph, pw];
        self
    }
    /// Sets the same dilation on both axes.
    #[must_use]
    pub fn dilation(self, d: usize) -> Self {
        self.dilation_hw(d, d)
    }
    /// Sets the dilation per axis.
    #[must_use]
    pub fn dilation_hw(mut self, dh: usize, dw: usize) -> Self {
        self.dilation = [dh, dw];
        self
    }
    /// Sets the same output padding on both axes.
    #[must_use]
    pub fn output_padding(self, p: usize) -> Self {
        self.output_padding_hw(p, p)
    }
    /// Sets the output padding per axis.
    #[must_use]
    pub fn output_padding_hw(mut self, oh: usize, ow: usize) -> Self {
        self.output_padding = [oh, ow];
        self
    }
    /// Sets the number of channel groups.
    #[must_use]
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// Sets the activation.
    #[must_use]
    pub fn activation(mut self, a: Activation) -> Self {
        self.activation = a;
        self
    }
    /// Turns batch normalization on or off.
    #[must_use]
    pub fn batch_normalize(mut self, on: bool) -> Self {
        self.batch_normalize = on;
        self
    }
    /// Allocates Adam's buffers (or not).
    #[must_use]
    pub fn adam(mut self, on: bool) -> Self {
        self.adam = on;
        self
    }
    /// Whether the layer can train (see [`DeconvConfig::training`](Self#structfield.training)).
    ///
    /// ```
    /// use deconv::{DeconvConfig, DeconvLayer, Mode};
    ///
    /// let config = DeconvConfig::new(1, 2, 4, 4, 3, 4).stride(2).training(false);
    /// let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config)?;
    /// assert!(layer.weight_updates().is_empty() && layer.delta().is_empty());
    /// layer.forward(&[0.5; 2 * 4 * 4], Mode::Inference)?;
    /// assert!(layer.forward(&[0.5; 2 * 4 * 4], Mode::Train).is_err());
    /// # Ok::<(), deconv::Error>(())
    /// ```
    #[must_use]
    pub fn training(mut self, on: bool) -> Self {
        self.training = on;
        self
    }
    /// Sets the initialization seed.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Whether the layer owns its workspace (see [`DeconvConfig::own_workspace`](Self#structfield.own_workspace)).
    #[must_use]
    pub fn own_workspace(mut self, own: bool) -> Self {
        self.own_workspace = own;
        self
    }

    /// Sets the forward algorithm.
    #[must_use]
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Validates the configuration and computes every size.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the parameter when a size is zero, the output would be
    /// empty, `output_padding` is not smaller than the stride or the dilation, or a channel count
    /// is not a multiple of `groups`; [`Error::Overflow`] when a buffer size overflows `usize`,
    /// or a buffer of `f64`s would take more than half of `isize::MAX` bytes (4 EiB: no machine
    /// has that memory, and `Vec` panics when asked for more than `isize::MAX`).
    pub fn geometry(&self) -> Result<Geometry> {
        let positive = |param: &'static str, v: usize| {
            if v == 0 {
                Err(Error::InvalidParameter {
                    param,
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("batch", self.batch)?;
        positive("in_channels", self.in_channels)?;
        positive("in_h", self.in_h)?;
        positive("in_w", self.in_w)?;
        positive("filters", self.filters)?;
        positive("groups", self.groups)?;
        for axis in 0..2 {
            positive("kernel", self.kernel[axis])?;
            positive("stride", self.stride[axis])?;
            positive("dilation", self.dilation[axis])?;
        }
        for (param, v) in [("in_channels", self.in_channels), ("filters", self.filters)] {
            if v % self.groups != 0 {
                return Err(Error::InvalidParameter {
                    param,
                    reason: format!("{v} is not a multiple of groups = {}", self.groups),
                });
            }
        }
        let mut out = [0usize; 2];
        let input = [self.in_h, self.in_w];
        for axis in 0..2 {
            let (s, d, op) = (
                self.stride[axis],
                self.dilation[axis],
                self.output_padding[axis],
            );
            if op >= s && op >= d {
                return Err(Error::InvalidParameter {
                    param: "output_padding",
                    reason: format!(
                        "{op} must be smaller than the stride ({s}) or the dilation ({d})"
                    ),
                });
            }
            // out = (in - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1
            let full = (input[axis] - 1)
                .checked_mul(s)
                .and_then(|x| x.checked_add(d.checked_mul(self.kernel[axis] - 1)?))
                .and_then(|x| x.checked_add(op + 1))
                .ok_or(Error::Overflow {
                    what: "output size",
                })?;
            let cut = self.pad[axis].checked_mul(2).ok_or(Error::Overflow {
                what: "output size",
            })?;
            if cut >= full {
                return Err(Error::InvalidParameter {
                    param: "pad",
                    reason: format!(
                        "pad {} on {} leaves no output ({full} - 2 * {} <= 0)",
                        self.pad[axis],
                        ["height", "width"][axis],
                        self.pad[axis]
                    ),
                });
            }
            out[axis] = full - cut;
        }
        let [kh, kw] = self.kernel;
        let group_out = self.filters / self.groups;
        let g = Geometry {
            batch: self.batch,
            in_channels: self.in_channels,
            in_h: self.in_h,
            in_w: self.in_w,
            filters: self.filters,
            out_h: out[0],
            out_w: out[1],
            kernel: self.kernel,
            stride: self.stride,
            pad: self.pad,
            dilation: self.dilation,
            output_padding: self.output_padding,
            groups: self.groups,
            inputs: mul("input size", &[self.in_channels, self.in_h, self.in_w])?,
            outputs: mul("output size", &[self.filters, out[0], out[1]])?,
            weight_count: mul("weight count", &[self.in_channels, group_out, kh, kw])?,
            workspace_size: mul("workspace size", &[group_out, kh, kw, self.in_h, self.in_w])?,
        };
        // Whole-batch buffers, and the FLOP count, must be representable too, and every buffer
        // in bytes must be something an allocator may be asked for (`isize::MAX` bytes, for the
        // widest element type): `Vec` panics beyond that.
        let batch_inputs = mul("batch input size", &[g.batch, g.inputs])?;
        let batch_outputs = mul("batch output size", &[g.batch, g.outputs])?;
        let workspaces = mul("workspace size", &[g.workspace_size, g.batch])?;
        mul("FLOP count", &[2, g.workspace_size, g.in_channels, g.batch])?;
        for (what, elements) in [
            ("input size in bytes", batch_inputs),
            ("output size in bytes", batch_outputs),
            ("weights size in bytes", g.weight_count),
            ("workspace size in bytes", workspaces),
        ] {
            // Twice the weights: the tiled backward's transposed copy pads their rows.
            let most = isize::MAX as usize / (2 * MAX_ELEMENT_BYTES);
            if elements > most {
                return Err(Error::Overflow { what });
            }
        }
        Ok(g)
    }
}

/// Bytes of the widest [`Element`](crate::Element) type, `f64`.
const MAX_ELEMENT_BYTES: usize = 8;

/// Validated sizes of a layer, from [`DeconvConfig::geometry`]. Every product of these sizes
/// that the layer uses is known not to overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    batch: usize,
    in_channels: usize,
    in_h: usize,
    in_w: usize,
    filters: usize,
    out_h: usize,
    out_w: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    dilation: [usize; 2],
    output_padding: [usize; 2],
    groups: usize,
    inputs: usize,
    outputs: usize,
    weight_count: usize,
    workspace_size: usize,
}

macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident: $t:ty),* $(,)?) => {
        $( $(#[$doc])* pub fn $name(&self) -> $t { self.$name } )*
    };
}

impl Geometry {
    getters! {
        /// Images per batch (Darknet `batch`).
        batch: usize,
        /// Input channels (Darknet `c`).
        in_channels: usize,
        /// Input height (Darknet `h`).
        in_h: usize,
        /// Input width (Darknet `w`).
        in_w: usize,
        /// Output channels (Darknet `n`, `out_c`).
        filters: usize,
        /// Output height (Darknet `out_h`).
        out_h: usize,
        /// Output width (Darknet `out_w`).
        out_w: usize,
        /// Kernel `[kh, kw]` (Darknet `size`).
        kernel: [usize; 2],
        /// Stride `[sh, sw]`.
        stride: [usize; 2],
        /// Padding `[ph, pw]`.
        pad: [usize; 2],
        /// Dilation `[dh, dw]`.
        dilation: [usize; 2],
        /// Output padding `[oh, ow]`.
        output_padding: [usize; 2],
        /// Channel groups.
        groups: usize,
        /// Elements of one input image, `c * h * w` (Darknet `inputs`).
        inputs: usize,
        /// Elements of one output image, `n * out_h * out_w` (Darknet `outputs`).
        outputs: usize,
        /// Elements of the weights, laid out `[in_channels][filters / groups][kh][kw]`
        /// (Darknet `nweights`).
        weight_count: usize,
        /// Elements of one group's column matrix, `(filters / groups) * kh * kw * h * w`
        /// (Darknet's workspace: `h*w*size*size*n` floats): the column algorithm's need. Allocate
        /// [`DeconvLayer::workspace_size`](crate::DeconvLayer::workspace_size), which is the
        /// need of the algorithm the layer chose.
        workspace_size: usize,
    }

    /// Input channels per group.
    pub fn group_in(&self) -> usize {
        self.in_channels / self.groups
    }
    /// Output channels per group.
    pub fn group_out(&self) -> usize {
        self.filters / self.groups
    }
    /// Kernel taps `kh * kw`.
    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
    /// Input pixels per channel `h * w`.
    pub fn in_area(&self) -> usize {
        self.in_h * self.in_w
    }
    /// Output pixels per channel `out_h * out_w`.
    pub fn out_area(&self) -> usize {
        self.out_h * self.out_w
    }
    /// Rows of one group's column matrix: `(filters / groups) * kh * kw`.
    pub fn col_rows(&self) -> usize {
        self.group_out() * self.taps()
    }
    /// The window that maps a group's column matrix onto its output planes.
    pub fn window(&self) -> crate::im2col::Window {
        crate::im2col::Window {
            kernel: self.kernel,
            stride: self.stride,
            pad: self.pad,
            dilation: self.dilation,
            small: [self.in_h, self.in_w],
            big: [self.out_h, self.out_w],
        }
    }
    /// FLOPs of one forward pass: `2 * kh*kw * (n / groups) * h*w * c * batch`.
    pub fn forward_flops(&self) -> u64 {
        2 * (self.workspace_size * self.in_channels * self.batch) as u64
    }
}
