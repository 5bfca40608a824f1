//! Darknet files: `.weights` read/write (round trips, known bytes, every corruption, the layer
//! unchanged after a failed load), `[deconvolutional]` cfg parsing, and the forward-from-files
//! path of `examples/darknet_forward.rs`.

use std::io::{self, Read};
use std::path::PathBuf;

use deconv::darknet::{
    DeconvSection, ForwardFiles, LayerParams, LoadOptions, WeightsHeader, WeightsReader,
    WeightsWriter, forward_files, layer_byte_len, load_weights, parse_deconvolutional, read_header,
    read_weights, save_weights, write_header, write_weights,
};
use deconv::{
    Activation, DeconvConfig, DeconvLayer, DefaultBackend, Element, Error, Gemm, InputShape, Mode,
};

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

/// Everything a load could change, and the gradient buffers it must not touch.
#[derive(Debug, PartialEq)]
struct Snapshot<T> {
    params: LayerParams<T>,
    weight_updates: Vec<T>,
    bias_updates: Vec<T>,
}

fn snapshot<T: Element>(layer: &DeconvLayer<T>) -> Snapshot<T>
where
    DefaultBackend: Gemm<T>,
{
    Snapshot {
        params: LayerParams::from_layer(layer),
        weight_updates: layer.weight_updates().to_vec(),
        bias_updates: layer.bias_updates().to_vec(),
    }
}

/// Gives every parameter a distinct value that is exact in `f32`.
fn fill_distinct<T: Element>(layer: &mut DeconvLayer<T>, salt: u32)
where
    DefaultBackend: Gemm<T>,
{
    let mut next = f64::from(salt) * 1000.0;
    let mut value32 = move || {
        next += 1.0;
        (next * 0.37).sin() as f32
    };
    let mut value = || T::of(f64::from(value32()));
    for x in layer.biases_mut() {
        *x = value();
    }
    for x in layer.weights_mut() {
        *x = value();
    }
    if let Some(s) = layer.scales_mut() {
        s.iter_mut().for_each(|x| *x = value());
    }
    if let Some(m) = layer.rolling_mean_mut() {
        m.iter_mut().for_each(|x| *x = value());
    }
    if let Some(v) = layer.rolling_variance_mut() {
        v.iter_mut()
            .for_each(|x| *x = T::of(f64::from(value32().abs() + 1.0)));
    }
}

fn le_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn header_v02(seen: u64) -> Vec<u8> {
    let mut b = Vec::new();
    for x in [0i32, 2, 0] {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.extend_from_slice(&seen.to_le_bytes());
    b
}

fn header_v01(seen: u32) -> Vec<u8> {
    let mut b = Vec::new();
    for x in [0i32, 1, 0] {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.extend_from_slice(&seen.to_le_bytes());
    b
}

/// c = 1, n = 2, 2x2 kernel, batch norm: 2 biases, 2 scales, 2 means, 2 variances, 8 weights.
fn small_bn_layer() -> DeconvLayer<f32> {
    DeconvLayer::new(&DeconvConfig::new(1, 1, 3, 3, 2, 2).batch_normalize(true)).unwrap()
}

/// The 16 values of `small_bn_layer`'s file body, in file order.
const SMALL_BODY: [f32; 16] = [
    0.5, -1.5, // biases
    1.0, 2.0, // scales
    0.25, -0.25, // rolling_mean
    4.0, 9.0, // rolling_variance
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, // weights [c=1][n=2][2][2]
];

fn small_file() -> Vec<u8> {
    let mut f = header_v02(1234);
    f.extend(le_f32(&SMALL_BODY));
    f
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "deconv-darknet-files-{}-{name}",
        std::process::id()
    ))
}

/// Loads `bytes` into a copy of `layer`, expects an error, checks the layer is unchanged, and
/// returns the error's message.
fn expect_load_error(layer: &mut DeconvLayer<f32>, bytes: &[u8], options: &LoadOptions) -> Error {
    let before = snapshot(layer);
    let err = read_weights(layer, bytes, options).expect_err("the load should fail");
    assert_eq!(
        snapshot(layer),
        before,
        "layer changed by a failed load: {err}"
    );
    err
}

fn assert_contains(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "`{part}` not in: {message}");
    }
}

// ------------------------------------------------------------------------------------------
// .weights: round trips
// ------------------------------------------------------------------------------------------

fn round_trip_configs() -> Vec<DeconvConfig> {
    vec![
        DeconvConfig::new(1, 3, 5, 5, 4, 4).stride(2).pad(1),
        DeconvConfig::new(2, 3, 5, 5, 4, 3).batch_normalize(true),
        DeconvConfig::new(1, 4, 3, 6, 6, 3).groups(2),
        DeconvConfig::new(2, 6, 4, 4, 4, 2)
            .groups(2)
            .batch_normalize(true)
            .stride(2),
        DeconvConfig::new(1, 2, 4, 3, 3, 1)
            .kernel_hw(2, 5)
            .dilation(2),
    ]
}

