//! Darknet files: `[deconvolutional]` cfg sections and `.weights` files.
//!
//! # cfg sections
//! [`parse_deconvolutional`] turns one Darknet `[deconvolutional]` (alias `[deconv]`) section
//! into a [`DeconvConfig`], following Darknet's `read_cfg` / `parse_deconvolutional`:
//!
//! - keys and defaults: `filters` (1), `size` (1), `stride` (1), `pad` (0), `padding` (0),
//!   `activation` (`logistic`), `batch_normalize` (0); `pad=1` overrides `padding` with
//!   `size / 2`;
//! - every space, tab and carriage return is removed from a line, wherever it is (as Darknet's
//!   `strip`), so `size = 3` is `size=3`;
//! - lines that are empty or start with `#` or `;` are comments; there are no end-of-line comments
//!   (Darknet's `atoi` reads `3#x` as 3; we reject it);
//! - a leading UTF-8 byte-order mark is ignored;
//! - a duplicated key: the first occurrence wins (the later ones are ignored, as Darknet does,
//!   and listed in [`DeconvSection::ignored_duplicates`]);
//! - the `[deconvolutional]` or `[deconv]` header is optional, but must come first if present.
//!
//! Where Darknet is silent, we fail with an [`Error::Cfg`] naming the line and the key:
//! malformed or negative numbers (Darknet's `atoi` turns `3x` into 3 and `x` into 0), numbers
//! beyond Darknet's `int`, flags other than 0 and 1, unknown activations (Darknet warns and uses
//! ReLU), unknown keys (Darknet prints "Unused field"), lines without `=` or with an empty value,
//! a second section. Darknet's per-layer network keys (`learning_rate`, `truth`, `onlyforward`,
//! `stopbackward`, `dontsave`, `dontload`, `numload`, `dontloadscales`, `smooth`) are accepted,
//! checked as numbers and returned in [`DeconvSection`]; they do not change the layer's
//! configuration. Sizes that make no layer (`filters=0`, padding that empties the output) are the
//! configuration's own errors ([`DeconvConfig::geometry`]).
//!
//! # .weights files
//! A `.weights` file is a [`WeightsHeader`] (`i32` major, minor, revision, then `seen` as `u64`
//! when `major * 10 + minor >= 2` and both are below 1000, else as `u32`), then, per layer,
//! little-endian `f32`s: `biases[n]`; with batch norm `scales[n]`, `rolling_mean[n]`,
//! `rolling_variance[n]`; then `weights[weight_count]` (`c * n * k * k`, divided by the groups).
//! Values are converted to and from the layer's element type (`f64` values are rounded to the
//! nearest `f32` when written).
//!
//! - [`read_weights`] / [`load_weights`]: a file of exactly one layer.
//!   [`write_weights`] / [`save_weights`]: write one.
//! - [`WeightsReader`] / [`WeightsWriter`]: a header, then several layers, from one stream.
//! - [`read_header`] / [`write_header`]: the header alone.
//!
//! Loading never panics and never allocates more than the layer's own sizes (nothing is sized
//! from the file). A short file, a file with bytes left over, or (when asked, with
//! [`LoadOptions::reject_non_finite`]) a NaN or infinity is an error saying what was expected
//! and what was found, and the layer is left unchanged: everything is read into temporary buffers
//! and copied into the layer only when the whole load succeeded.
//!
//! # Checking against Darknet
//! [`forward_files`] (and `examples/darknet_forward.rs`, which calls it) builds a layer from a cfg
//! section and a `.weights` file, runs an inference forward pass on a raw little-endian `f32`
//! input file and writes the output as raw `f32`.
//!
//! # Example
//! ```
//! use deconv::darknet::{parse_deconvolutional, read_weights, write_weights, LoadOptions, WeightsHeader};
//! use deconv::{DeconvLayer, InputShape};
//!
//! let cfg = "[deconvolutional]\nbatch_normalize=1\nfilters=2\nsize=4\nstride=2\npad=1\nactivation=leaky\n";
//! let input = InputShape { batch: 1, channels: 3, h: 8, w: 8 };
//! let config = parse_deconvolutional(cfg, input)?;
//! assert_eq!((config.kernel, config.stride, config.pad), ([4, 4], [2, 2], [2, 2]));
//!
//! let original: DeconvLayer<f32> = DeconvLayer::new(&config.clone().seed(1))?;
//! let mut file = Vec::new();
//! write_weights(&original, &mut file, &WeightsHeader::new(1000))?;
//!
//! let mut copy: DeconvLayer<f32> = DeconvLayer::new(&config)?;
//! let header = read_weights(&mut copy, &file[..], &LoadOptions::new())?;
//! assert_eq!(header.seen, 1000);
//! assert_eq!(copy.weights(), original.weights());
//! # Ok::<(), deconv::Error>(())
//! ```

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::activation::Activation;
use crate::backend::{DefaultBackend, Gemm};
use crate::config::{DeconvConfig, Geometry, InputShape};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::layer::{DeconvLayer, Mode};

// ---------------------------------------------------------------------------------------------
// cfg sections
// ---------------------------------------------------------------------------------------------

/// Keys of Darknet's `parse_deconvolutional`.
const LAYER_KEYS: [&str; 7] = [
    "filters",
    "size",
    "stride",
    "pad",
    "padding",
    "activation",
    "batch_normalize",
];

/// Integer keys Darknet's `parse_network` reads for every layer.
const NETWORK_INT_KEYS: [&str; 7] = [
    "truth",
    "onlyforward",
    "stopbackward",
    "dontsave",
    "dontload",
    "numload",
    "dontloadscales",
];

/// Float keys Darknet's `parse_network` reads for every layer (besides `learning_rate`).
const NETWORK_FLOAT_KEYS: [&str; 1] = ["smooth"];

/// Section headers Darknet maps to its deconvolutional layer.
const HEADERS: [&str; 2] = ["[deconvolutional]", "[deconv]"];

