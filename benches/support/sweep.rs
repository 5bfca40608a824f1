//! The shape sweep: layers a user meets, from real networks, shared by `benches/sweep.rs`
//! (criterion), `examples/sweep` (the sweep report: every algorithm, `Auto`'s choice, the GEMM
//! ceiling) and, through `examples/sweep -- --list`, `benches/peers.py` (PyTorch and ONNX
//! Runtime on the same shapes). This file is the one list; nothing else names a sweep shape.
//!
//! Each shape says where it comes from. Where the network's own size would make one call take
//! more than a few tens of milliseconds on 2 cores, the batch (or, rarely, the image or the
//! channels) is scaled down, and the comment says from what: the sweep runs in minutes.
//! Shapes S1-S4 are the four benchmark shapes of `shapes.rs`, taken from there.
//!
//! Includers declare `shapes` and `sweep` as sibling modules:
//! ```text
//! #[path = "support/shapes.rs"] mod shapes;
//! #[path = "support/sweep.rs"] mod sweep;
//! ```
#![allow(dead_code)]

use super::shapes::{SHAPES, Shape};
use Activation::{Leaky, Linear, Logistic, Relu, Tanh};
use deconv::{Activation, DeconvConfig, DeconvLayer, Element, Gemm};

/// Element type of a sweep shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }
}

/// One sweep layer. Pairs are `[height, width]`.
#[derive(Debug, Clone, Copy)]
pub struct SweepShape {
    pub id: &'static str,
    /// The network and layer it stands for, and how it was scaled.
    pub source: &'static str,
    pub batch: usize,
    pub in_channels: usize,
    pub filters: usize,
    pub in_hw: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub output_padding: [usize; 2],
    pub groups: usize,
    pub activation: Activation,
    pub batch_normalize: bool,
    /// Bilinear upsampling weights ([`DeconvLayer::bilinear_init`]) instead of random ones.
    pub bilinear: bool,
    pub dtype: Dtype,
}

/// `batch` images of `c` channels of `h x w` to `n` channels; kernel 1, stride 1, no padding,
/// one group, linear, bias, f32 until the setters say otherwise.
const fn layer(
    id: &'static str,
    source: &'static str,
    batch: usize,
    (c, n): (usize, usize),
    [h, w]: [usize; 2],
) -> SweepShape {
    SweepShape {
        id,
        source,
        batch,
        in_channels: c,
        filters: n,
        in_hw: [h, w],
        kernel: [1, 1],
        stride: [1, 1],
        pad: [0, 0],
        dilation: [1, 1],
        output_padding: [0, 0],
        groups: 1,
        activation: Linear,
        batch_normalize: false,
        bilinear: false,
        dtype: Dtype::F32,
    }
}

impl SweepShape {
    /// Square kernel `k`, stride `s`, padding `p`.
    const fn ksp(self, k: usize, s: usize, p: usize) -> Self {
        self.kernel_hw([k, k]).stride_hw([s, s]).pad_hw([p, p])
    }
    const fn kernel_hw(mut self, k: [usize; 2]) -> Self {
        self.kernel = k;
        self
    }
    const fn stride_hw(mut self, s: [usize; 2]) -> Self {
        self.stride = s;
        self
    }
    const fn pad_hw(mut self, p: [usize; 2]) -> Self {
        self.pad = p;
        self
    }
    const fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    const fn output_padding(mut self, op: [usize; 2]) -> Self {
        self.output_padding = op;
        self
    }
    const fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    const fn act(mut self, a: Activation) -> Self {
        self.activation = a;
        self
    }
    /// Batch norm instead of a bias.
    const fn bn(mut self) -> Self {
        self.batch_normalize = true;
        self
    }
    const fn bilinear(mut self) -> Self {
        self.bilinear = true;
        self
    }
    const fn f64(mut self) -> Self {
        self.dtype = Dtype::F64;
        self
    }

    /// One of the four benchmark shapes of `shapes.rs`, with its own id and a source line.
    const fn bench(shape: &Shape, source: &'static str) -> Self {
        let s = layer(
            shape.id,
            source,
            shape.batch,
            (shape.in_channels, shape.filters),
            [shape.in_hw, shape.in_hw],
        )
        .ksp(shape.kernel, shape.stride, shape.pad)
        .act(shape.activation);
        let s = if shape.batch_normalize { s.bn() } else { s };
        if shape.bilinear { s.bilinear() } else { s }
    }

