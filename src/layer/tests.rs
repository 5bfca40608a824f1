//! Unit tests of the layer's internals: the tiled backward against whole images, the even
//! parts, the derived weights, the tiles chosen for the benchmark shapes.

use super::plan::{Plan, Tile, Tiles, column_tiles, even_parts};
use super::*;
use crate::backend::DefaultBackend;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

/// Small whole numbers, so that every sum below is exact and any order of summation
/// gives the same bits.
fn whole<T: Element>(len: usize, seed: usize) -> Vec<T> {
    (0..len)
        .map(|i| T::of((((i + seed) * 7919 + seed * 31) % 7) as f64 - 3.0))
        .collect()
}

/// A training forward and a backward of `config` on whole numbers, with the column
/// backward by `tile` (or whole images): the output, input gradient, weight and bias
/// gradients, one after the other.
fn passes<T: Element>(config: &DeconvConfig, tile: Option<Tile>) -> Vec<T>
where
    DefaultBackend: Gemm<T>,
{
    let mut layer = DeconvLayer::<T, DefaultBackend>::new(config).unwrap();
    let g = *layer.geometry();
    layer.plan = Plan::Columns {
        tiles: tile.map(|tile| Tiles::new(tile)),
        images: 1,
    };
    let weights = whole(g.weight_count(), 1);
    layer.weights_mut().copy_from_slice(&weights);
    let biases = whole(g.filters(), 5);
    layer.biases_mut().copy_from_slice(&biases);
    let input = whole(g.batch() * g.inputs(), 2);
    let output = layer.forward(&input, Mode::Train).unwrap().to_vec();
    let delta = whole(g.batch() * g.outputs(), 3);
    layer.delta_mut().copy_from_slice(&delta);
    let mut dx = whole(input.len(), 4);
    layer.backward(&input, Some(&mut dx)).unwrap();
    let mut all = output;
    all.extend(dx);
    all.extend(layer.weight_updates());
    all.extend(layer.bias_updates());
    all
}

/// A training forward of `input` and a backward from a whole-number `delta`: the output, the
/// input gradient and the layer's gradients, one after the other.
fn train_step(layer: &mut DeconvLayer<f64, DefaultBackend>, input: &[f64]) -> Vec<f64> {
    let g = *layer.geometry();
    let mut all = layer.forward(input, Mode::Train).unwrap().to_vec();
    layer
        .delta_mut()
        .copy_from_slice(&whole(g.batch() * g.outputs(), 3));
    let mut dx = vec![0.0; input.len()];
    layer.backward(input, Some(&mut dx)).unwrap();
    all.extend(dx);
    all.extend(layer.gradients());
    all
}

/// Random shapes (kernels, strides, dilations, paddings, output paddings, groups, images
/// up to 40 pixels wide) with a random tile that fits: the tiled backward gives exactly the
/// whole-image results on whole numbers, on the global pool.
fn tiled_random_shapes_match_whole_images<T: Element>()
where
    DefaultBackend: Gemm<T>,
{
    use rand::RngExt;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut checked = 0;
    while checked < 60 {
        let groups = rng.random_range(1..=2);
        let kernel = [rng.random_range(1..=4), rng.random_range(1..=4)];
        let stride = [rng.random_range(1..=3), rng.random_range(1..=3)];
        let dilation = [rng.random_range(1..=2), rng.random_range(1..=2)];
        let pad = [0, 1].map(|a| rng.random_range(0..kernel[a]));
        let op = [0, 1].map(|a| rng.random_range(0..stride[a].max(dilation[a])));
        let (batch, c) = (rng.random_range(1..=3), groups * rng.random_range(1..=3));
        let (h, w) = (rng.random_range(2..=10), rng.random_range(2..=40));
        let n = groups * rng.random_range(1..=4);
        let config = DeconvConfig::new(batch, c, h, w, n, 1)
            .kernel_hw(kernel[0], kernel[1])
            .stride_hw(stride[0], stride[1])
            .dilation_hw(dilation[0], dilation[1])
            .pad_hw(pad[0], pad[1])
            .output_padding_hw(op[0], op[1])
            .groups(groups)
            .algorithm(Algorithm::Columns);
        let Ok(g) = config.geometry() else {
            continue;
        };
        let tile = Tile {
            band_rows: rng.random_range(1..=g.in_h()),
            filters: rng.random_range(1..=g.group_out()),
        };
        if !tile.fits::<T>(&g) {
            continue;
        }
        let tiled = passes::<T>(&config, Some(tile));
        assert_eq!(tiled, passes::<T>(&config, None), "{config:?} {tile:?}");
        checked += 1;
    }
}