/// One Darknet `[deconvolutional]` section, parsed and checked (see the [module docs](self) for
/// the rules). Turn it into a layer configuration with [`to_config`](Self::to_config); write it
/// back as cfg text with its `Display`.
///
/// # Example
/// ```
/// use deconv::darknet::DeconvSection;
/// use deconv::Activation;
///
/// let section = DeconvSection::parse("[deconv]\nfilters=4\nsize=3\npad=1\n# a comment\n")?;
/// assert_eq!((section.filters, section.size, section.padding()), (4, 3, 1));
/// assert_eq!(section.activation, Activation::Logistic); // Darknet's default
/// assert_eq!(DeconvSection::parse(&section.to_string())?, section);
/// # Ok::<(), deconv::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DeconvSection {
    /// `filters`: output channels (Darknet `n`; default 1).
    pub filters: usize,
    /// `size`: square kernel size (default 1).
    pub size: usize,
    /// `stride` (default 1).
    pub stride: usize,
    /// `pad`: when set, the padding is `size / 2` whatever `padding` says (default off).
    pub pad: bool,
    /// `padding`: explicit padding, used when `pad` is off (default 0).
    pub explicit_padding: usize,
    /// `activation` (default [`Activation::Logistic`]).
    pub activation: Activation,
    /// `batch_normalize` (default off).
    pub batch_normalize: bool,
    /// `learning_rate`: Darknet's per-layer learning-rate scale (default 1); apply it with
    /// [`DeconvLayer::set_learning_rate_scale`].
    pub learning_rate_scale: f64,
    /// Darknet's other per-layer network keys (`truth`, `onlyforward`, `stopbackward`,
    /// `dontsave`, `dontload`, `numload`, `dontloadscales`, `smooth`) as `(key, value)` in file
    /// order: checked as numbers, otherwise left to the caller.
    pub network_options: Vec<(String, String)>,
    /// Later occurrences of a key, ignored because the first one wins, as `(line, key)`.
    pub ignored_duplicates: Vec<(usize, String)>,
}

impl Default for DeconvSection {
    /// Darknet's defaults: 1 filter of size 1, stride 1, no padding, logistic, no batch norm.
    fn default() -> Self {
        DeconvSection {
            filters: 1,
            size: 1,
            stride: 1,
            pad: false,
            explicit_padding: 0,
            activation: Activation::Logistic,
            batch_normalize: false,
            learning_rate_scale: 1.0,
            network_options: Vec::new(),
            ignored_duplicates: Vec::new(),
        }
    }
}

fn cfg_error(line: usize, key: Option<&str>, reason: String) -> Error {
    Error::Cfg {
        line: Some(line),
        key: key.map(str::to_owned),
        reason,
    }
}

/// A hint for values that look like they carry an end-of-line comment.
fn comment_hint(value: &str) -> &'static str {
    if value.contains('#') || value.contains(';') {
        " (Darknet has no end-of-line comments: `#` and `;` start a comment only at the start of a line)"
    } else {
        ""
    }
}

/// Parses Darknet's `int` as a non-negative count: optional `+`, digits, at most `i32::MAX`.
fn parse_count(line: usize, key: &str, value: &str) -> Result<usize> {
    let int = parse_int(line, key, value)?;
    usize::try_from(int).map_err(|_| {
        cfg_error(
            line,
            Some(key),
            format!("`{value}` is negative; expected a non-negative integer"),
        )
    })
}

/// Parses Darknet's `int`: optional sign, then decimal digits only, within `i32`.
fn parse_int(line: usize, key: &str, value: &str) -> Result<i32> {
    let digits = value
        .strip_prefix('-')
        .or_else(|| value.strip_prefix('+'))
        .unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(cfg_error(
            line,
            Some(key),
            format!(
                "malformed number `{value}`: expected an integer (Darknet's atoi would silently \
                 read a prefix of it){}",
                comment_hint(value)
            ),
        ));
    }
    value.parse::<i32>().map_err(|_| {
        cfg_error(
            line,
            Some(key),
            format!(
                "`{value}` does not fit Darknet's int (from {} to {})",
                i32::MIN,
                i32::MAX
            ),
        )
    })
}

/// Parses a 0/1 flag.
fn parse_flag(line: usize, key: &str, value: &str) -> Result<bool> {
    match parse_int(line, key, value)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(cfg_error(
            line,
            Some(key),
            format!("`{value}` is not a flag; expected 0 or 1"),
        )),
    }
}

/// Parses Darknet's `float` (atof), requiring the whole value to be a finite number.
fn parse_float(line: usize, key: &str, value: &str) -> Result<f64> {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(_) => Err(cfg_error(
            line,
            Some(key),
            format!("`{value}` is not a finite number"),
        )),
        Err(_) => Err(cfg_error(
            line,
            Some(key),
            format!(
                "malformed number `{value}`: expected a decimal number{}",
                comment_hint(value)
            ),
        )),
    }
}