fn round_trip<T: Element>()
where
    DefaultBackend: Gemm<T>,
{
    for (i, config) in round_trip_configs().into_iter().enumerate() {
        let mut original: DeconvLayer<T> = DeconvLayer::new(&config.clone().seed(9)).unwrap();
        fill_distinct(&mut original, i as u32);
        let header = WeightsHeader::new(4242 + i as u64);
        let mut file = Vec::new();
        write_weights(&original, &mut file, &header).unwrap();
        let g = original.geometry();
        let bn = if config.batch_normalize { 4 } else { 1 };
        let expected_len = 20 + 4 * (bn * g.filters() + g.weight_count());
        assert_eq!(file.len(), expected_len, "{config:?}");
        assert_eq!(layer_byte_len(&original) as usize, expected_len - 20);

        let mut copy: DeconvLayer<T> = DeconvLayer::new(&config.clone().seed(10)).unwrap();
        assert_ne!(copy.weights(), original.weights());
        let read = read_weights(
            &mut copy,
            &file[..],
            &LoadOptions::new().reject_non_finite(true),
        )
        .unwrap();
        assert_eq!(read, header);
        assert_eq!(
            LayerParams::from_layer(&copy),
            LayerParams::from_layer(&original),
            "{config:?}"
        );
        // Written again, the bytes are identical.
        let mut again = Vec::new();
        write_weights(&copy, &mut again, &header).unwrap();
        assert_eq!(again, file);
    }
}

#[test]
fn round_trip_f32_identical_parameters() {
    round_trip::<f32>();
}

#[test]
fn round_trip_f64_identical_parameters() {
    round_trip::<f64>();
}

#[test]
fn f64_values_are_rounded_to_f32_in_the_file() {
    let config = DeconvConfig::new(1, 1, 2, 2, 1, 1);
    let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    layer.weights_mut()[0] = 0.1;
    let mut file = Vec::new();
    write_weights(&layer, &mut file, &WeightsHeader::default()).unwrap();
    let mut copy: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    read_weights(&mut copy, &file[..], &LoadOptions::new()).unwrap();
    assert_eq!(copy.weights()[0], f64::from(0.1f32));
}