#[test]
fn tiled_random_shapes_match_whole_images_f32() {
    tiled_random_shapes_match_whole_images::<f32>();
}

#[test]
fn tiled_random_shapes_match_whole_images_f64() {
    tiled_random_shapes_match_whole_images::<f64>();
}

/// A layer whose column backward goes by tiles (its own im2col per tile, transposed
/// operands) gives the whole-image results for every tile that fits, with images over
/// threads and with one image split over threads: exactly on whole numbers, and within
/// rounding with batch norm and an activation (whose backward is not whole numbers).
fn tiled_passes_match_whole_images<T: Element>()
where
    DefaultBackend: Gemm<T>,
{
    let configs = [
        DeconvConfig::new(3, 5, 9, 11, 4, 3).stride(2).pad(1),
        DeconvConfig::new(1, 4, 8, 6, 6, 4)
            .stride_hw(3, 2)
            .pad(1)
            .dilation(2)
            .groups(2),
        DeconvConfig::new(2, 6, 12, 5, 3, 2).stride(1).groups(3),
        DeconvConfig::new(4, 3, 10, 7, 5, 3)
            .stride(2)
            .pad(1)
            .output_padding(1),
        // 64 column rows and 64 input channels: skewed leading dimensions.
        DeconvConfig::new(2, 64, 6, 5, 16, 2).stride(2),
        DeconvConfig::new(3, 5, 9, 11, 4, 3)
            .stride(2)
            .pad(1)
            .batch_normalize(true)
            .activation(Activation::Leaky),
        DeconvConfig::new(1, 4, 7, 6, 6, 3)
            .stride(2)
            .activation(Activation::Logistic),
        // Output rows long enough for col2im's gather.
        DeconvConfig::new(2, 3, 9, 34, 4, 3)
            .stride(2)
            .pad(1)
            .batch_normalize(true)
            .activation(Activation::Relu),
        DeconvConfig::new(1, 2, 11, 40, 3, 4)
            .stride(3)
            .pad(2)
            .dilation(2)
            .output_padding(1)
            .activation(Activation::Leaky),
    ];
    let mut tiled = 0;
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for config in &configs {
            let config = config.clone().algorithm(Algorithm::Columns);
            let g = config.geometry().unwrap();
            let run = |tile: Option<Tile>| pool.install(|| passes::<T>(&config, tile));
            let whole_images = run(None);
            let exact = config.activation == Activation::Linear && !config.batch_normalize;
            for band_rows in [1, 2, 3, g.in_h()] {
                for filters in [1, 2, g.group_out()] {
                    let tile = Tile { band_rows, filters };
                    if !tile.fits::<T>(&g) {
                        continue;
                    }
                    tiled += 1;
                    let got = run(Some(tile));
                    if exact {
                        assert_eq!(got, whole_images, "{config:?} {tile:?}");
                    } else {
                        // Sums in another order: errors relative to each result's scale.
                        let tol = T::epsilon() * T::of(1000.0);
                        let lens = [g.batch() * g.outputs(), g.batch() * g.inputs()];
                        let lens = lens.into_iter().chain([g.weight_count(), g.filters()]);
                        let (mut at, mut what) = (0, 0);
                        for len in lens {
                            let (a, b) = (&got[at..at + len], &whole_images[at..at + len]);
                            let scale = b.iter().fold(T::one(), |m, v| m.max(v.abs()));
                            let err = a
                                .iter()
                                .zip(b)
                                .fold(T::zero(), |m, (x, y)| m.max((*x - *y).abs()));
                            let at_most = tol * scale;
                            assert!(err <= at_most, "part {what}: {config:?} {tile:?}");
                            (at, what) = (at + len, what + 1);
                        }
                    }
                }
            }
        }
    }
    assert!(tiled >= 20, "only {tiled} tiles fit");
}

#[test]
fn tiled_passes_match_whole_images_f32() {
    tiled_passes_match_whole_images::<f32>();
}

#[test]
fn tiled_passes_match_whole_images_f64() {
    tiled_passes_match_whole_images::<f64>();
}

#[test]
fn even_parts_cover_in_order_with_sizes_one_apart() {
    for n in 0..40 {
        for most in 1..12 {
            let parts: Vec<_> = even_parts(n, most).collect();
            assert_eq!(parts.len(), n.div_ceil(most));
            let mut next = 0;
            for p in &parts {
                assert_eq!(p.start, next);
                assert!(!p.is_empty() && p.len() <= most);
                next = p.end;
            }
            assert_eq!(next, n);
            let sizes = parts.iter().map(|p| p.len());
            let (lo, hi) = (sizes.clone().min(), sizes.max());
            assert!(hi.unwrap_or(0) - lo.unwrap_or(0) <= 1);
        }
    }
}

