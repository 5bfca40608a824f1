//! Darknet's semantics (batch norm numbers, update formulas, init, conventions) and the Darknet
//! bugs we fix (bilinear_init, denormalize).

mod common;

use common::*;
use deconv::{Activation, DeconvConfig, DeconvLayer, Mode, Optimizer, UpdateArgs};

#[test]
fn output_size_and_workspace_follow_darknet() {
    // Darknet: out = (in - 1) * stride + size - 2 * pad; workspace h*w*size*size*n floats.
    for (h, w, k, s, p) in [
        (5, 7, 3, 2, 1),
        (16, 16, 4, 2, 1),
        (8, 3, 16, 8, 4),
        (4, 4, 2, 2, 0),
    ] {
        let config = DeconvConfig::new(2, 3, h, w, 5, k).stride(s).pad(p);
        let columns = config.clone().algorithm(deconv::Algorithm::Columns);
        let layer: DeconvLayer<f32> = DeconvLayer::new(&columns).unwrap();
        let g = layer.geometry();
        assert_eq!(g.out_h(), (h - 1) * s + k - 2 * p);
        assert_eq!(g.out_w(), (w - 1) * s + k - 2 * p);
        assert_eq!(g.workspace_size(), h * w * k * k * 5);
        assert_eq!(layer.output().len(), 2 * 5 * g.out_h() * g.out_w());
        // The column plan takes Darknet's workspace per image; images of fewer than 256 pixels
        // go several to a GEMM (here both), with their columns and inputs side by side.
        let darknet = h * w * k * k * 5;
        let want = if h * w < 256 {
            2 * (darknet + 3 * h * w)
        } else {
            darknet
        };
        assert_eq!(layer.workspace_size(), want);
        let mut one = columns.clone();
        one.batch = 1;
        let one: DeconvLayer<f32> = DeconvLayer::new(&one).unwrap();
        assert_eq!(one.workspace_size(), darknet);
    }
}