#[test]
fn save_and_load_through_paths() {
    let config = DeconvConfig::new(1, 2, 4, 4, 3, 4)
        .stride(2)
        .batch_normalize(true);
    let mut original: DeconvLayer<f32> = DeconvLayer::new(&config.clone().seed(1)).unwrap();
    fill_distinct(&mut original, 7);
    let path = temp_path("paths.weights");
    save_weights(&original, &path, &WeightsHeader::new(77)).unwrap();
    let mut copy: DeconvLayer<f32> = DeconvLayer::new(&config).unwrap();
    let header = load_weights(&mut copy, &path, &LoadOptions::new()).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(header, WeightsHeader::new(77));
    assert_eq!(snapshot(&copy).params, snapshot(&original).params);

    let err = load_weights(&mut copy, &path, &LoadOptions::new()).unwrap_err();
    match &err {
        Error::Io { kind, context, .. } => {
            assert_eq!(*kind, io::ErrorKind::NotFound);
            assert!(context.contains("paths.weights"), "{err}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn several_layers_in_one_stream() {
    let configs = [
        DeconvConfig::new(1, 3, 4, 4, 2, 4).stride(2).pad(1),
        DeconvConfig::new(1, 2, 8, 8, 4, 3).batch_normalize(true),
        DeconvConfig::new(1, 4, 8, 8, 2, 2).groups(2),
    ];
    let originals: Vec<DeconvLayer<f32>> = configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut l = DeconvLayer::new(c).unwrap();
            fill_distinct(&mut l, i as u32 + 1);
            l
        })
        .collect();
    let mut writer = WeightsWriter::new(Vec::new(), &WeightsHeader::new(5)).unwrap();
    for l in &originals {
        writer.write_layer(l).unwrap();
    }
    assert_eq!(writer.layers_written(), 3);
    let file = writer.finish().unwrap();
    let total: u64 = 20 + originals.iter().map(layer_byte_len).sum::<u64>();
    assert_eq!(file.len() as u64, total);

    let mut copies: Vec<DeconvLayer<f32>> = configs
        .iter()
        .map(|c| DeconvLayer::new(c).unwrap())
        .collect();
    let mut reader = WeightsReader::new(&file[..], &LoadOptions::new()).unwrap();
    assert_eq!(reader.header(), &WeightsHeader::new(5));
    for copy in &mut copies {
        reader.read_layer(copy).unwrap();
    }
    assert_eq!(reader.layers_read(), 3);
    assert_eq!(reader.position(), total);
    assert_eq!(reader.finish().unwrap(), WeightsHeader::new(5));
    for (a, b) in originals.iter().zip(&copies) {
        assert_eq!(LayerParams::from_layer(a), LayerParams::from_layer(b));
    }

    // Cut inside the third layer: the message names layer 2, its offset and the buffer.
    let cut = &file[..file.len() - 6];
    let mut reader = WeightsReader::new(cut, &LoadOptions::new()).unwrap();
    reader.read_layer(&mut copies[0]).unwrap();
    reader.read_layer(&mut copies[1]).unwrap();
    let before = snapshot(&copies[2]);
    let err = reader.read_layer(&mut copies[2]).unwrap_err();
    assert_eq!(snapshot(&copies[2]), before);
    let start = 20 + layer_byte_len(&originals[0]) + layer_byte_len(&originals[1]);
    assert_contains(
        &err.to_string(),
        &[
            &format!("weights file ends after {} bytes", total - 6),
            &format!("expected {total} bytes"),
            &format!("layer 2 takes {} bytes", layer_byte_len(&originals[2])),
            &format!("from offset {start}"),
            "groups = 2",
            "stops in `weights`[14] of 16",
        ],
    );

    // One layer fewer than the file holds: finish() reports the rest.
    let mut reader = WeightsReader::new(&file[..], &LoadOptions::new()).unwrap();
    reader.read_layer(&mut copies[0]).unwrap();
    let err = reader.finish().unwrap_err();
    assert_contains(
        &err.to_string(),
        &[
            &format!("weights file has {total} bytes"),
            &format!("expected {} bytes", 20 + layer_byte_len(&originals[0])),
            "1 layer(s)",
        ],
    );
}

// ------------------------------------------------------------------------------------------
// .weights: known bytes, both header versions
// ------------------------------------------------------------------------------------------

fn check_small_values(layer: &DeconvLayer<f32>) {
    assert_eq!(layer.biases(), &SMALL_BODY[0..2]);
    assert_eq!(layer.scales().unwrap(), &SMALL_BODY[2..4]);
    assert_eq!(layer.rolling_mean().unwrap(), &SMALL_BODY[4..6]);
    assert_eq!(layer.rolling_variance().unwrap(), &SMALL_BODY[6..8]);
    assert_eq!(layer.weights(), &SMALL_BODY[8..16]);
}

#[test]
fn hand_built_file_version_0_2_with_u64_seen() {
    let file = small_file();
    assert_eq!(file.len(), 20 + 64);
    // Spot-check the bytes themselves: minor = 2 at offset 4, seen = 1234 at 12, 0.5 at 20.
    assert_eq!(&file[4..8], &[2, 0, 0, 0]);
    assert_eq!(&file[12..20], &[0xd2, 0x04, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&file[20..24], &[0, 0, 0, 0x3f]);
    let mut layer = small_bn_layer();
    let header = read_weights(&mut layer, &file[..], &LoadOptions::new()).unwrap();
    assert_eq!(
        header,
        WeightsHeader {
            major: 0,
            minor: 2,
            revision: 0,
            seen: 1234
        }
    );
    check_small_values(&layer);
    // And writing produces exactly these bytes.
    let mut written = Vec::new();
    write_weights(&layer, &mut written, &header).unwrap();
    assert_eq!(written, file);
}

#[test]
fn hand_built_file_version_0_1_with_u32_seen() {
    let mut file = header_v01(0xdead_beef);
    file.extend(le_f32(&SMALL_BODY));
    assert_eq!(file.len(), 16 + 64);
    let mut layer = small_bn_layer();
    let header = read_weights(&mut layer, &file[..], &LoadOptions::new()).unwrap();
    assert_eq!(
        header,
        WeightsHeader {
            major: 0,
            minor: 1,
            revision: 0,
            seen: 0xdead_beef
        }
    );
    assert!(!header.seen_is_u64());
    assert_eq!(header.byte_len(), 16);
    check_small_values(&layer);
    let mut written = Vec::new();
    write_weights(&layer, &mut written, &header).unwrap();
    assert_eq!(written, file);
}

#[test]
fn header_versions_follow_darknets_rule() {
    // (major, minor, seen is u64)
    for (major, minor, wide) in [
        (0, 0, false),
        (0, 1, false),
        (0, 2, true),
        (1, 0, true),
        (0, 999, true),
        (999, 0, true),
        (0, 1000, false),
        (1000, 0, false),
        (-1, 11, false),
        (-1, 12, true),
        (i32::MAX, i32::MAX, false),
        (i32::MIN, 5, false),
    ] {
        let header = WeightsHeader {
            major,
            minor,
            revision: 7,
            seen: 99,
        };
        assert_eq!(header.seen_is_u64(), wide, "{major}.{minor}");
        let mut bytes = Vec::new();
        write_header(&mut bytes, &header).unwrap();
        assert_eq!(bytes.len() as u64, header.byte_len());
        assert_eq!(bytes.len(), if wide { 20 } else { 16 });
        assert_eq!(read_header(&bytes[..]).unwrap(), header);
    }
    assert_eq!(WeightsHeader::default(), WeightsHeader::new(0));
}

#[test]
fn u32_seen_that_does_not_fit_is_a_write_error() {
    let header = WeightsHeader {
        major: 0,
        minor: 1,
        revision: 0,
        seen: u64::from(u32::MAX) + 1,
    };
    let mut out = Vec::new();
    let err = write_header(&mut out, &header).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidParameter { param: "seen", reason } if reason.contains("4294967296")),
        "{err}"
    );
    assert!(out.is_empty());
}

// ------------------------------------------------------------------------------------------
// .weights: corruption (every error leaves the layer unchanged)
// ------------------------------------------------------------------------------------------