/// The copies derived from the weights (phase packing, tiled W^T), cached across passes,
/// follow every way the weights change: after each change, forward and backward equal those
/// of a new layer given the changed parameters.
#[test]
fn derived_weights_follow_every_change() {
    let phases = DeconvConfig::new(2, 3, 5, 6, 4, 4)
        .stride(2)
        .pad(1)
        .algorithm(Algorithm::Phases);
    let tiled = DeconvConfig::new(2, 3, 9, 34, 4, 3)
        .stride(2)
        .pad(1)
        .algorithm(Algorithm::Columns);
    let tile = Tile {
        band_rows: 2,
        filters: 4,
    };
    let build = |config: &DeconvConfig, tiles: bool| {
        let mut layer = DeconvLayer::<f64, DefaultBackend>::new(config).unwrap();
        if tiles {
            let g = *layer.geometry();
            assert!(tile.fits::<f64>(&g));
            layer.plan = Plan::Columns {
                tiles: Some(Tiles::new(tile)),
                images: 1,
            };
        }
        layer
    };
    for (config, tiles) in [(phases, false), (tiled, true)] {
        for change in 0..5 {
            let config = config
                .clone()
                .adam(change == 2)
                .batch_normalize(change == 3);
            let mut a = build(&config, tiles);
            let g = *a.geometry();
            let input = whole::<f64>(g.batch() * g.inputs(), 2);
            let mut dx = vec![0.0; input.len()];
            a.forward(&input, Mode::Train).unwrap();
            a.delta_mut().fill(0.25);
            a.backward(&input, Some(&mut dx)).unwrap();
            a.weight_updates_mut().fill(0.5);
            let after = match change {
                0 => {
                    a.weights_mut()[1] += 1.0;
                    config
                }
                1 => {
                    a.update(&UpdateArgs::sgd(0.1, 0.9, 0.0, 1)).unwrap();
                    config
                }
                2 => {
                    let mut args = UpdateArgs::sgd(0.1, 0.9, 0.0, 1);
                    args.optimizer = Optimizer::adam();
                    a.update(&args).unwrap();
                    config
                }
                3 => {
                    a.denormalize().unwrap();
                    config.batch_normalize(false)
                }
                _ => {
                    a.bilinear_init();
                    config
                }
            };
            let mut b = build(&after, tiles);
            b.weights_mut().copy_from_slice(a.weights());
            b.biases_mut().copy_from_slice(a.biases());
            let out_a = a.forward(&input, Mode::Inference).unwrap().to_vec();
            let out_b = b.forward(&input, Mode::Inference).unwrap().to_vec();
            assert_eq!(out_a, out_b, "forward after change {change}, tiles {tiles}");
            let mut dx_b = vec![0.0; input.len()];
            dx.fill(0.0);
            for (layer, dx) in [(&mut a, &mut dx), (&mut b, &mut dx_b)] {
                if !layer.batch_normalize() {
                    layer.forward(&input, Mode::Train).unwrap();
                    layer.delta_mut().fill(0.25);
                    layer.backward(&input, Some(dx)).unwrap();
                }
            }
            assert_eq!(
                dx, dx_b,
                "input gradient after change {change}, tiles {tiles}"
            );
        }
    }
}

/// The benchmark shapes' tiles in f32: S4 (columns of 4.7 MB an image, 64-pixel rows)
/// takes bands of rows, S1 (2 MB, 16-pixel rows) blocks of filters, S2 neither (its
/// 1024-row columns would make 128-row blocks).
#[test]
fn tiles_where_they_pay() {
    let tile = |c: DeconvConfig| column_tiles::<f32>(&c.geometry().unwrap());
    let s4 = DeconvConfig::new(8, 64, 64, 64, 32, 3).stride(2).pad(1);
    let s1 = DeconvConfig::new(16, 256, 16, 16, 128, 4).stride(2).pad(1);
    let s2 = DeconvConfig::new(4, 512, 32, 32, 256, 2).stride(2);
    assert_eq!(
        tile(s4),
        Some(Tile {
            band_rows: 7,
            filters: 32
        })
    );
    assert_eq!(
        tile(s1),
        Some(Tile {
            band_rows: 16,
            filters: 32
        })
    );
    assert_eq!(tile(s2), None);
    // The two tiled shapes of tests/no_alloc.rs.
    let bands = DeconvConfig::new(2, 8, 48, 48, 16, 3).stride(2).pad(1);
    let blocks = DeconvConfig::new(2, 8, 16, 16, 128, 4).stride(2).pad(1);
    assert_eq!(
        tile(bands),
        Some(Tile {
            band_rows: 18,
            filters: 16
        })
    );
    assert_eq!(
        tile(blocks),
        Some(Tile {
            band_rows: 16,
            filters: 32
        })
    );
}