    /// The layer configuration (seed 1).
    pub fn config(&self) -> DeconvConfig {
        let [h, w] = self.in_hw;
        DeconvConfig::new(self.batch, self.in_channels, h, w, self.filters, 1)
            .kernel_hw(self.kernel[0], self.kernel[1])
            .stride_hw(self.stride[0], self.stride[1])
            .pad_hw(self.pad[0], self.pad[1])
            .dilation_hw(self.dilation[0], self.dilation[1])
            .output_padding_hw(self.output_padding[0], self.output_padding[1])
            .groups(self.groups)
            .activation(self.activation)
            .batch_normalize(self.batch_normalize)
            .seed(1)
    }

    /// Sets the shape's weights where it has special ones (bilinear).
    pub fn prepare<T: Element, B: Gemm<T>>(&self, layer: &mut DeconvLayer<T, B>) {
        if self.bilinear {
            layer.bilinear_init();
        }
    }

    /// A one-line description: `64x 100->512 1x1 k4 s1 p0 bn relu`, with only the parameters
    /// that differ from the defaults beyond kernel, stride and padding.
    pub fn describe(&self) -> String {
        let pair = |[a, b]: [usize; 2]| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}x{b}")
            }
        };
        let mut s = format!(
            "{}x {}->{} {}x{} k{} s{} p{}",
            self.batch,
            self.in_channels,
            self.filters,
            self.in_hw[0],
            self.in_hw[1],
            pair(self.kernel),
            pair(self.stride),
            pair(self.pad)
        );
        if self.dilation != [1, 1] {
            s += &format!(" d{}", pair(self.dilation));
        }
        if self.output_padding != [0, 0] {
            s += &format!(" op{}", pair(self.output_padding));
        }
        if self.groups > 1 {
            if self.groups == self.in_channels && self.groups == self.filters {
                s += " dw";
            } else {
                s += &format!(" g{}", self.groups);
            }
        }
        s += if self.batch_normalize { " bn" } else { "" };
        if self.activation != Activation::Linear {
            s += &format!(" {}", self.activation);
        }
        if self.dtype == Dtype::F64 {
            s += " f64";
        }
        s
    }
}