#[test]
fn empty_file_is_truncated() {
    let mut layer = small_bn_layer();
    let err = expect_load_error(&mut layer, &[], &LoadOptions::new());
    assert!(matches!(err, Error::Truncated { found: 0, .. }), "{err:?}");
    assert_contains(
        &err.to_string(),
        &[
            "weights file ends after 0 bytes",
            "expected 80 bytes (at least)",
            "cut after 0 of its first 12 bytes",
            "then 64 bytes for layer 0",
            "filters (n) = 2, in_channels (c) = 1, kernel = 2x2, groups = 1, batch_normalize = 1",
        ],
    );
}

#[test]
fn header_only_is_truncated() {
    let mut layer = small_bn_layer();
    let err = expect_load_error(&mut layer, &header_v02(1), &LoadOptions::new());
    assert!(
        matches!(
            err,
            Error::Truncated {
                expected: 84,
                found: 20,
                ..
            }
        ),
        "{err:?}"
    );
    assert_contains(
        &err.to_string(),
        &[
            "weights file ends after 20 bytes; expected 84 bytes",
            "header 20 bytes",
            "layer 0 takes 64 bytes from offset 20",
            "batch_normalize = 1",
            "stops in `biases`[0] of 2",
        ],
    );
    // Version 0.1: a 16-byte header.
    let err = expect_load_error(&mut layer, &header_v01(1), &LoadOptions::new());
    assert_contains(
        &err.to_string(),
        &["ends after 16 bytes; expected 80 bytes", "header 16 bytes"],
    );
}

#[test]
fn header_cut_midway_is_truncated() {
    let mut layer = small_bn_layer();
    let file = small_file();
    for cut in [1, 4, 11] {
        let err = expect_load_error(&mut layer, &file[..cut], &LoadOptions::new());
        assert_contains(
            &err.to_string(),
            &[
                &format!("ends after {cut} bytes; expected 80 bytes (at least)"),
                &format!("cut after {cut} of its first 12 bytes"),
            ],
        );
    }
    for cut in [12, 15, 19] {
        let err = expect_load_error(&mut layer, &file[..cut], &LoadOptions::new());
        assert_contains(
            &err.to_string(),
            &[
                &format!("ends after {cut} bytes; expected 84 bytes"),
                "version 0.2.0 stores `seen` as a 8-byte integer",
                &format!("cut after {} bytes", cut - 12),
            ],
        );
    }
    let v01 = header_v01(3);
    let err = expect_load_error(&mut layer, &v01[..14], &LoadOptions::new());
    assert_contains(
        &err.to_string(),
        &[
            "ends after 14 bytes; expected 80 bytes",
            "version 0.1.0 stores `seen` as a 4-byte integer, cut after 2 bytes",
        ],
    );
}