impl DeconvSection {
    /// Parses one `[deconvolutional]` section, with or without its header (`[deconvolutional]`
    /// or `[deconv]`).
    ///
    /// # Errors
    /// [`Error::Cfg`] naming the line (1-based) and key: a malformed, negative or too large
    /// number, a flag other than 0/1, an unknown activation, an unknown key, a line that is not
    /// `key=value` or has an empty value, a header other than the two accepted ones, a header
    /// after keys, or a second header.
    pub fn parse(text: &str) -> Result<Self> {
        let mut section = DeconvSection::default();
        let mut header: Option<(usize, String)> = None;
        let mut seen_keys: Vec<String> = Vec::new();
        // A UTF-8 byte-order mark, as some editors write, is not part of the first line.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.split('\n').enumerate() {
            let line_no = index + 1;
            let line: String = raw
                .chars()
                .filter(|c| !matches!(c, ' ' | '\t' | '\r'))
                .collect();
            match line.chars().next() {
                None | Some('#') | Some(';') => continue,
                Some('[') => {
                    if let Some((first, name)) = &header {
                        return Err(cfg_error(
                            line_no,
                            None,
                            format!(
                                "a second section header `{line}` (the first, `{name}`, is on \
                                 line {first}); pass one section at a time"
                            ),
                        ));
                    }
                    if !seen_keys.is_empty() {
                        return Err(cfg_error(
                            line_no,
                            None,
                            format!("section header `{line}` after keys; it must come first"),
                        ));
                    }
                    if !HEADERS.contains(&line.as_str()) {
                        return Err(cfg_error(
                            line_no,
                            None,
                            format!(
                                "expected the section header `[deconvolutional]` or `[deconv]`, \
                                 found `{line}`"
                            ),
                        ));
                    }
                    header = Some((line_no, line));
                    continue;
                }
                Some(_) => {}
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(cfg_error(
                    line_no,
                    None,
                    format!("expected `key=value`, found `{line}`"),
                ));
            };
            if key.is_empty() {
                return Err(cfg_error(line_no, None, format!("empty key in `{line}`")));
            }
            let known = LAYER_KEYS.contains(&key)
                || key == "learning_rate"
                || NETWORK_INT_KEYS.contains(&key)
                || NETWORK_FLOAT_KEYS.contains(&key);
            if !known {
                return Err(cfg_error(
                    line_no,
                    Some(key),
                    format!(
                        "unknown key `{key}` (Darknet would print \"Unused field\" and ignore it); \
                         a [deconvolutional] section takes {}, and the per-layer keys \
                         learning_rate, {}, {}",
                        LAYER_KEYS.join(", "),
                        NETWORK_INT_KEYS.join(", "),
                        NETWORK_FLOAT_KEYS.join(", ")
                    ),
                ));
            }
            if value.is_empty() {
                return Err(cfg_error(line_no, Some(key), "no value after `=`".into()));
            }
            if seen_keys.iter().any(|k| k == key) {
                section.ignored_duplicates.push((line_no, key.to_owned()));
                continue;
            }
            seen_keys.push(key.to_owned());
            match key {
                "filters" => section.filters = parse_count(line_no, key, value)?,
                "size" => section.size = parse_count(line_no, key, value)?,
                "stride" => section.stride = parse_count(line_no, key, value)?,
                "padding" => section.explicit_padding = parse_count(line_no, key, value)?,
                "pad" => section.pad = parse_flag(line_no, key, value)?,
                "batch_normalize" => section.batch_normalize = parse_flag(line_no, key, value)?,
                "activation" => {
                    section.activation = value.parse().map_err(|_| {
                        cfg_error(
                            line_no,
                            Some(key),
                            format!(
                                "unknown activation `{value}` (Darknet would warn and use relu); \
                                 expected one of {}{}",
                                Activation::ALL.map(Activation::name).join(", "),
                                comment_hint(value)
                            ),
                        )
                    })?;
                }
                "learning_rate" => section.learning_rate_scale = parse_float(line_no, key, value)?,
                _ => {
                    if NETWORK_INT_KEYS.contains(&key) {
                        parse_int(line_no, key, value)?;
                    } else {
                        parse_float(line_no, key, value)?;
                    }
                    section
                        .network_options
                        .push((key.to_owned(), value.to_owned()));
                }
            }
        }
        Ok(section)
    }

    /// The padding the layer gets: `size / 2` when `pad` is set, else `padding`.
    pub fn padding(&self) -> usize {
        if self.pad {
            self.size / 2
        } else {
            self.explicit_padding
        }
    }

    /// The layer configuration for the input `input` (Darknet takes it from the previous
    /// layer). Seed 0, no Adam buffers, own workspace.
    ///
    /// # Errors
    /// The configuration's errors ([`DeconvConfig::geometry`]): e.g. [`Error::InvalidParameter`]
    /// for `filters` when `filters=0`.
    pub fn to_config(&self, input: InputShape) -> Result<DeconvConfig> {
        let InputShape {
            batch,
            channels,
            h,
            w,
        } = input;
        let config = DeconvConfig::new(batch, channels, h, w, self.filters, self.size)
            .stride(self.stride)
            .pad(self.padding())
            .activation(self.activation)
            .batch_normalize(self.batch_normalize);
        config.geometry()?;
        Ok(config)
    }
}

impl fmt::Display for DeconvSection {
    /// Writes the section as Darknet cfg text (header, every layer key, `learning_rate` when not
    /// 1, the network options). Ignored duplicates are not written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[deconvolutional]")?;
        writeln!(f, "batch_normalize={}", u8::from(self.batch_normalize))?;
        writeln!(f, "filters={}", self.filters)?;
        writeln!(f, "size={}", self.size)?;
        writeln!(f, "stride={}", self.stride)?;
        writeln!(f, "pad={}", u8::from(self.pad))?;
        writeln!(f, "padding={}", self.explicit_padding)?;
        writeln!(f, "activation={}", self.activation)?;
        if self.learning_rate_scale != 1.0 {
            writeln!(f, "learning_rate={}", self.learning_rate_scale)?;
        }
        for (key, value) in &self.network_options {
            writeln!(f, "{key}={value}")?;
        }
        Ok(())
    }
}

/// Parses a Darknet `[deconvolutional]` (or `[deconv]`) section into the configuration of a
/// layer that takes `input` (batch, channels, height, width): Darknet's
/// `parse_deconvolutional`, with errors where Darknet is silent (see the [module docs](self)).
///
/// Per-layer network keys such as `learning_rate` are accepted and checked but not part of the
/// configuration; use [`DeconvSection::parse`] to read them.
///
/// # Example
/// ```
/// use deconv::darknet::parse_deconvolutional;
/// use deconv::{Activation, InputShape};
///
/// // 2 images of 32 channels of 13x13.
/// let input = InputShape { batch: 2, channels: 32, h: 13, w: 13 };
/// let config = parse_deconvolutional(
///     "[deconvolutional]\nfilters = 16\nsize=4\nstride=2\npadding=1\nactivation=leaky\n",
///     input,
/// )?;
/// assert_eq!((config.filters, config.kernel, config.pad), (16, [4, 4], [1, 1]));
/// assert_eq!(config.activation, Activation::Leaky);
/// assert_eq!(config.geometry()?.out_h(), 26);
///
/// let err = parse_deconvolutional("size=3x", InputShape::new(1, 1, 4, 4)).unwrap_err();
/// assert!(err.to_string().contains("cfg line 1, key `size`: malformed number `3x`"));
/// # Ok::<(), deconv::Error>(())
/// ```
///
/// # Errors
/// [`Error::Cfg`] for malformed text ([`DeconvSection::parse`]); the configuration's errors
/// ([`DeconvConfig::geometry`]) for sizes that make no layer.
pub fn parse_deconvolutional(section: &str, input: InputShape) -> Result<DeconvConfig> {
    DeconvSection::parse(section)?.to_config(input)
}

