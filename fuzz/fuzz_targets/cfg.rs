//! Random bytes (as UTF-8, lossily) into the `[deconvolutional]` cfg parser.
//!
//! Checks: no panic; a parsed section prints back to text that parses to the same section; when
//! it makes a valid configuration of modest size, the layer builds and runs a forward pass (sizes
//! are checked on the geometry first, so the target never attempts a huge allocation).

#![no_main]

use deconv::darknet::DeconvSection;
use deconv::{DeconvLayer, InputShape, Mode};
use libfuzzer_sys::fuzz_target;

/// Largest buffer (elements) the target lets a layer allocate.
const CAP: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((dims, text)) = data.split_first_chunk::<3>() else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let Ok(section) = DeconvSection::parse(&text) else {
        return;
    };
    let printed = section.to_string();
    let mut reparsed = DeconvSection::parse(&printed).expect("printed section must parse");
    reparsed.ignored_duplicates = section.ignored_duplicates.clone();
    assert_eq!(reparsed, section, "{printed}");

    let [h, w, c] = dims.map(|d| usize::from(d % 8) + 1);
    let Ok(config) = section.to_config(InputShape::new(2, c, h, w)) else {
        return;
    };
    let g = config.geometry().expect("to_config validated it");
    let sizes = [
        g.batch().saturating_mul(g.outputs()),
        g.weight_count(),
        g.workspace_size(),
    ];
    if sizes.iter().any(|&s| s > CAP) {
        return;
    }
    // A huge stride on a tiny input once made `DeconvLayer::new` plan stride_h * stride_w
    // phases and run out of memory (found here, artifact `stride=47483648` on a 1x1 input);
    // plans are now capped, and this target checks it stays so.
    let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config).expect("geometry was valid");
    let input = vec![0.5f32; g.batch() * g.inputs()];
    layer
        .forward(&input, Mode::Inference)
        .expect("inference forward on a valid layer");
});