#[test]
fn one_float_short_is_truncated() {
    let mut layer = small_bn_layer();
    let file = small_file();
    let err = expect_load_error(&mut layer, &file[..file.len() - 4], &LoadOptions::new());
    assert_eq!(
        err,
        Error::Truncated {
            what: "weights file".into(),
            expected: 84,
            found: 80,
            detail:
                " (header 20 bytes, then layer 0 takes 64 bytes from offset 20: filters (n) = 2, \
                     in_channels (c) = 1, kernel = 2x2, groups = 1, batch_normalize = 1); the data \
                     stops in `weights`[7] of 8"
                    .into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "weights file ends after 80 bytes; expected 84 bytes (header 20 bytes, then layer 0 takes \
         64 bytes from offset 20: filters (n) = 2, in_channels (c) = 1, kernel = 2x2, groups = 1, \
         batch_normalize = 1); the data stops in `weights`[7] of 8"
    );
}

#[test]
fn every_cut_point_is_an_error_naming_the_right_buffer() {
    let mut layer = small_bn_layer();
    let file = small_file();
    let names = [
        "biases",
        "biases",
        "scales",
        "scales",
        "rolling_mean",
        "rolling_mean",
        "rolling_variance",
        "rolling_variance",
    ];
    for cut in 0..file.len() {
        let err = expect_load_error(&mut layer, &file[..cut], &LoadOptions::new());
        assert!(
            matches!(err, Error::Truncated { found, .. } if found == cut as u64),
            "{err}"
        );
        if cut >= 20 {
            let value = (cut - 20) / 4;
            let (name, index, count) = if value < 8 {
                (names[value], value % 2, 2)
            } else {
                ("weights", value - 8, 8)
            };
            assert_contains(
                &err.to_string(),
                &[&format!("stops in `{name}`[{index}] of {count}")],
            );
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut layer = small_bn_layer();
    for extra in [1usize, 3, 4, 1000] {
        let mut file = small_file();
        file.extend(std::iter::repeat_n(0u8, extra));
        let err = expect_load_error(&mut layer, &file, &LoadOptions::new());
        assert!(
            matches!(err, Error::TrailingBytes { expected: 84, found, .. } if found == 84 + extra as u64),
            "{err:?}"
        );
        assert_contains(
            &err.to_string(),
            &[
                &format!("weights file has {} bytes; expected 84 bytes", 84 + extra),
                &format!("{extra} trailing bytes"),
                "1 layer(s)",
            ],
        );
    }
}

#[test]
fn file_for_another_layer_shape_is_an_error() {
    // Saved without batch norm, loaded with: 16 bytes short of the 4 x n buffers.
    let plain = DeconvConfig::new(1, 1, 3, 3, 2, 2);
    let mut saved: DeconvLayer<f32> = DeconvLayer::new(&plain).unwrap();
    fill_distinct(&mut saved, 3);
    let mut file = Vec::new();
    write_weights(&saved, &mut file, &WeightsHeader::new(0)).unwrap();
    let mut layer = small_bn_layer();
    let err = expect_load_error(&mut layer, &file, &LoadOptions::new());
    assert_contains(
        &err.to_string(),
        &[
            "ends after 60 bytes; expected 84 bytes",
            "batch_normalize = 1",
        ],
    );
    // And the other way round: 24 bytes left over.
    let mut plain_layer: DeconvLayer<f32> = DeconvLayer::new(&plain).unwrap();
    let before = snapshot(&plain_layer);
    let err = read_weights(&mut plain_layer, &small_file()[..], &LoadOptions::new()).unwrap_err();
    assert_eq!(snapshot(&plain_layer), before);
    assert_contains(
        &err.to_string(),
        &["has 84 bytes; expected 60 bytes", "24 trailing bytes"],
    );
}

#[test]
fn non_finite_values_rejected_when_asked_and_accepted_otherwise() {
    let reject = LoadOptions::new().reject_non_finite(true);
    for (position, buffer, index) in [
        (0, "biases", 0),
        (3, "scales", 1),
        (4, "rolling_mean", 0),
        (7, "rolling_variance", 1),
        (15, "weights", 7),
    ] {
        for (bad, shown) in [
            (f32::NAN, "NaN"),
            (f32::INFINITY, "inf"),
            (f32::NEG_INFINITY, "-inf"),
        ] {
            let mut body = SMALL_BODY;
            body[position] = bad;
            let mut file = header_v02(0);
            file.extend(le_f32(&body));

            let mut layer = small_bn_layer();
            let err = expect_load_error(&mut layer, &file, &reject);
            let offset = 20 + 4 * position as u64;
            assert_eq!(
                err,
                Error::NonFinite {
                    buffer,
                    index,
                    layer: 0,
                    offset,
                    value: shown.into()
                }
            );
            assert_contains(
                &err.to_string(),
                &[
                    &format!("non-finite value {shown} in `{buffer}`[{index}] of layer 0"),
                    &format!("byte offset {offset}"),
                ],
            );

            // Accepted by default, bit for bit where it can be compared.
            read_weights(&mut layer, &file[..], &LoadOptions::new()).unwrap();
            let params = LayerParams::from_layer(&layer);
            let all: Vec<f32> = [
                params.biases,
                params.scales,
                params.rolling_mean,
                params.rolling_variance,
                params.weights,
            ]
            .concat();
            assert_eq!(all[position].to_bits(), bad.to_bits());
        }
    }
}

/// A reader that fails after some bytes.
struct FailingReader {
    data: Vec<u8>,
    at: usize,
    fail_at: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.fail_at {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf
            .len()
            .min(self.fail_at - self.at)
            .min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A reader that hands out one byte per call and is interrupted every other call.
struct TrickleReader {
    data: Vec<u8>,
    at: usize,
    calls: usize,
}

impl Read for TrickleReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(2) {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        if self.at == self.data.len() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.data[self.at];
        self.at += 1;
        Ok(1)
    }
}

#[test]
fn io_errors_are_reported_and_interrupted_reads_retried() {
    let mut layer = small_bn_layer();
    let before = snapshot(&layer);
    let reader = FailingReader {
        data: small_file(),
        at: 0,
        fail_at: 30,
    };
    let err = read_weights(&mut layer, reader, &LoadOptions::new()).unwrap_err();
    assert_eq!(snapshot(&layer), before);
    match &err {
        Error::Io {
            kind,
            message,
            context,
        } => {
            assert_eq!(*kind, io::ErrorKind::Other);
            assert_eq!(message, "disk on fire");
            assert!(context.contains("byte 30"), "{err}");
        }
        other => panic!("unexpected {other:?}"),
    }

    let reader = TrickleReader {
        data: small_file(),
        at: 0,
        calls: 0,
    };
    read_weights(&mut layer, reader, &LoadOptions::new()).unwrap();
    check_small_values(&layer);
}

// ------------------------------------------------------------------------------------------
// cfg sections
// ------------------------------------------------------------------------------------------

#[test]
fn cfg_defaults_are_darknets() {
    let section = DeconvSection::parse("[deconvolutional]\n").unwrap();
    assert_eq!(section, DeconvSection::default());
    let config = parse_deconvolutional("", InputShape::new(2, 3, 5, 6)).unwrap();
    assert_eq!(
        config,
        DeconvConfig::new(2, 3, 5, 6, 1, 1).activation(Activation::Logistic)
    );
    assert_eq!(config.stride, [1, 1]);
    assert_eq!(config.pad, [0, 0]);
    assert!(!config.batch_normalize);
}

#[test]
fn cfg_pad_overrides_padding() {
    for (text, padding) in [
        ("size=4\npad=1\npadding=3", 2),
        ("size=5\npadding=3\npad=1", 2),
        ("size=3\npad=1", 1),
        ("size=1\npad=1", 0),
        ("size=4\npadding=3", 3),
        ("size=4\npad=0\npadding=1", 1),
    ] {
        let config = parse_deconvolutional(text, InputShape::new(1, 1, 8, 8)).unwrap();
        assert_eq!(config.pad, [padding, padding], "{text}");
    }
}

#[test]
fn cfg_comments_and_whitespace() {
    let text = "# leading comment\r\n\
                ; another\r\n\
                \r\n\
                \t[deconvolutional]  \r\n\
                  filters = 8\r\n\
                # size=5\r\n\
                s i z e\t=\t3\r\n\
                activation= leaky \r\n\
                ;activation=relu\n\
                \n";
    let config = parse_deconvolutional(text, InputShape::new(1, 2, 4, 4)).unwrap();
    assert_eq!(config.filters, 8);
    let with_bom = format!("\u{feff}{text}");
    assert_eq!(
        parse_deconvolutional(&with_bom, InputShape::new(1, 2, 4, 4)).unwrap(),
        config
    );
    assert_eq!(config.kernel, [3, 3]);
    assert_eq!(config.activation, Activation::Leaky);
}

#[test]
fn cfg_duplicated_keys_first_occurrence_wins() {
    let text = "filters=3\nsize=2\nfilters=5\nactivation=relu\nactivation=tanh\nsize=x";
    let section = DeconvSection::parse(text).unwrap();
    assert_eq!(section.filters, 3);
    assert_eq!(section.size, 2);
    assert_eq!(section.activation, Activation::Relu);
    assert_eq!(
        section.ignored_duplicates,
        vec![
            (3, "filters".to_owned()),
            (5, "activation".to_owned()),
            (6, "size".to_owned())
        ]
    );
}

#[test]
fn cfg_header_is_optional_and_deconv_is_an_alias() {
    let body = "filters=2\nsize=3\n";
    let a = DeconvSection::parse(body).unwrap();
    let b = DeconvSection::parse(&format!("[deconvolutional]\n{body}")).unwrap();
    let c = DeconvSection::parse(&format!("# c\n[deconv]\n{body}")).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn cfg_network_keys_are_accepted_and_returned() {
    let text = "filters=2\nlearning_rate=0.1\nstopbackward=1\nsmooth=.5\ndontload=0";
    let section = DeconvSection::parse(text).unwrap();
    assert_eq!(section.learning_rate_scale, 0.1);
    assert_eq!(
        section.network_options,
        vec![
            ("stopbackward".to_owned(), "1".to_owned()),
            ("smooth".to_owned(), ".5".to_owned()),
            ("dontload".to_owned(), "0".to_owned())
        ]
    );
    assert_eq!(DeconvSection::parse(&section.to_string()).unwrap(), section);
    let config = parse_deconvolutional(text, InputShape::new(1, 1, 2, 2)).unwrap();
    assert_eq!(config.filters, 2);
}

/// Parses `text`, expects an `Error::Cfg` at `line` for `key`, returns the message.
fn cfg_err(text: &str, line: usize, key: Option<&str>) -> String {
    let err = parse_deconvolutional(text, InputShape::new(1, 1, 4, 4)).unwrap_err();
    match &err {
        Error::Cfg {
            line: l, key: k, ..
        } => {
            assert_eq!(*l, Some(line), "{err}");
            assert_eq!(k.as_deref(), key, "{err}");
        }
        other => panic!("expected a cfg error for {text:?}, got {other:?}"),
    }
    err.to_string()
}

#[test]
fn cfg_errors_name_the_line_and_key() {
    let m = cfg_err("[deconvolutional]\nfilters=2\nsize=3x", 3, Some("size"));
    assert_contains(
        &m,
        &["cfg line 3, key `size`: malformed number `3x`", "atoi"],
    );
    let m = cfg_err("size=", 1, Some("size"));
    assert_contains(&m, &["no value"]);
    let m = cfg_err("stride=-2", 1, Some("stride"));
    assert_contains(&m, &["`-2` is negative; expected a non-negative integer"]);
    let m = cfg_err("filters=2147483648", 1, Some("filters"));
    assert_contains(&m, &["does not fit Darknet's int"]);
    let m = cfg_err("filters=1.5", 1, Some("filters"));
    assert_contains(&m, &["malformed number `1.5`"]);
    let m = cfg_err("filters=", 1, Some("filters"));
    assert_contains(&m, &["no value"]);
    let m = cfg_err("size=3 # three", 1, Some("size"));
    assert_contains(
        &m,
        &["malformed number `3#three`", "no end-of-line comments"],
    );
    let m = cfg_err("\n\nactivation=swish", 3, Some("activation"));
    assert_contains(
        &m,
        &["unknown activation `swish`", "logistic", "leaky", "relu"],
    );
    let m = cfg_err("activation=Leaky", 1, Some("activation"));
    assert_contains(&m, &["unknown activation `Leaky`"]);
    let m = cfg_err("filters=2\ngroups=2", 2, Some("groups"));
    assert_contains(
        &m,
        &["unknown key `groups`", "Unused field", "filters, size"],
    );
    let m = cfg_err("pad=2", 1, Some("pad"));
    assert_contains(&m, &["`2` is not a flag; expected 0 or 1"]);
    let m = cfg_err("batch_normalize=yes", 1, Some("batch_normalize"));
    assert_contains(&m, &["malformed number `yes`"]);
    let m = cfg_err("learning_rate=fast", 1, Some("learning_rate"));
    assert_contains(&m, &["malformed number `fast`"]);
    let m = cfg_err("learning_rate=inf", 1, Some("learning_rate"));
    assert_contains(&m, &["not a finite number"]);
    let m = cfg_err("stopbackward=x", 1, Some("stopbackward"));
    assert_contains(&m, &["malformed number `x`"]);
    let m = cfg_err("filters", 1, None);
    assert_contains(&m, &["cfg line 1: expected `key=value`, found `filters`"]);
    let m = cfg_err("=3", 1, None);
    assert_contains(&m, &["empty key"]);
    let m = cfg_err("[convolutional]\nfilters=2", 1, None);
    assert_contains(
        &m,
        &["expected the section header `[deconvolutional]` or `[deconv]`, found `[convolutional]`"],
    );
    let m = cfg_err("[deconv]\nfilters=2\n[deconv]", 3, None);
    assert_contains(&m, &["a second section header", "line 1"]);
    let m = cfg_err("filters=2\n[deconv]", 2, None);
    assert_contains(&m, &["after keys"]);
}

#[test]
fn cfg_sizes_that_make_no_layer_are_config_errors() {
    let err = parse_deconvolutional("filters=0", InputShape::new(1, 1, 4, 4)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                param: "filters",
                ..
            }
        ),
        "{err:?}"
    );
    let err = parse_deconvolutional("size=0", InputShape::new(1, 1, 4, 4)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                param: "kernel",
                ..
            }
        ),
        "{err:?}"
    );
    let err = parse_deconvolutional("stride=0", InputShape::new(1, 1, 4, 4)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                param: "stride",
                ..
            }
        ),
        "{err:?}"
    );
    // out = (1 - 1) * 1 + 1 - 2 * 1 < 1
    let err = parse_deconvolutional("padding=1", InputShape::new(1, 1, 1, 1)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { param: "pad", .. }),
        "{err:?}"
    );
    // The previous layer's shape must be an image.
    let err = parse_deconvolutional("", InputShape::new(1, 1, 0, 4)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { param: "in_h", .. }),
        "{err:?}"
    );
}