// ---------------------------------------------------------------------------------------------
// .weights files
// ---------------------------------------------------------------------------------------------

/// The header of a Darknet `.weights` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WeightsHeader {
    /// Format major version (Darknet writes 0).
    pub major: i32,
    /// Format minor version (Darknet writes 2).
    pub minor: i32,
    /// Format revision (Darknet writes 0).
    pub revision: i32,
    /// Images seen in training (`u64` from version 0.2, `u32` before).
    pub seen: u64,
}

impl WeightsHeader {
    /// The header Darknet writes today: version 0.2.0, `seen` as `u64`.
    pub const fn new(seen: u64) -> Self {
        WeightsHeader {
            major: 0,
            minor: 2,
            revision: 0,
            seen,
        }
    }

    /// Whether `seen` is stored as a `u64` (8 bytes): `major * 10 + minor >= 2` and both below
    /// 1000, Darknet's rule. Otherwise it is a `u32` (4 bytes).
    pub fn seen_is_u64(&self) -> bool {
        let (major, minor) = (i64::from(self.major), i64::from(self.minor));
        major * 10 + minor >= 2 && major < 1000 && minor < 1000
    }

    /// Bytes the header takes: 20 with a `u64` `seen`, else 16.
    pub fn byte_len(&self) -> u64 {
        if self.seen_is_u64() { 20 } else { 16 }
    }
}

impl Default for WeightsHeader {
    /// [`WeightsHeader::new(0)`](WeightsHeader::new).
    fn default() -> Self {
        WeightsHeader::new(0)
    }
}

/// Options of [`read_weights`], [`load_weights`] and [`WeightsReader`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Reject NaN and infinite values with [`Error::NonFinite`] (default: accept them, as
    /// Darknet does).
    pub reject_non_finite: bool,
}

impl LoadOptions {
    /// The defaults: accept every value.
    pub fn new() -> Self {
        LoadOptions::default()
    }

    /// Rejects NaN and infinite values (or not).
    #[must_use]
    pub fn reject_non_finite(mut self, on: bool) -> Self {
        self.reject_non_finite = on;
        self
    }
}

/// The parameters of one layer as a `.weights` file stores them. Without batch norm, `scales`,
/// `rolling_mean` and `rolling_variance` are empty.
///
/// [`WeightsReader::read_params`] returns one without touching the layer, so that several layers
/// can be read first and applied only when all of them loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerParams<T> {
    /// `biases[filters]`.
    pub biases: Vec<T>,
    /// Batch-norm `scales[filters]` (empty without batch norm).
    pub scales: Vec<T>,
    /// Batch-norm `rolling_mean[filters]` (empty without batch norm).
    pub rolling_mean: Vec<T>,
    /// Batch-norm `rolling_variance[filters]` (empty without batch norm).
    pub rolling_variance: Vec<T>,
    /// `weights[weight_count]`, laid out `[in_channels][filters / groups][kh][kw]`.
    pub weights: Vec<T>,
}

impl<T: Element> LayerParams<T> {
    /// A copy of the layer's stored parameters.
    pub fn from_layer<B: Gemm<T>>(layer: &DeconvLayer<T, B>) -> Self {
        LayerParams {
            biases: layer.biases().to_vec(),
            scales: layer.scales().map(<[T]>::to_vec).unwrap_or_default(),
            rolling_mean: layer.rolling_mean().map(<[T]>::to_vec).unwrap_or_default(),
            rolling_variance: layer
                .rolling_variance()
                .map(<[T]>::to_vec)
                .unwrap_or_default(),
            weights: layer.weights().to_vec(),
        }
    }

    /// Copies the parameters into `layer`.
    ///
    /// # Errors
    /// [`Error::BufferLength`] naming the first buffer whose length does not match the layer
    /// (batch-norm buffers must be empty without batch norm); the layer is then unchanged.
    pub fn apply_to<B: Gemm<T>>(&self, layer: &mut DeconvLayer<T, B>) -> Result<()> {
        let bn_len = if layer.batch_normalize() {
            layer.biases().len()
        } else {
            0
        };
        for (buffer, expected, found) in [
            ("biases", layer.biases().len(), self.biases.len()),
            ("scales", bn_len, self.scales.len()),
            ("rolling_mean", bn_len, self.rolling_mean.len()),
            ("rolling_variance", bn_len, self.rolling_variance.len()),
            ("weights", layer.weights().len(), self.weights.len()),
        ] {
            if expected != found {
                return Err(Error::BufferLength {
                    buffer,
                    expected,
                    found,
                });
            }
        }
        layer.biases_mut().copy_from_slice(&self.biases);
        layer.weights_mut().copy_from_slice(&self.weights);
        if let Some(s) = layer.scales_mut() {
            s.copy_from_slice(&self.scales);
        }
        if let Some(m) = layer.rolling_mean_mut() {
            m.copy_from_slice(&self.rolling_mean);
        }
        if let Some(v) = layer.rolling_variance_mut() {
            v.copy_from_slice(&self.rolling_variance);
        }
        Ok(())
    }

