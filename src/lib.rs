//! # deconv
//!
//! A transposed-convolution ("deconvolutional") layer with the semantics of Darknet's
//! `deconvolutional_layer.c`, generic over `f32`/`f64`, whose every matrix product goes through
//! a pluggable GEMM [`backend`] (pure-Rust `matrixmultiply` by default, OpenBLAS with the
//! `openblas` feature), with rayon-parallel [`im2col`] / col2im.
//!
//! - [`DeconvConfig`] describes the layer (Darknet's `batch, h, w, c, n, size, stride, pad,
//!   activation, batch_normalize`, plus PyTorch's rectangular kernels, `dilation`,
//!   `output_padding` and `groups`); invalid geometry is an [`Error`] naming the parameter.
//! - [`DeconvLayer`] holds the parameters and buffers and runs
//!   [`forward`](DeconvLayer::forward), [`backward`](DeconvLayer::backward),
//!   [`update`](DeconvLayer::update) (SGD with momentum and decay, or Adam),
//!   [`resize`](DeconvLayer::resize), [`bilinear_init`](DeconvLayer::bilinear_init) and
//!   [`denormalize`](DeconvLayer::denormalize).
//! - [`Activation`] has all of Darknet's activations; [`batchnorm`] reproduces Darknet's CPU
//!   batch norm with an exact backward.
//! - [`darknet`] reads Darknet `[deconvolutional]` cfg sections and reads/writes `.weights` files;
//!   the `capi` feature adds a C ABI (`include/deconv.h`).
//! - The forward pass runs Darknet's GEMM + col2im or, where it pays, a sub-pixel (phase)
//!   decomposition without col2im ([`Algorithm`], chosen once per layer); images run in
//!   parallel on rayon's threads, and the crate's own loops are compiled for AVX-512 / AVX2
//!   and chosen at run time.
//! - [`reference`](mod@reference) has direct-loop implementations that the fast paths are tested against.
//!
//! Layout is NCHW; weights are `[in_channels][filters / groups][kh][kw]`, as Darknet and
//! PyTorch `ConvTranspose2d`. Output size per axis:
//! `out = (in - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1`.
//!
//! ## Example: one training step
//! ```
//! use deconv::{Activation, DeconvConfig, DeconvLayer, Mode, UpdateArgs};
//!
//! // 2 images, 4 channels of 8x8 -> 2 channels of 16x16 (kernel 4, stride 2, pad 1).
//! let config = DeconvConfig::new(2, 4, 8, 8, 2, 4)
//!     .stride(2)
//!     .pad(1)
//!     .activation(Activation::Leaky)
//!     .batch_normalize(true)
//!     .seed(7);
//! let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config)?;
//! let input = vec![0.1f32; 2 * 4 * 8 * 8];
//! let target = vec![0.5f32; 2 * 2 * 16 * 16];
//!
//! let output = layer.forward(&input, Mode::Train)?.to_vec();
//! // delta = -dLoss/dOutput for the loss 0.5 * |output - target|^2 (Darknet's convention).
//! for ((d, y), t) in layer.delta_mut().iter_mut().zip(&output).zip(&target) {
//!     *d = t - y;
//! }
//! let mut input_delta = vec![0.0f32; input.len()];
//! layer.backward(&input, Some(&mut input_delta))?;
//! layer.update(&UpdateArgs::sgd(0.01, 0.9, 0.0005, 2))?;
//! # Ok::<(), deconv::Error>(())
//! ```
//!
//! ## Threads
//! All parallelism runs on rayon's pool; GEMM backends are called single-threaded (OpenBLAS's
//! own threads are set to 1), so nothing is oversubscribed. Choose the thread count with
//! `RAYON_NUM_THREADS` or by calling the layer inside `rayon::ThreadPool::install`.

#![warn(missing_docs)]
// docs.rs (`--cfg docsrs`, nightly) marks each item with the cargo feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod activation;
mod alloc;
pub mod backend;
pub mod batchnorm;
#[cfg(feature = "capi")]
pub mod capi;
pub mod config;
pub mod darknet;
mod direct;
pub mod distributed;
pub mod element;
pub mod error;
pub mod im2col;
pub mod layer;
mod phase;
mod reduce;
pub mod reference;
mod simd;
mod transpose;

pub use activation::Activation;
pub use backend::{AnyBackend, COMPILED_BACKENDS, DefaultBackend, Gemm};
pub use config::{Algorithm, DeconvConfig, Geometry, InputShape};
pub use element::Element;
pub use error::{Error, Result};
pub use layer::{DeconvLayer, Mode, Optimizer, Params, UpdateArgs};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