#[test]
fn cfg_realistic_section() {
    // A segmentation decoder's upsampling layer.
    let text = "\
[deconvolutional]
batch_normalize=1
filters=128
size=4
stride=2
pad=1
activation=leaky
learning_rate=0.5
";
    let section = DeconvSection::parse(text).unwrap();
    assert_eq!(section.learning_rate_scale, 0.5);
    let config = section.to_config(InputShape::new(4, 256, 26, 26)).unwrap();
    let expected = DeconvConfig::new(4, 256, 26, 26, 128, 4)
        .stride(2)
        .pad(2)
        .activation(Activation::Leaky)
        .batch_normalize(true);
    assert_eq!(config, expected);
    let g = config.geometry().unwrap();
    // Darknet: out = (26 - 1) * 2 + 4 - 2 * 2 = 50.
    assert_eq!((g.out_h(), g.out_w(), g.filters()), (50, 50, 128));
    assert_eq!(g.weight_count(), 256 * 128 * 16);
    let layer: DeconvLayer<f32> = DeconvLayer::new(&config).unwrap();
    assert_eq!(layer_byte_len(&layer), 4 * (4 * 128 + 256 * 128 * 16));
    assert_eq!(DeconvSection::parse(&section.to_string()).unwrap(), section);
}

// ------------------------------------------------------------------------------------------
// forward from files (the code path of examples/darknet_forward.rs)
// ------------------------------------------------------------------------------------------

struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn forward_job(name: &str) -> (ForwardFiles, TempFiles) {
    let job = ForwardFiles {
        cfg: temp_path(&format!("{name}.cfg")),
        weights: temp_path(&format!("{name}.weights")),
        input: temp_path(&format!("{name}.in.f32")),
        output: temp_path(&format!("{name}.out.f32")),
        shape: InputShape::new(1, 1, 1, 1),
        options: LoadOptions::new(),
    };
    let files = TempFiles(vec![
        job.cfg.clone(),
        job.weights.clone(),
        job.input.clone(),
        job.output.clone(),
    ]);
    (job, files)
}

#[test]
fn forward_files_hand_computed() {
    // One 1x1 input of value 2, a 2x2 kernel [1 2; 3 4] at stride 2, bias 0.5, linear.
    let (job, _files) = forward_job("hand");
    std::fs::write(
        &job.cfg,
        "[deconvolutional]\nfilters=1\nsize=2\nstride=2\nactivation=linear\n",
    )
    .unwrap();
    let mut weights = header_v02(0);
    weights.extend(le_f32(&[0.5, 1.0, 2.0, 3.0, 4.0]));
    std::fs::write(&job.weights, weights).unwrap();
    std::fs::write(&job.input, le_f32(&[2.0])).unwrap();
    let report = forward_files(&job).unwrap();
    assert_eq!(report.input_shape, [1, 1, 1, 1]);
    assert_eq!(report.output_shape, [1, 1, 2, 2]);
    assert_eq!(report.output, vec![2.5, 4.5, 6.5, 8.5]);
    assert_eq!(
        std::fs::read(&job.output).unwrap(),
        le_f32(&[2.5, 4.5, 6.5, 8.5])
    );
}