/// `Algorithm::Auto`'s choices on shapes of the sweep (`benches/support/sweep.rs`), forward and
/// backward: the rules in `plan.rs` and the measurements they come from.
#[test]
fn auto_chooses_per_pass() {
    let choice = |c: DeconvConfig| {
        let layer = DeconvLayer::<f32, DefaultBackend>::new(&c).unwrap();
        (layer.algorithm(), layer.backward_algorithm())
    };
    use Algorithm::{Columns, Direct, Phases};
    // S3 and FCN's upsampling: few channels, phases both ways.
    let s3 = DeconvConfig::new(2, 21, 16, 16, 21, 16).stride(8).pad(4);
    assert_eq!(choice(s3), (Phases, Phases));
    // fcn-up2: one class of 4 phases x 21 filters (84 rows), phases both ways.
    let fcn_up2 = DeconvConfig::new(8, 21, 22, 22, 21, 4).stride(2);
    assert_eq!(choice(fcn_up2), (Phases, Phases));
    // S4: classes of one phase x 32 filters are too short for the forward.
    let s4 = DeconvConfig::new(8, 64, 64, 64, 32, 3).stride(2).pad(1);
    assert_eq!(choice(s4).0, Columns);
    // lapsrn-feat: 64 channels, phases both ways.
    let lapsrn_feat = DeconvConfig::new(8, 64, 32, 32, 64, 4).stride(2).pad(1);
    assert_eq!(choice(lapsrn_feat), (Phases, Phases));
    // darknet-k4: 512 channels on 13x13, phases forward, columns backward.
    let darknet_k4 = DeconvConfig::new(4, 512, 13, 13, 256, 4).stride(2).pad(2);
    assert_eq!(choice(darknet_k4), (Phases, Columns));
    // S1: 128-row class GEMMs, columns both ways.
    let s1 = DeconvConfig::new(16, 256, 16, 16, 128, 4).stride(2).pad(1);
    assert_eq!(choice(s1), (Columns, Columns));
    // DCGAN's projection: 1x1 images, batched columns both ways.
    let dcgan_z = DeconvConfig::new(64, 100, 1, 1, 512, 4);
    assert_eq!(choice(dcgan_z.clone()), (Columns, Columns));
    let layer = DeconvLayer::<f32, DefaultBackend>::new(&dcgan_z).unwrap();
    assert!(matches!(layer.plan, Plan::Columns { images: 64, .. }));
    // Depthwise: direct both ways.
    let dw = DeconvConfig::new(8, 64, 32, 32, 64, 4)
        .stride(2)
        .pad(1)
        .groups(64);
    assert_eq!(choice(dw), (Direct, Direct));
    // ENet's output layer and Darknet's mask head: few input channels, direct forward and a
    // column backward.
    let enet_out = DeconvConfig::new(2, 16, 256, 256, 12, 3)
        .stride(2)
        .pad(1)
        .output_padding(1);
    assert_eq!(choice(enet_out), (Direct, Columns));
    let darknet_mask = DeconvConfig::new(8, 32, 104, 104, 1, 3).stride(2).pad(1);
    assert_eq!(choice(darknet_mask), (Direct, Columns));
    // More input channels: columns (dcgan-rgb, fsrcnn-x3).
    let dcgan_rgb = DeconvConfig::new(16, 64, 32, 32, 3, 4).stride(2).pad(1);
    assert_eq!(choice(dcgan_rgb), (Columns, Columns));
    let fsrcnn_x3 = DeconvConfig::new(16, 56, 64, 64, 1, 9)
        .stride(3)
        .pad(4)
        .output_padding(2);
    assert_eq!(choice(fsrcnn_x3), (Columns, Columns));
    // An explicit algorithm runs both passes.
    let explicit = DeconvConfig::new(8, 21, 22, 22, 21, 4)
        .stride(2)
        .algorithm(Columns);
    assert_eq!(choice(explicit), (Columns, Columns));
}

/// Phases in the backward need class GEMMs of some height: not for one filter (FSRCNN's
/// 56 -> 1 head, whose forward runs columns).
#[test]
fn auto_keeps_columns_backward_for_one_filter() {
    let one_filter = DeconvConfig::new(1, 56, 64, 64, 1, 4).stride(2).pad(1);
    let layer = DeconvLayer::<f32, DefaultBackend>::new(&one_filter).unwrap();
    assert_eq!(
        (layer.algorithm(), layer.backward_algorithm()),
        (Algorithm::Columns, Algorithm::Columns)
    );
}

