//! Random bytes as a `.weights` file, into fixed layer shapes (with and without batch norm,
//! with groups, f32 and f64), one layer and two layers per stream.
//!
//! Checks: no panic; a failed load leaves the layer unchanged; a successful load writes back
//! to the same bytes (NaN payloads aside).

#![no_main]

use deconv::darknet::{
    LayerParams, LoadOptions, WeightsReader, WeightsWriter, read_weights, write_weights,
};
use deconv::{DeconvConfig, DeconvLayer, Element};
use libfuzzer_sys::fuzz_target;

fn configs() -> [DeconvConfig; 4] {
    [
        DeconvConfig::new(1, 1, 2, 2, 2, 2),
        DeconvConfig::new(1, 2, 3, 3, 1, 3).batch_normalize(true),
        DeconvConfig::new(1, 4, 2, 2, 2, 2).groups(2).batch_normalize(true),
        DeconvConfig::new(1, 3, 4, 4, 3, 1).stride(2),
    ]
}

/// Same bytes, or both NaN, per 4-byte float; the header bytes exactly.
fn same_file(a: &[u8], b: &[u8], header_len: usize) -> bool {
    a.len() == b.len()
        && a[..header_len] == b[..header_len]
        && a[header_len..]
            .chunks_exact(4)
            .zip(b[header_len..].chunks_exact(4))
            .all(|(x, y)| {
                let fx = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
                let fy = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
                x == y || (fx.is_nan() && fy.is_nan())
            })
}

fn one_layer<T: Element>(config: &DeconvConfig, options: &LoadOptions, file: &[u8])
where
    deconv::DefaultBackend: deconv::Gemm<T>,
{
    let mut layer: DeconvLayer<T> = DeconvLayer::new(&config.clone().seed(1)).unwrap();
    let before = LayerParams::from_layer(&layer);
    match read_weights(&mut layer, file, options) {
        Ok(header) => {
            let mut again = Vec::new();
            write_weights(&layer, &mut again, &header).unwrap();
            assert!(same_file(file, &again, header.byte_len() as usize));
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert_eq!(
                format!("{:?}", LayerParams::from_layer(&layer)),
                format!("{before:?}"),
                "layer changed by a failed load: {e}"
            );
        }
    }
}

fn two_layers(a: &DeconvConfig, b: &DeconvConfig, options: &LoadOptions, file: &[u8]) {
    let mut la: DeconvLayer<f32> = DeconvLayer::new(a).unwrap();
    let mut lb: DeconvLayer<f32> = DeconvLayer::new(b).unwrap();
    let Ok(mut reader) = WeightsReader::new(file, options) else {
        return;
    };
    let header = *reader.header();
    if reader.read_layer(&mut la).is_err() || reader.read_layer(&mut lb).is_err() {
        return;
    }
    if reader.finish().is_ok() {
        let mut w = WeightsWriter::new(Vec::new(), &header).unwrap();
        w.write_layer(&la).unwrap();
        w.write_layer(&lb).unwrap();
        let again = w.finish().unwrap();
        assert!(same_file(file, &again, header.byte_len() as usize));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let configs = configs();
    let options = LoadOptions::new().reject_non_finite(selector & 0x80 != 0);
    let config = &configs[usize::from(selector & 3)];
    match (selector >> 2) & 3 {
        0 | 1 => one_layer::<f32>(config, &options, file),
        2 => one_layer::<f64>(config, &options, file),
        _ => two_layers(config, &configs[usize::from((selector >> 4) & 3)], &options, file),
    }
});