/// The sweep, grouped by kind of network. Batches and sizes are the networks' own unless the
/// comment says "scaled".
pub const SWEEP: &[SweepShape] = &[
    // --- The four benchmark shapes (benches/support/shapes.rs). ---
    SweepShape::bench(&SHAPES[0], "DCGAN generator, 16x16 -> 32x32 (bench S1)"),
    SweepShape::bench(&SHAPES[1], "U-Net up-conv 2x2 (bench S2)"),
    SweepShape::bench(&SHAPES[2], "FCN-8s upscore8, bilinear (bench S3)"),
    SweepShape::bench(&SHAPES[3], "Darknet 3x3 stride 2 (bench S4)"),
    // --- GAN generators. ---
    // DCGAN (Radford et al. 2016; PyTorch examples/dcgan, nz=100, ngf=64, batch 64): the
    // latent vector, a 1x1 map, projected to 4x4 by a stride-1 transposed conv.
    layer(
        "dcgan-z",
        "DCGAN G layer 1: z (1x1) -> 4x4",
        64,
        (100, 512),
        [1, 1],
    )
    .ksp(4, 1, 0)
    .bn()
    .act(Relu),
    // DCGAN layer 2: 4x4 -> 8x8 (batch 64 scaled to 32).
    layer(
        "dcgan-4",
        "DCGAN G layer 2: 4x4 -> 8x8",
        32,
        (512, 256),
        [4, 4],
    )
    .ksp(4, 2, 1)
    .bn()
    .act(Relu),
    // Issue 11's "many small images": DCGAN's 32x32 generator (CIFAR-10, ngf=64), 8x8 -> 16x16.
    layer(
        "dcgan-8",
        "DCGAN 32x32 G: 8x8 -> 16x16 (issue 11)",
        32,
        (128, 64),
        [8, 8],
    )
    .ksp(4, 2, 1)
    .bn()
    .act(Relu),
    // DCGAN's last layer: 64 -> 3 (RGB) channels, tanh, bias (batch 64 scaled to 16).
    layer(
        "dcgan-rgb",
        "DCGAN G output: 32x32 -> 64x64 RGB",
        16,
        (64, 3),
        [32, 32],
    )
    .ksp(4, 2, 1)
    .act(Tanh),
    // TensorFlow DCGAN (carpedm20/DCGAN-tensorflow): 5x5 stride 2 'SAME' = pad 2 + output
    // padding 1; 128 -> 64 at 16x16 (batch 64 scaled to 8).
    layer(
        "tf-dcgan-k5",
        "DCGAN-tensorflow 5x5 'SAME' up-conv",
        8,
        (128, 64),
        [16, 16],
    )
    .ksp(5, 2, 2)
    .output_padding([1, 1])
    .bn()
    .act(Relu),
    // StyleGAN2 (Karras et al. 2020) modulated up-conv with fused modulation: the batch is
    // folded into the groups (conv_transpose2d(x, w, stride=2, groups=batch)); 2 images of 512
    // channels at 8x8 -> 17x17 before the blur.
    layer(
        "stylegan2-up",
        "StyleGAN2 fused modconv, batch as 2 groups",
        1,
        (1024, 1024),
        [8, 8],
    )
    .ksp(3, 2, 0)
    .groups(2),
    // pix2pix U-Net generator (Isola et al. 2017, batch 1 as in the paper), ngf=64:
    // ConvTranspose2d(512, 128, 4, 2, 1) at 32x32 -> 64x64.
    layer(
        "pix2pix-32",
        "pix2pix U-Net G, batch 1: 32x32 -> 64x64",
        1,
        (512, 128),
        [32, 32],
    )
    .ksp(4, 2, 1)
    .bn()
    .act(Relu),
    // pix2pix outermost layer: 128 -> 3 channels (RGB), tanh, 128x128 -> 256x256.
    layer(
        "pix2pix-rgb",
        "pix2pix U-Net G output: -> 256x256 RGB",
        1,
        (128, 3),
        [128, 128],
    )
    .ksp(4, 2, 1)
    .act(Tanh),
    // Issue 11's "one image, training": a U-Net/pix2pix-style decoder layer at batch 1.
    layer(
        "one-image",
        "one image training, 32x32 (issue 11)",
        1,
        (256, 128),
        [32, 32],
    )
    .ksp(4, 2, 1)
    .bn()
    .act(Relu),
    // --- Segmentation decoders. ---
    // U-Net (Ronneberger et al. 2015) up-conv 2x2 at the bottleneck, 1024 -> 512, batch 1 as in
    // the paper, on a 256x256 input (padded convolutions: 16x16 bottleneck).
    layer(
        "unet-1024",
        "U-Net up-conv 1 (1024 ch), batch 1",
        1,
        (1024, 512),
        [16, 16],
    )
    .ksp(2, 2, 0),
    // U-Net's last up-conv, 128 -> 64, at 128x128 (256x256 input), batch 1.
    layer(
        "unet-128",
        "U-Net up-conv 4, 128x128, batch 1",
        1,
        (128, 64),
        [128, 128],
    )
    .ksp(2, 2, 0),
    // Mask R-CNN mask head (He et al. 2017; torchvision MaskRCNNHeads): ConvTranspose2d(256,
    // 256, 2, 2) on 14x14 RoI features, ReLU; one image per RoI (100 RoIs scaled to 16).
    layer(
        "maskrcnn",
        "Mask R-CNN mask head, 16 RoIs 14x14",
        16,
        (256, 256),
        [14, 14],
    )
    .ksp(2, 2, 0)
    .act(Relu),
    // FCN-8s upscore2 (Long et al. 2015, Caffe): 21 classes, k4 s2, no pad, no bias (cropped
    // later), on the 22x22 score map of a 500x500 image; batch 1 scaled up to 8.
    layer(
        "fcn-up2",
        "FCN-8s upscore2 (21 classes)",
        8,
        (21, 21),
        [22, 22],
    )
    .ksp(4, 2, 0),
    // Caffe's bilinear upsampling recipe (BilinearFiller docs): group = num_output = channels,
    // kernel 2f - f%2, stride f, pad ceil((f-1)/2); FCN-8s' 8x with 21 classes on 64x64.
    layer(
        "fcn-dw8",
        "Caffe bilinear upsampling x8, group = 21",
        2,
        (21, 21),
        [64, 64],
    )
    .ksp(16, 8, 4)
    .groups(21)
    .bilinear(),
    // DeconvNet (Noh et al. 2015) fc6-deconv: 1x1 -> 7x7, kernel 7; 4096 -> 512 in the paper,
    // scaled to 1024 -> 256 (the paper's weights alone are 400 MB); batch 8.
    layer(
        "deconvnet-fc6",
        "DeconvNet fc6-deconv 1x1 -> 7x7 (ch /4)",
        8,
        (1024, 256),
        [1, 1],
    )
    .ksp(7, 1, 0)
    .bn()
    .act(Relu),
    // DeconvNet deconv5: 3x3 stride 1 pad 1, 512 -> 512 at 14x14, batch 1 (paper: 64).
    layer(
        "deconvnet-3x3",
        "DeconvNet deconv5 3x3 s1, batch 1",
        1,
        (512, 512),
        [14, 14],
    )
    .ksp(3, 1, 1)
    .bn()
    .act(Relu),
    // LinkNet (Chaurasia & Culurciello 2017) decoder block 4 full-conv: 3x3 stride 2,
    // output padding 1, m/4 = 128 channels at 16x16 (512x512 input), batch 8.
    layer(
        "linknet",
        "LinkNet decoder full-conv 3x3 s2",
        8,
        (128, 128),
        [16, 16],
    )
    .ksp(3, 2, 1)
    .output_padding([1, 1])
    .bn()
    .act(Relu),
    // ENet (Paszke et al. 2016) upsampling bottleneck 5.0: 3x3 s2 op1 on its 16 internal
    // channels at 128x128 (512x512 input), batch 2; PReLU replaced by leaky.
    layer(
        "enet-up",
        "ENet upsampling bottleneck 5.0",
        2,
        (16, 16),
        [128, 128],
    )
    .ksp(3, 2, 1)
    .output_padding([1, 1])
    .bn()
    .act(Leaky),
    // ENet's final full-conv: 16 -> 12 classes (CamVid), 256x256 -> 512x512, batch 2.
    layer(
        "enet-out",
        "ENet final full-conv, 256x256 -> 512x512",
        2,
        (16, 12),
        [256, 256],
    )
    .ksp(3, 2, 1)
    .output_padding([1, 1]),
    // LinkNet/ResNet-VAE decoders' shortcut: the transpose of ResNet's 1x1 stride-2 projection
    // (kernel 1 < stride 2: every other output pixel is a hole); 256 -> 128 at 16x16.
    layer(
        "resnet-k1s2",
        "ResNet decoder shortcut 1x1 s2 (stride > kernel)",
        16,
        (256, 128),
        [16, 16],
    )
    .ksp(1, 2, 0)
    .output_padding([1, 1])
    .bn(),
    // ResNeXt 32x4d grouped 3x3 (Xie et al. 2017) transposed, as in ResNeXt-based decoders:
    // 128 channels in 32 groups of 4, stride 2, output padding 1; 32x32, batch 8.
    layer(
        "resnext-g32",
        "ResNeXt 32x4d grouped 3x3, transposed s2",
        8,
        (128, 128),
        [32, 32],
    )
    .ksp(3, 2, 1)
    .output_padding([1, 1])
    .groups(32)
    .bn()
    .act(Relu),
    // A decoder mirroring a dilated (DeepLab-style atrous, rate 2) encoder: the transposed
    // 3x3 dilation-2 conv, 128 -> 128 at 32x32, batch 4 (constructed from the atrous conv;
    // transposed convs with dilation are rare in published decoders).
    layer(
        "atrous-d2",
        "atrous 3x3 rate 2, transposed",
        4,
        (128, 128),
        [32, 32],
    )
    .ksp(3, 1, 2)
    .dilation(2)
    .bn()
    .act(Relu),
    // The same with stride 2 (the adjoint of a strided atrous conv), 64 channels.
    layer(
        "atrous-d2s2",
        "atrous 3x3 rate 2 stride 2, transposed",
        4,
        (64, 64),
        [32, 32],
    )
    .ksp(3, 2, 2)
    .dilation(2)
    .output_padding([1, 1])
    .act(Relu),
    // DPT (Ranftl et al. 2021) reassemble: ConvTranspose2d(96, 96, 4, stride=4) on the 24x24
    // token grid of a 384x384 image (kernel == stride: no overlap), batch 4.
    layer(
        "dpt-k4s4",
        "DPT reassemble 4x (ViT tokens 24x24)",
        4,
        (96, 96),
        [24, 24],
    )
    .ksp(4, 4, 0),
    // DPT reassemble 2x: ConvTranspose2d(192, 192, 2, stride=2).
    layer(
        "dpt-k2s2",
        "DPT reassemble 2x (ViT tokens 24x24)",
        4,
        (192, 192),
        [24, 24],
    )
    .ksp(2, 2, 0),
    // CenterNet (Zhou et al. 2019) DLA-34 IDAUp: depthwise ConvTranspose2d(o, o, 2f, stride=f,
    // padding=f//2, groups=o, bias=False), bilinear-filled; f=2 is issue 11's depthwise shape.
    layer(
        "centernet-dw2",
        "CenterNet IDAUp depthwise x2 (issue 11)",
        8,
        (64, 64),
        [32, 32],
    )
    .ksp(4, 2, 1)
    .groups(64)
    .bilinear(),
    // IDAUp f=4: kernel 8, stride 4, pad 2, 64 channels at 16x16.
    layer(
        "centernet-dw4",
        "CenterNet IDAUp depthwise x4",
        8,
        (64, 64),
        [16, 16],
    )
    .ksp(8, 4, 2)
    .groups(64)
    .bilinear(),
    // IDAUp f=8: kernel 16, stride 8, pad 4, 64 channels at 8x8.
    layer(
        "centernet-dw8",
        "CenterNet IDAUp depthwise x8",
        8,
        (64, 64),
        [8, 8],
    )
    .ksp(16, 8, 4)
    .groups(64)
    .bilinear(),
    // --- Super-resolution heads. ---
    // FSRCNN (Dong et al. 2016) x3 deconvolution: 56 -> 1 channel, kernel 9, stride 3, pad 4,
    // output padding 2, on 64x64 training patches, batch 16.
    layer(
        "fsrcnn-x3",
        "FSRCNN x3 deconv 9x9, 56 -> 1",
        16,
        (56, 1),
        [64, 64],
    )
    .ksp(9, 3, 4)
    .output_padding([2, 2]),
    // FSRCNN x4 at inference on one 256x256 image (-> 1024x1024).
    layer(
        "fsrcnn-x4",
        "FSRCNN x4 deconv, one 256x256 image",
        1,
        (56, 1),
        [256, 256],
    )
    .ksp(9, 4, 4)
    .output_padding([3, 3]),
    // LapSRN (Lai et al. 2017) image branch: ConvTranspose2d(1, 1, 4, 2, 1) at 128x128, batch 64.
    layer(
        "lapsrn-img",
        "LapSRN image upsampling 1 -> 1 ch",
        64,
        (1, 1),
        [128, 128],
    )
    .ksp(4, 2, 1),
    // LapSRN feature branch: ConvTranspose2d(64, 64, 4, 2, 1) + LeakyReLU, 32x32 (batch 64
    // scaled to 8).
    layer(
        "lapsrn-feat",
        "LapSRN feature upsampling",
        8,
        (64, 64),
        [32, 32],
    )
    .ksp(4, 2, 1)
    .act(Leaky),
    // --- Audio: 1-D upsampling as 2-D layers of height 1, and spectrogram decoders. ---
    // MelGAN (Kumar et al. 2019) / HiFi-GAN V1 first upsampling: ConvTranspose1d(512, 256, 16,
    // stride 8, padding 4) on 32 mel frames (an 8192-sample segment), batch 16.
    layer(
        "melgan-up8",
        "MelGAN/HiFi-GAN upsample x8, kernel 16 (1-D)",
        16,
        (512, 256),
        [1, 32],
    )
    .kernel_hw([1, 16])
    .stride_hw([1, 8])
    .pad_hw([0, 4]),
    // HiFi-GAN V1 third upsampling: ConvTranspose1d(128, 64, 4, stride 2, padding 1) on 2048
    // samples (batch 16 scaled to 8).
    layer(
        "hifigan-up2",
        "HiFi-GAN upsample x2, kernel 4 (1-D)",
        8,
        (128, 64),
        [1, 2048],
    )
    .kernel_hw([1, 4])
    .stride_hw([1, 2])
    .pad_hw([0, 1]),
    // DCCRN (Hu et al. 2020) decoder: kernel 5x2 (frequency x time), stride 2x1, pad 2x0,
    // output padding 1x0; 256 -> 128 on 8 bins x 64 frames, batch 4; PReLU replaced by leaky.
    layer(
        "dccrn",
        "DCCRN decoder 5x2 s2x1 (freq x time)",
        4,
        (256, 128),
        [8, 64],
    )
    .kernel_hw([5, 2])
    .stride_hw([2, 1])
    .pad_hw([2, 0])
    .output_padding([1, 0])
    .bn()
    .act(Leaky),
    // CRN (Tan & Wang 2018) decoder: kernel 2x3 (time x frequency), stride 1x2, skip-concat
    // 512 -> 128 channels, 64 frames x 4 bins (-> 9 bins), batch 4; ELU replaced by leaky.
    layer(
        "crn",
        "CRN decoder 2x3 s1x2 (time x freq)",
        4,
        (512, 128),
        [64, 4],
    )
    .kernel_hw([2, 3])
    .stride_hw([1, 2])
    .bn()
    .act(Leaky),
    // --- Darknet cfgs. ---
    // A [deconvolutional] section as Darknet cfgs write it: size=4 stride=2 pad=1, which Darknet
    // turns into padding = size/2 = 2 (out = 2h - 2); upsampling YOLO's 13x13 grid, 512 -> 256,
    // batch_normalize=1, leaky; batch 64 with subdivisions=16: 4 images per call.
    layer(
        "darknet-k4",
        "Darknet cfg size=4 stride=2 pad=1 (padding 2), 13x13",
        4,
        (512, 256),
        [13, 13],
    )
    .ksp(4, 2, 2)
    .bn()
    .act(Leaky),
    // A Darknet segmentation head: filters=1 size=3 stride=2 pad=1, the cfg's default
    // activation (logistic), 32 -> 1 channel at 104x104 (416/4), batch 8.
    layer(
        "darknet-mask",
        "Darknet cfg mask head filters=1, logistic",
        8,
        (32, 1),
        [104, 104],
    )
    .ksp(3, 2, 1)
    .act(Logistic),
    // The cfg parser's defaults (size=1, stride=1, activation=logistic) with filters=64: a
    // pointwise transposed conv, 256 -> 64 at 32x32, batch 8.
    layer(
        "darknet-1x1",
        "Darknet cfg defaults size=1 stride=1, logistic",
        8,
        (256, 64),
        [32, 32],
    )
    .act(Logistic),
    // Zeiler & Fergus (2014) deconvnet visualization, projecting AlexNet's layers back:
    // conv2 (96 -> 256, 5x5, 2 groups) transposed at 27x27, ReLU; batch 2.
    layer(
        "zf-alexnet-g2",
        "ZF deconvnet through AlexNet conv2, 2 groups",
        2,
        (256, 96),
        [27, 27],
    )
    .ksp(5, 1, 2)
    .groups(2)
    .act(Relu),
    // ... and conv1 (3 -> 96, 11x11, stride 4) transposed: 55x55 -> 227x227 RGB; batch 2.
    layer(
        "zf-alexnet-c1",
        "ZF deconvnet through AlexNet conv1, 11x11 s4",
        2,
        (96, 3),
        [55, 55],
    )
    .ksp(11, 4, 0),
    // --- f64, as HPC codes run them (twins of f32 shapes above). ---
    layer("f64-dcgan-8", "f64 twin of dcgan-8", 32, (128, 64), [8, 8])
        .ksp(4, 2, 1)
        .bn()
        .act(Relu)
        .f64(),
    layer(
        "f64-unet",
        "f64 U-Net up-conv, 64x64 (scientific U-Nets)",
        2,
        (128, 64),
        [64, 64],
    )
    .ksp(2, 2, 0)
    .f64(),
    layer("f64-S4", "f64 twin of S4", 8, (64, 32), [64, 64])
        .ksp(3, 2, 1)
        .bn()
        .act(Leaky)
        .f64(),
    layer("f64-fsrcnn", "f64 twin of fsrcnn-x3", 16, (56, 1), [64, 64])
        .ksp(9, 3, 4)
        .output_padding([2, 2])
        .f64(),
    layer(
        "f64-dw2",
        "f64 twin of centernet-dw2",
        8,
        (64, 64),
        [32, 32],
    )
    .ksp(4, 2, 1)
    .groups(64)
    .bilinear()
    .f64(),
];