/// The column plan with small images batched into one GEMM (blocks of `IMAGE_BLOCK` images in
/// col2im, channel-major im2col, the 1x1 fast paths) against the same plan one image at a time:
/// batches past two blocks, 1x1 and larger images, groups, batch norm in training and inference,
/// on one thread and two. Whole numbers without batch norm: the same bits; with it, within
/// `f64` rounding (the weight gradient's sums run in another order).
#[test]
fn batched_images_match_one_at_a_time() {
    use rand::RngExt;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut case = 0;
    while case < 24 {
        let groups = rng.random_range(1..=2);
        let side = [1, 1, 2, 3][case % 4];
        let kernel = rng.random_range(1..=4);
        let stride = rng.random_range(1..=3);
        let bn = case % 3 != 0;
        let config = DeconvConfig::new(
            // Blocks of 16, 8, 4 and other counts of images, interleaved or not (3 images: not
            // in either pass; 5 images on 2 threads: forward blocks of 3, not interleaved, and
            // an interleaved backward).
            [3, 5, 17, 36, 40][(case + case / 4) % 5],
            groups * rng.random_range(1..=3),
            side,
            side + (case / 4) % 2,
            groups * rng.random_range(1..=3),
            kernel,
        )
        .stride(stride)
        .pad(rng.random_range(0..kernel))
        .groups(groups)
        .batch_normalize(bn)
        .activation(if bn {
            Activation::Leaky
        } else {
            Activation::Linear
        })
        .algorithm(Algorithm::Columns)
        .seed(case as u64);
        if config.geometry().is_err() {
            continue; // padding that leaves no output: another draw
        }
        let threads = 1 + case % 2;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let run = |images: usize| -> Vec<f64> {
            pool.install(|| {
                let mut layer = DeconvLayer::<f64, DefaultBackend>::new(&config).unwrap();
                let g = *layer.geometry();
                if images == 1 {
                    layer.plan = Plan::Columns {
                        tiles: None,
                        images: 1,
                    };
                } else {
                    assert!(matches!(layer.plan, Plan::Columns { images: m, .. } if m == images));
                }
                let weights = whole(g.weight_count(), 1);
                layer.weights_mut().copy_from_slice(&weights);
                layer.biases_mut().copy_from_slice(&whole(g.filters(), 5));
                let input: Vec<f64> = whole(g.batch() * g.inputs(), case);
                let mut all = train_step(&mut layer, &input);
                all.extend(layer.forward(&input, Mode::Inference).unwrap());
                all
            })
        };
        let g = config.geometry().unwrap();
        let batched = super::plan::batched_images(&g);
        assert!(batched > 2, "case {case}: {batched} images per GEMM");
        let (one, many) = (run(1), run(batched));
        assert_eq!(one.len(), many.len());
        for (i, (a, b)) in one.iter().zip(&many).enumerate() {
            let close = if bn {
                (a - b).abs() <= 1e-12 * a.abs().max(1.0)
            } else {
                a.to_bits() == b.to_bits()
            };
            assert!(
                close,
                "case {case} ({config:?}, {threads} threads): value {i}: {a} vs {b}"
            );
        }
        case += 1;
    }
}

/// The phase backward with more input channels than one unpacking block (16), in whole and
/// partial blocks, groups, and one to three threads (so one to three per-task gradient sums):
/// exactly the column backward's gradients on whole numbers.
#[test]
fn phase_backward_unpacks_many_channels_exactly() {
    for (channels, groups, batch, threads) in [(37, 1, 3, 1), (37, 1, 3, 2), (40, 2, 5, 3)] {
        let config = DeconvConfig::new(batch, channels, 5, 6, 3 * groups, 4)
            .stride(2)
            .pad(1)
            .groups(groups);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let run = |algorithm: Algorithm| -> Vec<f64> {
            pool.install(|| {
                let config = config.clone().algorithm(algorithm);
                let mut layer = DeconvLayer::<f64, DefaultBackend>::new(&config).unwrap();
                assert_eq!(layer.backward_algorithm(), algorithm);
                let g = *layer.geometry();
                layer
                    .weights_mut()
                    .copy_from_slice(&whole(g.weight_count(), 1));
                train_step(&mut layer, &whole(g.batch() * g.inputs(), 2))
            })
        };
        assert_eq!(
            run(Algorithm::Phases),
            run(Algorithm::Columns),
            "{channels} channels, {groups} groups, {threads} threads"
        );
    }
}