#[test]
fn init_is_darknets_scaled_normal_and_seedable() {
    // out 16x16 from in 8x8: weights ~ N(0, .02) scaled by 256 / 64 = 4, so std = .08.
    let config = DeconvConfig::new(1, 32, 8, 8, 32, 4)
        .stride(2)
        .pad(1)
        .seed(42);
    let a: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    let b: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    let c: DeconvLayer<f64> = DeconvLayer::new(&config.clone().seed(43)).unwrap();
    assert_eq!(a.weights(), b.weights());
    assert_ne!(a.weights(), c.weights());
    let w = a.weights();
    let n = w.len() as f64; // 16384
    let mean = w.iter().sum::<f64>() / n;
    let std = (w.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    // Standard error of the std estimate is about .08 / sqrt(2n) = 4.4e-4; allow 5 of them.
    assert!((std - 0.08).abs() < 2.2e-3, "std {std}");
    assert!(mean.abs() < 5.0 * 0.08 / n.sqrt(), "mean {mean}");
    assert!(a.biases().iter().all(|&x| x == 0.0));
    assert_eq!(a.learning_rate_scale(), 1.0);
    let bn: DeconvLayer<f64> = DeconvLayer::new(&config.clone().batch_normalize(true)).unwrap();
    assert!(bn.scales().unwrap().iter().all(|&x| x == 1.0));
    assert!(bn.rolling_variance().unwrap().iter().all(|&x| x == 0.0));
}

/// Batch norm forward by hand, with Darknet's constants: unbiased variance, 1e-6 added to the
/// standard deviation, rolling statistics .99 / .01.
#[test]
fn batch_norm_forward_matches_darknet_cpu_numbers() {
    // 1x1 kernel, 1 input channel, weight 1 per filter: the pre-BN output equals the input
    // times the filter's weight.
    let config = DeconvConfig::new(2, 1, 1, 2, 2, 1).batch_normalize(true);
    let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    layer.weights_mut().copy_from_slice(&[1.0, -2.0]);
    layer.scales_mut().unwrap().copy_from_slice(&[1.5, 0.5]);
    layer.biases_mut().copy_from_slice(&[0.25, -1.0]);
    layer
        .rolling_mean_mut()
        .unwrap()
        .copy_from_slice(&[1.0, 2.0]);
    layer
        .rolling_variance_mut()
        .unwrap()
        .copy_from_slice(&[4.0, 9.0]);
    let input = [1.0, 2.0, 3.0, 6.0]; // image 0: [1, 2], image 1: [3, 6]
    let y = layer.forward(&input, Mode::Train).unwrap().to_vec();

    for (f, w) in [(0usize, 1.0f64), (1, -2.0)] {
        let x: Vec<f64> = input.iter().map(|v| v * w).collect();
        let mean = x.iter().sum::<f64>() / 4.0;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 3.0;
        assert!((layer.batch_mean().unwrap()[f] - mean).abs() < 1e-12);
        assert!((layer.batch_variance().unwrap()[f] - var).abs() < 1e-12);
        let (old_mean, old_var) = ([1.0, 2.0][f], [4.0, 9.0][f]);
        assert!((layer.rolling_mean().unwrap()[f] - (0.99 * old_mean + 0.01 * mean)).abs() < 1e-12);
        assert!(
            (layer.rolling_variance().unwrap()[f] - (0.99 * old_var + 0.01 * var)).abs() < 1e-12
        );
        let (scale, bias) = ([1.5, 0.5][f], [0.25, -1.0][f]);
        for (i, &xv) in x.iter().enumerate() {
            let (b, p) = (i / 2, i % 2);
            let expect = (xv - mean) / (var.sqrt() + 1e-6) * scale + bias;
            assert!((y[b * 4 + f * 2 + p] - expect).abs() < 1e-12, "f{f} i{i}");
        }
    }
    // Inference uses the (updated) rolling statistics.
    let rm = layer.rolling_mean().unwrap().to_vec();
    let rv = layer.rolling_variance().unwrap().to_vec();
    let y = layer.forward(&input, Mode::Inference).unwrap().to_vec();
    let expect = (1.0 * 3.0 - rm[0]) / (rv[0].sqrt() + 1e-6) * 1.5 + 0.25;
    assert!((y[4] - expect).abs() < 1e-12);
}

#[test]
fn sgd_update_is_darknets_formula() {
    let config = DeconvConfig::new(2, 2, 3, 3, 2, 2).batch_normalize(true);
    let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    let mut r = rng(3);
    let w0 = uniform(&mut r, layer.weights().len());
    let wu0 = uniform(&mut r, layer.weights().len());
    let (b0, bu0) = (uniform(&mut r, 2), uniform(&mut r, 2));
    let (s0, su0) = (uniform(&mut r, 2), uniform(&mut r, 2));
    layer.weights_mut().copy_from_slice(&w0);
    layer.weight_updates_mut().copy_from_slice(&wu0);
    layer.biases_mut().copy_from_slice(&b0);
    layer.bias_updates_mut().copy_from_slice(&bu0);
    layer.scales_mut().unwrap().copy_from_slice(&s0);
    layer.scale_updates_mut().unwrap().copy_from_slice(&su0);
    layer.set_learning_rate_scale(0.5);
    let (lr, momentum, decay, batch) = (0.1, 0.9, 0.005, 4);
    layer
        .update(&UpdateArgs::sgd(lr, momentum, decay, batch))
        .unwrap();
    let rate = lr * 0.5 / batch as f64;
    for i in 0..2 {
        assert!((layer.biases()[i] - (b0[i] + rate * bu0[i])).abs() < 1e-15);
        assert!((layer.bias_updates()[i] - momentum * bu0[i]).abs() < 1e-15);
        assert!((layer.scales().unwrap()[i] - (s0[i] + rate * su0[i])).abs() < 1e-15);
        assert!((layer.scale_updates().unwrap()[i] - momentum * su0[i]).abs() < 1e-15);
    }
    for i in 0..w0.len() {
        let u = wu0[i] - decay * batch as f64 * w0[i];
        assert!((layer.weights()[i] - (w0[i] + rate * u)).abs() < 1e-15);
        assert!((layer.weight_updates()[i] - momentum * u).abs() < 1e-15);
    }
}

#[test]
fn adam_update_has_bias_correction() {
    let config = DeconvConfig::new(1, 1, 2, 2, 1, 1).adam(true);
    let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    layer.weights_mut()[0] = 0.5;
    let (b1, b2, eps, lr, decay, batch) = (0.9, 0.999, 1e-7, 0.01, 0.1, 2);
    let args = UpdateArgs {
        optimizer: Optimizer::Adam {
            beta1: b1,
            beta2: b2,
            epsilon: eps,
        },
        ..UpdateArgs::sgd(lr, 0.0, decay, batch)
    };
    let (mut w, mut m, mut v) = (0.5f64, 0.0f64, 0.0f64);
    for t in 1..=3 {
        let grad = 0.3 * t as f64;
        layer.weight_updates_mut()[0] = grad;
        layer.update(&args).unwrap();
        let d = grad - decay * batch as f64 * w;
        m = b1 * m + (1.0 - b1) * d;
        v = b2 * v + (1.0 - b2) * d * d;
        w += lr * (m / (1.0 - b1.powi(t))) / ((v / (1.0 - b2.powi(t))).sqrt() + eps);
        assert!((layer.weights()[0] - w).abs() < 1e-14, "step {t}");
        assert_eq!(layer.weight_updates()[0], 0.0);
        assert_eq!(layer.adam_step(), Some(t as u64));
        let (lm, lv) = layer.adam_moments(deconv::Params::Weights).unwrap();
        assert!((lm[0] - m).abs() < 1e-15 && (lv[0] - v).abs() < 1e-15);
        // A layer restored from (weights, moments, step) continues identically.
        let mut restored: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
        restored.weights_mut().copy_from_slice(layer.weights());
        let (rm, rv) = restored.adam_moments_mut(deconv::Params::Weights).unwrap();
        rm[0] = m;
        rv[0] = v;
        restored.set_adam_step(t as u64).unwrap();
        restored.weight_updates_mut()[0] = 0.1;
        layer.weight_updates_mut()[0] = 0.1;
        let mut copy = layer.clone();
        copy.update(&args).unwrap();
        restored.update(&args).unwrap();
        assert_eq!(copy.weights()[0], restored.weights()[0]);
        layer.weight_updates_mut()[0] = 0.0;
    }
}

#[test]
fn gradients_accumulate_and_input_gradient_adds() {
    let mut r = rng(5);
    let config = random_config(&mut r).activation(Activation::Logistic);
    let g = config.geometry().unwrap();
    let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    let input = uniform(&mut r, g.batch() * g.inputs());
    let grad = uniform(&mut r, g.batch() * g.outputs());
    let step = |layer: &mut DeconvLayer<f64>, dx: &mut Vec<f64>| {
        layer.forward(&input, Mode::Train).unwrap();
        layer.delta_mut().copy_from_slice(&grad);
        layer.backward(&input, Some(dx)).unwrap();
    };
    let mut dx = vec![0.0; input.len()];
    step(&mut layer, &mut dx);
    let (dx1, dw1, db1) = (
        dx.clone(),
        layer.weight_updates().to_vec(),
        layer.bias_updates().to_vec(),
    );
    step(&mut layer, &mut dx);
    let twice = |v: &[f64]| v.iter().map(|x| 2.0 * x).collect::<Vec<_>>();
    assert!(max_rel_diff(&dx, &twice(&dx1)) < 1e-12);
    assert!(max_rel_diff(layer.weight_updates(), &twice(&dw1)) < 1e-12);
    assert!(max_rel_diff(layer.bias_updates(), &twice(&db1)) < 1e-12);
    assert!(dx1.iter().any(|&x| x != 0.0));
}

#[test]
fn resize_gives_the_layer_a_new_input_size() {
    // The column plan, whose workspace is Darknet's (one image's column matrix).
    let config = DeconvConfig::new(2, 3, 4, 5, 2, 3)
        .stride(2)
        .pad(1)
        .batch_normalize(true)
        .algorithm(deconv::Algorithm::Columns);
    let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    layer.resize(6, 3).unwrap();
    let g = *layer.geometry();
    assert_eq!((g.in_h(), g.in_w(), g.out_h(), g.out_w()), (6, 3, 11, 5));
    assert_eq!(layer.output().len(), 2 * 2 * 11 * 5);
    assert_eq!(layer.x_norm().unwrap().len(), 2 * 2 * 11 * 5);
    assert_eq!(layer.geometry().workspace_size(), 2 * 9 * 6 * 3);
    // Same parameters as a fresh layer of that size: same output.
    let mut fresh: DeconvLayer<f64> = DeconvLayer::new(&config.clone().seed(9)).unwrap();
    fresh.resize(6, 3).unwrap();
    fresh.weights_mut().copy_from_slice(layer.weights());
    let input = uniform(&mut rng(1), 2 * 3 * 6 * 3);
    let a = layer.forward(&input, Mode::Train).unwrap().to_vec();
    let b = fresh.forward(&input, Mode::Train).unwrap().to_vec();
    assert_eq!(a, b);
}

/// Darknet's bilinear_init lacks the `/ factor` and writes `[n][c]`-major indices; ours is the
/// standard upsampling kernel, filter `f` reading channel `f % c` (here n < c: the diagonal).
#[test]
fn bilinear_init_is_the_standard_kernel_on_the_diagonal() {
    for (k, profile) in [
        (4usize, vec![0.25, 0.75, 0.75, 0.25]),
        (3, vec![0.5, 1.0, 0.5]),
        (2, vec![0.5, 0.5]),
    ] {
        // c != n: only W[0][0] and W[1][1] are set.
        let config = DeconvConfig::new(1, 3, 4, 4, 2, k);
        let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
        layer.bilinear_init();
        let w = layer.weights();
        for c in 0..3 {
            for n in 0..2 {
                for i in 0..k {
                    for j in 0..k {
                        let got = w[((c * 2 + n) * k + i) * k + j];
                        let want = if c == n { profile[i] * profile[j] } else { 0.0 };
                        assert!(
                            (got - want).abs() < 1e-15,
                            "k{k} W[{c}][{n}][{i}][{j}] = {got}"
                        );
                    }
                }
            }
        }
    }
    // Factor 8 (FCN): kernel 16, centre 7.5, taps 1/16, 3/16, ..., 15/16, 15/16, ..., 1/16.
    let mut layer: DeconvLayer<f64> =
        DeconvLayer::new(&DeconvConfig::new(1, 1, 2, 2, 1, 16).stride(8).pad(4)).unwrap();
    layer.bilinear_init();
    let row: Vec<f64> = (0..16)
        .map(|j| layer.weights()[j] / layer.weights()[7])
        .collect();
    let expect: Vec<f64> = (0..16)
        .map(|j: i32| (1.0 - ((j as f64) - 7.5).abs() / 8.0) / (15.0 / 16.0))
        .collect();
    assert!(max_rel_diff(&row, &expect) < 1e-14);
}

/// As in Darknet's `bilinear_init`, every filter gets the kernel, filter `f` reading input
/// channel `f % c` (within its group): with more filters than channels, output channel 2 of 3
/// from 2 channels upsamples channel 0 (it used to stay zero).
#[test]
fn bilinear_init_gives_every_filter_a_kernel() {
    // (channels, filters, groups)
    for (c, n, groups) in [
        (2, 3, 1),
        (2, 5, 1),
        (3, 2, 1),
        (4, 6, 2),
        (4, 4, 4),
        (1, 3, 1),
    ] {
        let config = DeconvConfig::new(1, c, 5, 5, n, 4)
            .stride(2)
            .pad(1)
            .groups(groups);
        let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
        layer.bilinear_init();
        let input: Vec<f64> = (0..c * 25).map(|i| ((i * 7919) % 13) as f64).collect();
        let out = layer.forward(&input, Mode::Inference).unwrap().to_vec();
        // Each output channel is the 2x bilinear upsampling of exactly one input channel:
        // compare with a one-channel layer on that channel.
        let mut one: DeconvLayer<f64> =
            DeconvLayer::new(&DeconvConfig::new(1, 1, 5, 5, 1, 4).stride(2).pad(1)).unwrap();
        one.bilinear_init();
        let (cg, ng) = (c / groups, n / groups);
        for f in 0..n {
            let source = f / ng * cg + (f % ng) % cg;
            let want = one
                .forward(&input[source * 25..][..25], Mode::Inference)
                .unwrap()
                .to_vec();
            let got = &out[f * 100..][..100];
            assert!(
                max_rel_diff(got, &want) < 1e-14,
                "c {c} n {n} groups {groups}: filter {f} should read channel {source}"
            );
            assert!(got.iter().any(|&v| v != 0.0));
        }
    }
}

#[test]
fn bilinear_layer_upsamples_a_ramp_linearly() {
    // 2x upsampling (k 4, s 2, p 1) of a linear ramp reproduces the ramp at half steps away
    // from the border.
    let config = DeconvConfig::new(1, 2, 6, 6, 2, 4).stride(2).pad(1);
    let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    layer.bilinear_init();
    let mut input = vec![0.0; 2 * 36];
    for c in 0..2 {
        for y in 0..6 {
            for x in 0..6 {
                input[c * 36 + y * 6 + x] = (c + 1) as f64 * (y as f64 + 2.0 * x as f64);
            }
        }
    }
    let out = layer.forward(&input, Mode::Inference).unwrap();
    for c in 0..2 {
        for oy in 1..11 {
            for ox in 1..11 {
                // Output pixel o sits at input coordinate (o - 0.5) / 2.
                let (y, x) = ((oy as f64 - 0.5) / 2.0, (ox as f64 - 0.5) / 2.0);
                let want = (c + 1) as f64 * (y + 2.0 * x);
                let got = out[c * 144 + oy * 12 + ox];
                assert!(
                    (got - want).abs() < 1e-12,
                    "c{c} ({oy},{ox}) {got} vs {want}"
                );
            }
        }
    }
}

/// Darknet's denormalize scales `weights[n][c*k*k]` although they are `[c][n][k][k]`; ours
/// folds per filter, so the folded layer reproduces the normalized one in inference.
#[test]
fn denormalized_layer_reproduces_the_batch_normalized_output() {
    let mut r = rng(8);
    for (c, n, groups) in [(3, 4, 1), (4, 6, 2), (2, 2, 1)] {
        let config = DeconvConfig::new(2, c, 5, 4, n, 3)
            .stride(2)
            .pad(1)
            .groups(groups)
            .activation(Activation::Leaky)
            .batch_normalize(true);
        let g = config.geometry().unwrap();
        let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config).unwrap();
        layer
            .scales_mut()
            .unwrap()
            .copy_from_slice(&cast::<f32>(&uniform(&mut r, n)));
        layer
            .biases_mut()
            .copy_from_slice(&cast::<f32>(&uniform(&mut r, n)));
        let rm: Vec<f32> = cast(&uniform(&mut r, n));
        let rv: Vec<f32> = cast(
            &uniform(&mut r, n)
                .iter()
                .map(|x| 0.1 + x * x)
                .collect::<Vec<_>>(),
        );
        layer.rolling_mean_mut().unwrap().copy_from_slice(&rm);
        layer.rolling_variance_mut().unwrap().copy_from_slice(&rv);
        let input: Vec<f32> = cast(&uniform(&mut r, g.batch() * g.inputs()));
        let before = layer.forward(&input, Mode::Inference).unwrap().to_vec();
        layer.denormalize().unwrap();
        assert!(!layer.batch_normalize());
        let after = layer.forward(&input, Mode::Inference).unwrap().to_vec();
        let diff = max_rel_diff(&after, &before);
        assert!(diff < 1e-5, "c{c} n{n} groups{groups}: differs by {diff}");
        // Training mode is plain bias now, too.
        let train = layer.forward(&input, Mode::Train).unwrap().to_vec();
        assert_eq!(train, after);
    }
}
