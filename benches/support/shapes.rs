//! The benchmark shapes, shared by `benches/deconv.rs` and `examples/perf.rs`.
//!
//! | id | stands for | batch | c -> n | h x w | kernel | stride | pad | bias / activation |
//! |----|------------|-------|--------|-------|--------|--------|-----|-------------------|
//! | S1 | DCGAN generator | 16 | 256 -> 128 | 16x16 | 4 | 2 | 1 | batch norm, ReLU |
//! | S2 | U-Net up-conv | 4 | 512 -> 256 | 32x32 | 2 | 2 | 0 | bias, linear |
//! | S3 | FCN 8x bilinear upsampling | 2 | 21 -> 21 | 16x16 | 16 | 8 | 4 | bias, linear, bilinear weights |
//! | S4 | Darknet 3x3 stride 2 | 8 | 64 -> 32 | 64x64 | 3 | 2 | 1 | batch norm, leaky |
#![allow(dead_code)]

use deconv::{Activation, DeconvConfig, DeconvLayer, Element, Gemm};

/// One benchmarked layer shape.
pub struct Shape {
    pub id: &'static str,
    pub batch: usize,
    pub in_channels: usize,
    pub filters: usize,
    pub in_hw: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub activation: Activation,
    pub batch_normalize: bool,
    pub bilinear: bool,
}

#[allow(clippy::too_many_arguments)]
const fn shape(
    id: &'static str,
    batch: usize,
    (in_channels, filters): (usize, usize),
    in_hw: usize,
    (kernel, stride, pad): (usize, usize, usize),
    activation: Activation,
    batch_normalize: bool,
    bilinear: bool,
) -> Shape {
    Shape {
        id,
        batch,
        in_channels,
        filters,
        in_hw,
        kernel,
        stride,
        pad,
        activation,
        batch_normalize,
        bilinear,
    }
}

pub const SHAPES: [Shape; 4] = [
    shape(
        "S1",
        16,
        (256, 128),
        16,
        (4, 2, 1),
        Activation::Relu,
        true,
        false,
    ),
    shape(
        "S2",
        4,
        (512, 256),
        32,
        (2, 2, 0),
        Activation::Linear,
        false,
        false,
    ),
    shape(
        "S3",
        2,
        (21, 21),
        16,
        (16, 8, 4),
        Activation::Linear,
        false,
        true,
    ),
    shape(
        "S4",
        8,
        (64, 32),
        64,
        (3, 2, 1),
        Activation::Leaky,
        true,
        false,
    ),
];

impl Shape {
    /// The layer configuration (seed 1).
    pub fn config(&self) -> DeconvConfig {
        DeconvConfig::new(
            self.batch,
            self.in_channels,
            self.in_hw,
            self.in_hw,
            self.filters,
            self.kernel,
        )
        .stride(self.stride)
        .pad(self.pad)
        .activation(self.activation)
        .batch_normalize(self.batch_normalize)
        .seed(1)
    }

    /// Sets the shape's weights where it has special ones (bilinear for S3).
    pub fn prepare<T: Element, B: Gemm<T>>(&self, layer: &mut DeconvLayer<T, B>) {
        if self.bilinear {
            layer.bilinear_init();
        }
    }
}