    /// The buffers in file order, with their names.
    fn segments(&self) -> [(&'static str, &[T]); 5] {
        [
            ("biases", &self.biases),
            ("scales", &self.scales),
            ("rolling_mean", &self.rolling_mean),
            ("rolling_variance", &self.rolling_variance),
            ("weights", &self.weights),
        ]
    }
}

/// Bytes one layer takes in a `.weights` file:
/// `4 * (filters * (1 + 3 * batch_normalize) + weight_count)`.
pub fn layer_byte_len<T: Element, B: Gemm<T>>(layer: &DeconvLayer<T, B>) -> u64 {
    layout_byte_len(layer.geometry(), layer.batch_normalize())
}

fn layout_byte_len(g: &Geometry, bn: bool) -> u64 {
    let per_filter: u64 = if bn { 4 } else { 1 };
    let floats = (g.filters() as u64)
        .saturating_mul(per_filter)
        .saturating_add(g.weight_count() as u64);
    floats.saturating_mul(4)
}

fn describe(g: &Geometry, bn: bool) -> String {
    format!(
        "filters (n) = {}, in_channels (c) = {}, kernel = {}x{}, groups = {}, batch_normalize = {}",
        g.filters(),
        g.in_channels(),
        g.kernel()[0],
        g.kernel()[1],
        g.groups(),
        u8::from(bn)
    )
}

fn io_error(context: impl Into<String>, e: &io::Error) -> Error {
    Error::Io {
        context: context.into(),
        kind: e.kind(),
        message: e.to_string(),
    }
}

/// Floats converted per read call.
const CHUNK_FLOATS: usize = 4096;
/// Trailing bytes counted at most, beyond those expected.
const TRAILING_COUNT_LIMIT: u64 = 1 << 30;

/// A reader that counts the bytes it delivered.
#[derive(Debug)]
struct Counting<R> {
    inner: R,
    position: u64,
    /// What is read, for messages (`the weights file`).
    name: &'static str,
}

impl<R: Read> Counting<R> {
    /// Fills `buf` as far as the stream goes; returns the bytes read (fewer only at the end).
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    // A `Read` that claims more than it was given is not trusted.
                    let k = k.min(buf.len() - n);
                    n += k;
                    self.position += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(io_error(
                        format!("reading {} at byte {}", self.name, self.position),
                        &e,
                    ));
                }
            }
        }
        Ok(n)
    }

    /// Counts the bytes left (up to [`TRAILING_COUNT_LIMIT`]) without keeping them.
    fn count_rest(&mut self) -> Result<u64> {
        let (position, name) = (self.position, self.name);
        let rest = io::copy(
            &mut (&mut self.inner).take(TRAILING_COUNT_LIMIT),
            &mut io::sink(),
        )
        .map_err(|e| io_error(format!("reading {name} after byte {position}"), &e))?;
        self.position += rest;
        Ok(rest)
    }
}

fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads a header; `then` describes what follows it, for the messages of a short file.
fn read_header_counted<R: Read>(
    src: &mut Counting<R>,
    then: Option<(u64, &str)>,
) -> Result<WeightsHeader> {
    let (after, then_text) = match then {
        Some((bytes, text)) => (bytes, format!(", then {bytes} bytes for {text}")),
        None => (0, String::new()),
    };
    let mut bytes = [0u8; 20];
    let got = src.fill(&mut bytes[..12])?;
    if got < 12 {
        return Err(Error::Truncated {
            what: "weights file".into(),
            expected: 16 + after,
            found: src.position,
            detail: format!(
                " (at least): the header (i32 major, minor, revision, then `seen` as u32 or u64) \
                 is cut after {got} of its first 12 bytes{then_text}"
            ),
        });
    }
    let mut header = WeightsHeader {
        major: i32_at(&bytes, 0),
        minor: i32_at(&bytes, 4),
        revision: i32_at(&bytes, 8),
        seen: 0,
    };
    let seen_len = if header.seen_is_u64() { 8 } else { 4 };
    let got = src.fill(&mut bytes[12..12 + seen_len])?;
    if got < seen_len {
        return Err(Error::Truncated {
            what: "weights file".into(),
            expected: 12 + seen_len as u64 + after,
            found: src.position,
            detail: format!(
                ": the header of version {}.{}.{} stores `seen` as a {}-byte integer, cut after \
                 {got} bytes{then_text}",
                header.major, header.minor, header.revision, seen_len
            ),
        });
    }
    header.seen = if seen_len == 8 {
        u64::from_le_bytes([
            bytes[12], bytes[13], bytes[14], bytes[15], bytes[16], bytes[17], bytes[18], bytes[19],
        ])
    } else {
        u64::from(u32::from_le_bytes([
            bytes[12], bytes[13], bytes[14], bytes[15],
        ]))
    };
    Ok(header)
}

/// Reads a `.weights` header (16 or 20 bytes, see [`WeightsHeader::seen_is_u64`]).
///
/// # Errors
/// [`Error::Truncated`] when the stream ends inside the header; [`Error::Io`] when reading fails.
pub fn read_header(reader: impl Read) -> Result<WeightsHeader> {
    read_header_counted(
        &mut Counting {
            inner: reader,
            position: 0,
            name: "the weights file",
        },
        None,
    )
}

/// Writes a `.weights` header (16 or 20 bytes, see [`WeightsHeader::seen_is_u64`]).
///
/// # Errors
/// [`Error::InvalidParameter`] for `seen` when the header stores it as a `u32` and it does not
/// fit; [`Error::Io`] when writing fails (a partial header may have been written).
pub fn write_header(mut writer: impl Write, header: &WeightsHeader) -> Result<()> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&header.major.to_le_bytes());
    bytes.extend_from_slice(&header.minor.to_le_bytes());
    bytes.extend_from_slice(&header.revision.to_le_bytes());
    if header.seen_is_u64() {
        bytes.extend_from_slice(&header.seen.to_le_bytes());
    } else {
        let seen = u32::try_from(header.seen).map_err(|_| Error::InvalidParameter {
            param: "seen",
            reason: format!(
                "{} does not fit the u32 that a version {}.{} header stores",
                header.seen, header.major, header.minor
            ),
        })?;
        bytes.extend_from_slice(&seen.to_le_bytes());
    }
    writer
        .write_all(&bytes)
        .map_err(|e| io_error("writing the weights header", &e))
}