/// The input may be a pipe, whose size is not known until it is read (the size check used to
/// read the file's metadata: "input file ends after 0 bytes").
#[cfg(unix)]
#[test]
fn forward_files_reads_the_input_from_a_pipe() {
    let (mut job, mut files) = forward_job("pipe");
    std::fs::write(
        &job.cfg,
        "[deconvolutional]\nfilters=1\nsize=2\nstride=2\nactivation=linear\n",
    )
    .unwrap();
    let mut weights = header_v02(0);
    weights.extend(le_f32(&[0.5, 1.0, 2.0, 3.0, 4.0]));
    std::fs::write(&job.weights, weights).unwrap();
    job.input = temp_path("pipe.in.fifo");
    files.0.push(job.input.clone());
    let made = std::process::Command::new("mkfifo")
        .arg(&job.input)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("no mkfifo here: nothing to check");
        return;
    }
    for (bytes, want) in [
        (le_f32(&[2.0]), Ok(vec![2.5, 4.5, 6.5, 8.5])),
        (
            vec![],
            Err("input file ends after 0 bytes; expected 4 bytes"),
        ),
        (
            le_f32(&[2.0, 3.0]),
            Err("input file has 8 bytes; expected 4 bytes"),
        ),
    ] {
        let fifo = job.input.clone();
        let writer = std::thread::spawn(move || std::fs::write(fifo, bytes));
        let got = forward_files(&job).map(|r| r.output);
        writer.join().unwrap().unwrap();
        match (got, want) {
            (Ok(out), Ok(want)) => assert_eq!(out, want),
            (Err(e), Err(msg)) => assert_contains(&e.to_string(), &[msg]),
            (got, want) => panic!("{got:?} vs {want:?}"),
        }
    }
}

#[test]
fn forward_files_matches_the_layer_with_batch_norm() {
    let (mut job, _files) = forward_job("bn");
    job.shape.batch = 2;
    job.shape.h = 5;
    job.shape.w = 4;
    job.shape.channels = 3;
    let cfg = "[deconv]\nbatch_normalize=1\nfilters=4\nsize=4\nstride=2\npad=1\nactivation=leaky\n";
    std::fs::write(&job.cfg, cfg).unwrap();
    let config = parse_deconvolutional(cfg, InputShape::new(2, 3, 5, 4)).unwrap();
    let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config.clone().seed(3)).unwrap();
    fill_distinct(&mut layer, 11);
    save_weights(&layer, &job.weights, &WeightsHeader::new(12)).unwrap();
    let input: Vec<f32> = (0..2 * 3 * 5 * 4).map(|i| (i as f32 * 0.7).cos()).collect();
    std::fs::write(&job.input, le_f32(&input)).unwrap();

    let report = forward_files(&job).unwrap();
    let expected = layer.forward(&input, Mode::Inference).unwrap().to_vec();
    assert_eq!(report.output, expected);
    // Darknet: out = (in - 1) * 2 + 4 - 2 * (4 / 2).
    assert_eq!(report.output_shape, [2, 4, 8, 6]);
    assert_eq!(report.header.seen, 12);
    assert_eq!(report.config, config);
    assert_eq!(std::fs::read(&job.output).unwrap(), le_f32(&expected));

    // An input file of the wrong size says so.
    std::fs::write(&job.input, le_f32(&input[1..])).unwrap();
    let err = forward_files(&job).unwrap_err();
    assert_contains(
        &err.to_string(),
        &[
            "input file ends after 476 bytes; expected 480 bytes",
            "batch = 2 x in_c = 3 x in_h = 5 x in_w = 4",
        ],
    );
    std::fs::write(&job.input, [le_f32(&input), vec![0]].concat()).unwrap();
    let err = forward_files(&job).unwrap_err();
    assert_contains(
        &err.to_string(),
        &["input file has 481 bytes; expected 480 bytes"],
    );
    // A cfg error names the file's line.
    std::fs::write(&job.cfg, "filters=4\nsize=four\n").unwrap();
    let err = forward_files(&job).unwrap_err();
    assert_contains(&err.to_string(), &["cfg line 2, key `size`"]);
}

/// The Darknet readers take the input's sizes as a named `InputShape`, in the NCHW order of
/// `DeconvConfig::new` (they used to take `batch, h, w, c`, so that a call written in the
/// config's order compiled and built another layer).
#[test]
fn cfg_input_shape_is_named_and_in_nchw_order() {
    let cfg = "filters=4\nsize=3\nstride=2";
    let input = InputShape {
        batch: 2,
        channels: 3,
        h: 5,
        w: 7,
    };
    let config = parse_deconvolutional(cfg, input).unwrap();
    let by_hand = DeconvConfig::new(2, 3, 5, 7, 4, 3)
        .stride(2)
        .activation(Activation::Logistic);
    assert_eq!(config, by_hand);
    assert_eq!(InputShape::new(2, 3, 5, 7), input);
    let section = DeconvSection::parse(cfg).unwrap();
    assert_eq!(section.to_config(input).unwrap(), by_hand);
    let g = config.geometry().unwrap();
    assert_eq!((g.in_channels(), g.in_h(), g.in_w()), (3, 5, 7));
}