/// Reads a `.weights` stream layer by layer: the header, then each layer's parameters, then
/// (with [`finish`](Self::finish)) the check that nothing is left.
///
/// After an error the stream position is unspecified; drop the reader.
///
/// # Example
/// ```
/// use deconv::darknet::{LoadOptions, WeightsHeader, WeightsReader, WeightsWriter};
/// use deconv::{DeconvConfig, DeconvLayer};
///
/// let a: DeconvLayer<f32> = DeconvLayer::new(&DeconvConfig::new(1, 3, 4, 4, 2, 4).seed(1))?;
/// let b: DeconvLayer<f32> = DeconvLayer::new(&DeconvConfig::new(1, 2, 7, 7, 1, 3).seed(2))?;
/// let mut writer = WeightsWriter::new(Vec::new(), &WeightsHeader::new(64))?;
/// writer.write_layer(&a)?;
/// writer.write_layer(&b)?;
/// let file = writer.finish()?;
///
/// let mut a2: DeconvLayer<f32> = DeconvLayer::new(&DeconvConfig::new(1, 3, 4, 4, 2, 4))?;
/// let mut b2: DeconvLayer<f32> = DeconvLayer::new(&DeconvConfig::new(1, 2, 7, 7, 1, 3))?;
/// let mut reader = WeightsReader::new(&file[..], &LoadOptions::new())?;
/// // Read both before changing either layer: all or nothing.
/// let pa = reader.read_params(&a2)?;
/// let pb = reader.read_params(&b2)?;
/// assert_eq!(reader.finish()?.seen, 64);
/// pa.apply_to(&mut a2)?;
/// pb.apply_to(&mut b2)?;
/// assert_eq!((a2.weights(), b2.weights()), (a.weights(), b.weights()));
/// # Ok::<(), deconv::Error>(())
/// ```
#[derive(Debug)]
pub struct WeightsReader<R> {
    src: Counting<R>,
    header: WeightsHeader,
    layers: usize,
    options: LoadOptions,
    /// The whole file's expected size, when known (for [`read_weights`]'s messages).
    expected_total: Option<u64>,
}

impl<R: Read> WeightsReader<R> {
    /// Reads the header from `reader`.
    ///
    /// # Errors
    /// As [`read_header`].
    pub fn new(reader: R, options: &LoadOptions) -> Result<Self> {
        Self::with_hint(reader, options, None)
    }

    fn with_hint(reader: R, options: &LoadOptions, then: Option<(u64, &str)>) -> Result<Self> {
        let mut src = Counting {
            inner: reader,
            position: 0,
            name: "the weights file",
        };
        let header = read_header_counted(&mut src, then)?;
        Ok(WeightsReader {
            src,
            expected_total: then.map(|(bytes, _)| header.byte_len().saturating_add(bytes)),
            header,
            layers: 0,
            options: *options,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &WeightsHeader {
        &self.header
    }

    /// Bytes read so far (header included).
    pub fn position(&self) -> u64 {
        self.src.position
    }

    /// Layers read so far.
    pub fn layers_read(&self) -> usize {
        self.layers
    }

    /// Reads the next layer's parameters, sized by `layer` (which is not changed).
    ///
    /// # Errors
    /// [`Error::Truncated`] when the stream ends first (saying which buffer and index it stopped
    /// in); [`Error::NonFinite`] for a NaN or infinity when the options reject them;
    /// [`Error::Io`] when reading fails.
    pub fn read_params<T: Element, B: Gemm<T>>(
        &mut self,
        layer: &DeconvLayer<T, B>,
    ) -> Result<LayerParams<T>> {
        let g = layer.geometry();
        let bn = layer.batch_normalize();
        let start = self.src.position;
        let layer_bytes = layout_byte_len(g, bn);
        let expected = self
            .expected_total
            .unwrap_or_else(|| start.saturating_add(layer_bytes));
        let n = g.filters();
        let bn_n = if bn { n } else { 0 };
        let mut params = LayerParams {
            biases: Vec::with_capacity(n),
            scales: Vec::with_capacity(bn_n),
            rolling_mean: Vec::with_capacity(bn_n),
            rolling_variance: Vec::with_capacity(bn_n),
            weights: Vec::with_capacity(g.weight_count()),
        };
        let mut chunk = vec![0u8; 4 * CHUNK_FLOATS.min(g.weight_count().max(n))];
        let index = self.layers;
        for (name, count, out) in [
            ("biases", n, &mut params.biases),
            ("scales", bn_n, &mut params.scales),
            ("rolling_mean", bn_n, &mut params.rolling_mean),
            ("rolling_variance", bn_n, &mut params.rolling_variance),
            ("weights", g.weight_count(), &mut params.weights),
        ] {
            let mut done = 0;
            while done < count {
                let take = (count - done).min(CHUNK_FLOATS);
                let bytes = &mut chunk[..4 * take];
                let chunk_start = self.src.position;
                let got = self.src.fill(bytes)?;
                if got < bytes.len() {
                    return Err(Error::Truncated {
                        what: "weights file".into(),
                        expected,
                        found: self.src.position,
                        detail: format!(
                            " (header {} bytes, then layer {index} takes {layer_bytes} bytes \
                             from offset {start}: {}); the data stops in `{name}`[{}] of {count}",
                            self.header.byte_len(),
                            describe(g, bn),
                            done + got / 4
                        ),
                    });
                }
                for (i, b) in bytes.chunks_exact(4).enumerate() {
                    let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    if self.options.reject_non_finite && !x.is_finite() {
                        return Err(Error::NonFinite {
                            buffer: name,
                            index: done + i,
                            layer: index,
                            offset: chunk_start + 4 * i as u64,
                            value: x.to_string(),
                        });
                    }
                    out.push(T::of(f64::from(x)));
                }
                done += take;
            }
        }
        self.layers += 1;
        Ok(params)
    }

    /// Reads the next layer's parameters into `layer`.
    ///
    /// # Errors
    /// As [`read_params`](Self::read_params); the layer is then unchanged.
    pub fn read_layer<T: Element, B: Gemm<T>>(
        &mut self,
        layer: &mut DeconvLayer<T, B>,
    ) -> Result<()> {
        self.read_params(layer)?.apply_to(layer)
    }

    /// Checks that the stream has ended and returns the header.
    ///
    /// # Errors
    /// [`Error::TrailingBytes`] when bytes are left (counted up to 1 GiB); [`Error::Io`] when
    /// reading fails.
    pub fn finish(mut self) -> Result<WeightsHeader> {
        let expected = self.src.position;
        let mut one = [0u8; 1];
        if self.src.fill(&mut one)? == 0 {
            return Ok(self.header);
        }
        let rest = self.src.count_rest()?;
        let at_least = if rest == TRAILING_COUNT_LIMIT {
            " (at least)"
        } else {
            ""
        };
        Err(Error::TrailingBytes {
            what: "weights file".into(),
            expected,
            found: self.src.position,
            detail: format!(
                " for the header and {} layer(s): {} trailing bytes{at_least} \
                 (a layer configuration that differs from the one saved: filters, size, groups, \
                 batch_normalize? or a file with more layers?)",
                self.layers,
                rest + 1
            ),
        })
    }

    /// The underlying reader (positioned after what was read).
    pub fn into_inner(self) -> R {
        self.src.inner
    }
}

/// Writes a `.weights` stream: the header (in [`new`](Self::new)), then layer after layer.
///
/// `f64` values are rounded to the nearest `f32` (those beyond its range become infinite).
#[derive(Debug)]
pub struct WeightsWriter<W: Write> {
    writer: W,
    layers: usize,
}

impl<W: Write> WeightsWriter<W> {
    /// Writes `header` to `writer`.
    ///
    /// # Errors
    /// As [`write_header`].
    pub fn new(mut writer: W, header: &WeightsHeader) -> Result<Self> {
        write_header(&mut writer, header)?;
        Ok(WeightsWriter { writer, layers: 0 })
    }

    /// Writes one layer's parameters.
    ///
    /// # Errors
    /// [`Error::Io`] when writing fails.
    pub fn write_layer<T: Element, B: Gemm<T>>(&mut self, layer: &DeconvLayer<T, B>) -> Result<()> {
        self.write_params(&LayerParams::from_layer(layer))
    }

    /// Writes parameters (in file order: biases, then the batch-norm buffers if not empty, then
    /// weights).
    ///
    /// # Errors
    /// [`Error::Io`] when writing fails.
    pub fn write_params<T: Element>(&mut self, params: &LayerParams<T>) -> Result<()> {
        let mut bytes = Vec::with_capacity(4 * CHUNK_FLOATS);
        for (name, values) in params.segments() {
            for chunk in values.chunks(CHUNK_FLOATS) {
                bytes.clear();
                for &x in chunk {
                    bytes.extend_from_slice(&(x.to_f64_lossless() as f32).to_le_bytes());
                }
                self.writer.write_all(&bytes).map_err(|e| {
                    io_error(format!("writing `{name}` of layer {}", self.layers), &e)
                })?;
            }
        }
        self.layers += 1;
        Ok(())
    }

    /// Layers written so far.
    pub fn layers_written(&self) -> usize {
        self.layers
    }

    /// Flushes and returns the writer.
    ///
    /// # Errors
    /// [`Error::Io`] when flushing fails.
    pub fn finish(mut self) -> Result<W> {
        self.writer
            .flush()
            .map_err(|e| io_error("flushing the weights file", &e))?;
        Ok(self.writer)
    }
}

/// Loads a `.weights` stream holding exactly one layer (header, the layer, nothing after) into
/// `layer`; returns the header. Sizes come from the layer, never from the file.
///
/// # Example
/// ```
/// use deconv::darknet::{read_weights, write_weights, LoadOptions, WeightsHeader};
/// use deconv::{DeconvConfig, DeconvLayer};
///
/// let config = DeconvConfig::new(1, 2, 4, 4, 3, 2).batch_normalize(true);
/// let saved: DeconvLayer<f32> = DeconvLayer::new(&config.clone().seed(5))?;
/// let mut file = Vec::new();
/// write_weights(&saved, &mut file, &WeightsHeader::new(10))?;
/// // 20-byte header, then 4 x 3 biases/scales/means/variances and 2 * 3 * 2 * 2 weights.
/// assert_eq!(file.len(), 20 + 4 * (4 * 3 + 24));
///
/// let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config)?; // f32 in the file, f64 here
/// let header = read_weights(&mut layer, &file[..], &LoadOptions::new())?;
/// assert_eq!(header, WeightsHeader::new(10));
/// assert_eq!(layer.weights()[0], f64::from(saved.weights()[0]));
///
/// // One float short: an error saying so, and the layer is unchanged.
/// let before = layer.weights().to_vec();
/// let err = read_weights(&mut layer, &file[..file.len() - 4], &LoadOptions::new()).unwrap_err();
/// assert!(err.to_string().starts_with("weights file ends after 160 bytes; expected 164 bytes"));
/// assert_eq!(layer.weights(), &before[..]);
/// # Ok::<(), deconv::Error>(())
/// ```
///
/// # Errors
/// [`Error::Truncated`] (which says the bytes expected and found, the layer's shape and where
/// the data stops), [`Error::TrailingBytes`], [`Error::NonFinite`] (when
/// `options.reject_non_finite`), [`Error::Io`]. On any error the layer is unchanged.
pub fn read_weights<T: Element, B: Gemm<T>>(
    layer: &mut DeconvLayer<T, B>,
    reader: impl Read,
    options: &LoadOptions,
) -> Result<WeightsHeader> {
    let what = format!(
        "layer 0 ({})",
        describe(layer.geometry(), layer.batch_normalize())
    );
    let mut r = WeightsReader::with_hint(reader, options, Some((layer_byte_len(layer), &what)))?;
    let params = r.read_params(layer)?;
    let header = r.finish()?;
    params.apply_to(layer)?;
    Ok(header)
}

/// Writes `header` and `layer` as a one-layer `.weights` stream (Darknet's `save_weights` for a
/// network of this one layer).
///
/// # Errors
/// As [`write_header`] and [`WeightsWriter::write_layer`].
pub fn write_weights<T: Element, B: Gemm<T>>(
    layer: &DeconvLayer<T, B>,
    writer: impl Write,
    header: &WeightsHeader,
) -> Result<()> {
    let mut w = WeightsWriter::new(writer, header)?;
    w.write_layer(layer)?;
    w.finish()?;
    Ok(())
}

/// [`read_weights`] from the file at `path`.
///
/// # Example
/// ```
/// use deconv::darknet::{load_weights, save_weights, LoadOptions, WeightsHeader};
/// use deconv::{DeconvConfig, DeconvLayer};
///
/// let config = DeconvConfig::new(1, 3, 4, 4, 2, 4).stride(2).pad(1);
/// let saved: DeconvLayer<f32> = DeconvLayer::new(&config.clone().seed(3))?;
/// let path = std::env::temp_dir().join(format!("deconv-doc-{}.weights", std::process::id()));
/// save_weights(&saved, &path, &WeightsHeader::new(0))?;
///
/// let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config)?;
/// load_weights(&mut layer, &path, &LoadOptions::new().reject_non_finite(true))?;
/// assert_eq!(layer.weights(), saved.weights());
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), deconv::Error>(())
/// ```
///
/// # Errors
/// As [`read_weights`], and [`Error::Io`] when the file cannot be opened.
pub fn load_weights<T: Element, B: Gemm<T>>(
    layer: &mut DeconvLayer<T, B>,
    path: impl AsRef<Path>,
    options: &LoadOptions,
) -> Result<WeightsHeader> {
    let path = path.as_ref();
    let file = File::open(path)
        .map_err(|e| io_error(format!("opening weights file {}", path.display()), &e))?;
    read_weights(layer, file, options)
}

/// [`write_weights`] to the file at `path` (created or truncated).
///
/// # Errors
/// As [`write_weights`], and [`Error::Io`] when the file cannot be created.
pub fn save_weights<T: Element, B: Gemm<T>>(
    layer: &DeconvLayer<T, B>,
    path: impl AsRef<Path>,
    header: &WeightsHeader,
) -> Result<()> {
    let path = path.as_ref();
    let file = File::create(path)
        .map_err(|e| io_error(format!("creating weights file {}", path.display()), &e))?;
    let mut writer = BufWriter::new(file);
    write_weights(layer, &mut writer, header)?;
    writer
        .into_inner()
        .map_err(|e| io_error(format!("writing {}", path.display()), e.error()))?
        .sync_all()
        .map_err(|e| io_error(format!("syncing {}", path.display()), &e))
}

// ---------------------------------------------------------------------------------------------
// A forward pass from files, to compare with Darknet
// ---------------------------------------------------------------------------------------------

/// The files and input shape of [`forward_files`].
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardFiles {
    /// A text file holding one `[deconvolutional]` section.
    pub cfg: PathBuf,
    /// A `.weights` file holding that one layer.
    pub weights: PathBuf,
    /// The input, `batch * channels * h * w` little-endian `f32`s, NCHW.
    pub input: PathBuf,
    /// Where to write the output, `batch * filters * out_h * out_w` little-endian `f32`s, NCHW.
    pub output: PathBuf,
    /// The input's batch, channels, height and width.
    pub shape: InputShape,
    /// How to load the weights.
    pub options: LoadOptions,
}

/// What [`forward_files`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardReport {
    /// The layer's configuration, from the cfg section.
    pub config: DeconvConfig,
    /// The weights file's header.
    pub header: WeightsHeader,
    /// `[batch, channels, height, width]` of the input.
    pub input_shape: [usize; 4],
    /// `[batch, channels, height, width]` of the output.
    pub output_shape: [usize; 4],
    /// The output written.
    pub output: Vec<f32>,
}

/// Builds an `f32` layer from a cfg section and a `.weights` file, runs an inference forward
/// pass ([`Mode::Inference`]: batch norm uses the rolling statistics) on a raw little-endian
/// `f32` input file and writes the output as raw little-endian `f32` (what
/// `examples/darknet_forward.rs` does, to compare with Darknet's numbers).
///
/// # Errors
/// The cfg's errors ([`parse_deconvolutional`]), the weights' errors ([`load_weights`]),
/// [`Error::Truncated`] / [`Error::TrailingBytes`] when the input file is not exactly
/// `batch * channels * h * w * 4` bytes, [`Error::Io`] for file errors.
pub fn forward_files(job: &ForwardFiles) -> Result<ForwardReport> {
    let cfg = std::fs::read_to_string(&job.cfg)
        .map_err(|e| io_error(format!("reading cfg file {}", job.cfg.display()), &e))?;
    let config = parse_deconvolutional(&cfg, job.shape)?;
    let mut layer: DeconvLayer<f32, DefaultBackend> = DeconvLayer::new(&config)?;
    let header = load_weights(&mut layer, &job.weights, &job.options)?;
    let g = *layer.geometry();
    let input = read_f32_file(&job.input, g.batch() * g.inputs(), || {
        format!(
            " for batch = {} x in_c = {} x in_h = {} x in_w = {} little-endian f32s",
            g.batch(),
            g.in_channels(),
            g.in_h(),
            g.in_w()
        )
    })?;
    let output = layer.forward(&input, Mode::Inference)?.to_vec();
    let mut bytes = Vec::with_capacity(4 * output.len());
    for x in &output {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&job.output, &bytes)
        .map_err(|e| io_error(format!("writing output file {}", job.output.display()), &e))?;
    Ok(ForwardReport {
        config,
        header,
        input_shape: [g.batch(), g.in_channels(), g.in_h(), g.in_w()],
        output_shape: [g.batch(), g.filters(), g.out_h(), g.out_w()],
        output,
    })
}

/// Reads exactly `count` little-endian `f32`s from the file at `path`, which may be a pipe
/// (its size is not known before it is read).
fn read_f32_file(path: &Path, count: usize, detail: impl Fn() -> String) -> Result<Vec<f32>> {
    let context = || format!("reading input file {}", path.display());
    let file = File::open(path).map_err(|e| io_error(context(), &e))?;
    let mut src = Counting {
        inner: io::BufReader::new(file),
        position: 0,
        name: "the input file",
    };
    let expected = (count as u64).saturating_mul(4);
    let mut bytes = crate::alloc::filled("input file", count.saturating_mul(4), 0u8)?;
    let found = src.fill(&mut bytes)? as u64;
    if found < expected {
        return Err(Error::Truncated {
            what: "input file".into(),
            expected,
            found,
            detail: detail(),
        });
    }
    let rest = src.count_rest()?;
    if rest > 0 {
        return Err(Error::TrailingBytes {
            what: "input file".into(),
            expected,
            found: expected + rest,
            detail: detail(),
        });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}
