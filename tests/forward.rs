//! The layer's GEMM + col2im / im2col paths against the direct-loop reference, for every
//! compiled backend and both element types; and the backends against each other.

mod common;

use common::*;
use deconv::backend::Gemm;
use deconv::{Algorithm, DeconvConfig, DeconvLayer, Element, Mode, reference};

/// A random configuration that `algorithm` supports (the phase decomposition needs dilation 1).
fn config_for(r: &mut rand::rngs::ChaCha8Rng, algorithm: Algorithm) -> DeconvConfig {
    loop {
        let mut config = random_config(r).algorithm(algorithm);
        if algorithm == Algorithm::Phases {
            config.dilation = [1, 1];
        }
        if config.geometry().is_ok() {
            return config;
        }
    }
}

/// Forward and backward of a linear layer without batch norm equal the reference, for every
/// forward algorithm; with whole numbers the comparison is exact.
fn check_against_reference<T: Element, B: Gemm<T> + Default>(seed: u64, exact: bool) {
    for algorithm in [
        Algorithm::Columns,
        Algorithm::Phases,
        Algorithm::Direct,
        Algorithm::Auto,
    ] {
        check_algorithm::<T, B>(seed, exact, algorithm);
    }
}

fn check_algorithm<T: Element, B: Gemm<T> + Default>(seed: u64, exact: bool, algorithm: Algorithm) {
    let mut r = rng(seed);
    for case in 0..150 {
        let config = config_for(&mut r, algorithm);
        let mut layer: DeconvLayer<T, B> = DeconvLayer::new(&config).unwrap();
        let g = *layer.geometry();
        let values = |r: &mut _, n| if exact { whole(r, n) } else { uniform(r, n) };
        let weights = cast::<T>(&values(&mut r, g.weight_count()));
        let biases = cast::<T>(&values(&mut r, g.filters()));
        let input = cast::<T>(&values(&mut r, g.batch() * g.inputs()));
        let grad = cast::<T>(&values(&mut r, g.batch() * g.outputs()));
        layer.weights_mut().copy_from_slice(&weights);
        layer.biases_mut().copy_from_slice(&biases);

        let mut expect = reference::deconv2d(&g, &input, &weights).unwrap();
        let area = g.out_area();
        for (p, plane) in expect.chunks_mut(area).enumerate() {
            plane.iter_mut().for_each(|x| *x += biases[p % g.filters()]);
        }
        let out = layer.forward(&input, Mode::Train).unwrap().to_vec();

        layer.delta_mut().copy_from_slice(&grad);
        let mut dx = vec![T::zero(); input.len()];
        layer.backward(&input, Some(&mut dx)).unwrap();
        let expect_dx = reference::conv2d_adjoint(&g, &grad, &weights).unwrap();
        let expect_dw = reference::deconv2d_weight_grad(&g, &input, &grad).unwrap();
        let mut expect_db = vec![T::zero(); g.filters()];
        for (p, plane) in grad.chunks(area).enumerate() {
            expect_db[p % g.filters()] += plane.iter().copied().sum::<T>();
        }

        let tol = if exact {
            0.0
        } else {
            1e3 * T::epsilon().to_f64_lossless()
        };
        let what = format!("case {case} {config:?} on {}", layer.backend().name());
        for (name, got, want) in [
            ("forward", &out[..], &expect[..]),
            ("input gradient", &dx, &expect_dx),
            ("weight gradient", layer.weight_updates(), &expect_dw),
            ("bias gradient", layer.bias_updates(), &expect_db),
        ] {
            let diff = max_rel_diff(got, want);
            assert!(
                diff <= tol,
                "{name} differs by {diff:e} (tolerance {tol:e}): {what}"
            );
        }
    }
}

#[cfg(feature = "matrixmultiply")]
mod matrixmultiply {
    use super::*;
    use deconv::backend::MatrixMultiply;

    #[test]
    fn f32_whole_numbers_exact() {
        check_against_reference::<f32, MatrixMultiply>(1, true);
    }
    #[test]
    fn f64_whole_numbers_exact() {
        check_against_reference::<f64, MatrixMultiply>(2, true);
    }
    #[test]
    fn f32_random() {
        check_against_reference::<f32, MatrixMultiply>(3, false);
    }
    #[test]
    fn f64_random() {
        check_against_reference::<f64, MatrixMultiply>(4, false);
    }
}

#[cfg(feature = "openblas")]
mod openblas {
    use super::*;
    use deconv::backend::OpenBlas;

    #[test]
    fn f32_whole_numbers_exact() {
        check_against_reference::<f32, OpenBlas>(5, true);
    }
    #[test]
    fn f64_whole_numbers_exact() {
        check_against_reference::<f64, OpenBlas>(6, true);
    }
    #[test]
    fn f32_random() {
        check_against_reference::<f32, OpenBlas>(7, false);
    }
    #[test]
    fn f64_random() {
        check_against_reference::<f64, OpenBlas>(8, false);
    }
}

/// Both backends, same layer with batch norm and a nonlinear activation: forward, backward and
/// update agree to rounding.
#[cfg(all(feature = "matrixmultiply", feature = "openblas"))]
#[test]
fn backends_agree_on_a_full_training_step() {
    use deconv::backend::{MatrixMultiply, OpenBlas};
    use deconv::{Activation, UpdateArgs};
    let mut r = rng(9);
    for _ in 0..30 {
        let config = random_config(&mut r)
            .activation(Activation::Leaky)
            .batch_normalize(true);
        let g = config.geometry().unwrap();
        if g.batch() * g.out_area() < 2 {
            continue;
        }
        let mut a: DeconvLayer<f32, MatrixMultiply> = DeconvLayer::new(&config).unwrap();
        let mut b: DeconvLayer<f32, OpenBlas> = DeconvLayer::new(&config).unwrap();
        assert_eq!(a.weights(), b.weights(), "same seed, same weights");
        let input = cast::<f32>(&uniform(&mut r, g.batch() * g.inputs()));
        let grad = cast::<f32>(&uniform(&mut r, g.batch() * g.outputs()));
        let ya = a.forward(&input, Mode::Train).unwrap().to_vec();
        let yb = b.forward(&input, Mode::Train).unwrap().to_vec();
        assert!(max_rel_diff(&ya, &yb) < 1e-4, "forward {config:?}");
        a.delta_mut().copy_from_slice(&grad);
        b.delta_mut().copy_from_slice(&grad);
        let (mut da, mut db) = (vec![0.0; input.len()], vec![0.0; input.len()]);
        a.backward(&input, Some(&mut da)).unwrap();
        b.backward(&input, Some(&mut db)).unwrap();
        assert!(max_rel_diff(&da, &db) < 1e-3, "input gradient {config:?}");
        assert!(
            max_rel_diff(a.weight_updates(), b.weight_updates()) < 1e-3,
            "{config:?}"
        );
        assert!(max_rel_diff(a.scale_updates().unwrap(), b.scale_updates().unwrap()) < 1e-3);
        let args = UpdateArgs::sgd(0.1, 0.9, 0.001, g.batch());
        a.update(&args).unwrap();
        b.update(&args).unwrap();
        assert!(
            max_rel_diff(a.weights(), b.weights()) < 1e-4,
            "update {config:?}"
        );
    }
}

/// A layer without its own workspace gives the same results on a shared one.
#[test]
fn shared_workspace_matches_own() {
    let mut r = rng(10);
    let c1 = random_config(&mut r);
    let c2 = random_config(&mut r);
    let mut own1: DeconvLayer<f64> = DeconvLayer::new(&c1).unwrap();
    let mut own2: DeconvLayer<f64> = DeconvLayer::new(&c2).unwrap();
    let mut ext1: DeconvLayer<f64> = DeconvLayer::new(&c1.clone().own_workspace(false)).unwrap();
    let mut ext2: DeconvLayer<f64> = DeconvLayer::new(&c2.clone().own_workspace(false)).unwrap();
    let size = ext1.workspace_size().max(ext2.workspace_size());
    let mut shared = vec![f64::NAN; size];
    for (own, ext, config) in [(&mut own1, &mut ext1, &c1), (&mut own2, &mut ext2, &c2)] {
        let g = config.geometry().unwrap();
        let input = uniform(&mut r, g.batch() * g.inputs());
        let a = own.forward(&input, Mode::Train).unwrap().to_vec();
        ext.forward_with_workspace(&input, Mode::Train, &mut shared)
            .unwrap();
        assert_eq!(a, ext.output());
        let grad = uniform(&mut r, g.batch() * g.outputs());
        own.delta_mut().copy_from_slice(&grad);
        ext.delta_mut().copy_from_slice(&grad);
        let (mut da, mut db) = (vec![0.0; input.len()], vec![0.0; input.len()]);
        own.backward(&input, Some(&mut da)).unwrap();
        ext.backward_with_workspace(&input, Some(&mut db), &mut shared)
            .unwrap();
        assert_eq!(da, db);
        assert_eq!(own.weight_updates(), ext.weight_updates());
    }
}

/// The thread count does not change results (rayon splits GEMM rows and channel planes).
#[test]
fn one_thread_and_many_threads_agree() {
    // Batch 5 over 4 threads: 3 tasks of 2, 2 and 1 images.
    let config = DeconvConfig::new(5, 64, 9, 7, 48, 3)
        .stride(2)
        .pad(1)
        .batch_normalize(true);
    let g = config.geometry().unwrap();
    let mut r = rng(11);
    let input = uniform(&mut r, g.batch() * g.inputs());
    let grad = uniform(&mut r, g.batch() * g.outputs());
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
            let y = layer.forward(&input, Mode::Train).unwrap().to_vec();
            layer.delta_mut().copy_from_slice(&grad);
            let mut dx = vec![0.0; input.len()];
            layer.backward(&input, Some(&mut dx)).unwrap();
            (y, dx, layer.weight_updates().to_vec())
        })
    };
    let (one, four) = (run(1), run(4));
    assert!(max_rel_diff(&one.0, &four.0) < 1e-12);
    assert!(max_rel_diff(&one.1, &four.1) < 1e-12);
    assert!(max_rel_diff(&one.2, &four.2) < 1e-12);
}

/// The forward algorithms agree with batch norm and nonlinear activations too (the reference
/// comparison above covers the linear part), and backward does not depend on them.
#[test]
fn algorithms_agree_with_batch_norm_and_activations() {
    use deconv::Activation;
    let mut r = rng(12);
    let activations = [
        Activation::Leaky,
        Activation::Logistic,
        Activation::Relu,
        Activation::Selu,
    ];
    for case in 0..60 {
        let config = config_for(&mut r, Algorithm::Phases)
            .activation(activations[case % activations.len()])
            .batch_normalize(case % 2 == 0);
        let g = config.geometry().unwrap();
        if config.batch_normalize && g.batch() * g.out_area() < 2 {
            continue;
        }
        let input = uniform(&mut r, g.batch() * g.inputs());
        let grad = uniform(&mut r, g.batch() * g.outputs());
        let biases = uniform(&mut r, g.filters());
        let run = |algorithm| {
            let mut layer: DeconvLayer<f64> =
                DeconvLayer::new(&config.clone().algorithm(algorithm)).unwrap();
            layer.biases_mut().copy_from_slice(&biases);
            let train = layer.forward(&input, Mode::Train).unwrap().to_vec();
            layer.delta_mut().copy_from_slice(&grad);
            let mut dx = vec![0.0; input.len()];
            layer.backward(&input, Some(&mut dx)).unwrap();
            let infer = layer.forward(&input, Mode::Inference).unwrap().to_vec();
            (
                train,
                infer,
                dx,
                layer.weight_updates().to_vec(),
                layer.bias_updates().to_vec(),
            )
        };
        let a = run(Algorithm::Columns);
        for algorithm in [Algorithm::Phases, Algorithm::Direct] {
            let b = run(algorithm);
            let what = format!("case {case}, {algorithm:?}: {config:?}");
            assert!(max_rel_diff(&a.0, &b.0) < 1e-12, "train forward, {what}");
            assert!(
                max_rel_diff(&a.1, &b.1) < 1e-12,
                "inference forward, {what}"
            );
            assert!(max_rel_diff(&a.2, &b.2) < 1e-12, "input gradient, {what}");
            assert!(max_rel_diff(&a.3, &b.3) < 1e-12, "weight gradient, {what}");
            assert!(max_rel_diff(&a.4, &b.4) < 1e-12, "bias gradient, {what}");
        }
    }
}

/// A 1x1 kernel at stride 1 without padding skips col2im and im2col (the GEMM writes the
/// output, the delta is its own column matrix): the same numbers as the direct plan, with
/// bias or batch norm, activations, groups, one image and several, on images large enough
/// for one GEMM each.
#[test]
fn one_by_one_kernels_skip_the_column_copies() {
    use deconv::Activation;
    let mut r = rng(13);
    for case in 0..8 {
        let groups = 1 + case % 2;
        let config = DeconvConfig::new(1 + case / 4, 2 * groups, 16, 17, 3 * groups, 1)
            .groups(groups)
            .activation([Activation::Logistic, Activation::Leaky][case / 2 % 2])
            .batch_normalize(case % 4 < 2);
        let g = config.geometry().unwrap();
        let input = uniform(&mut r, g.batch() * g.inputs());
        let grad = uniform(&mut r, g.batch() * g.outputs());
        let run = |algorithm| {
            let mut layer: DeconvLayer<f64> =
                DeconvLayer::new(&config.clone().algorithm(algorithm)).unwrap();
            let train = layer.forward(&input, Mode::Train).unwrap().to_vec();
            layer.delta_mut().copy_from_slice(&grad);
            let mut dx = vec![0.0; input.len()];
            layer.backward(&input, Some(&mut dx)).unwrap();
            let infer = layer.forward(&input, Mode::Inference).unwrap().to_vec();
            [train, infer, dx, layer.weight_updates().to_vec()]
        };
        let (a, b) = (run(Algorithm::Columns), run(Algorithm::Direct));
        for (what, (a, b)) in ["train", "inference", "dx", "dw"]
            .iter()
            .zip(a.iter().zip(&b))
        {
            assert!(
                max_rel_diff(a, b) < 1e-12,
                "{what}, case {case}: {config:?}"
            );
        }
    }
}

/// One image with few column rows (`filters/groups * kh * kw <= 64`) on several threads: the
/// columns are computed transposed, split by pixels, and transposed back. Exactly the
/// reference on whole numbers, with groups, bias, and on 1 thread (the plain GEMM) and 3.
#[test]
fn one_image_with_few_column_rows_matches_the_reference() {
    let configs = [
        DeconvConfig::new(1, 8, 13, 11, 3, 4).stride(2).pad(1),
        DeconvConfig::new(1, 4, 9, 7, 6, 3).stride(2).groups(2),
        DeconvConfig::new(1, 5, 6, 17, 16, 2).stride(2),
        DeconvConfig::new(1, 3, 7, 5, 1, 1)
            .kernel_hw(3, 5)
            .pad_hw(1, 2),
    ];
    let mut r = rng(21);
    for config in configs {
        let config = config.algorithm(Algorithm::Columns);
        let g = config.geometry().unwrap();
        let weights = whole(&mut r, g.weight_count());
        let biases = whole(&mut r, g.filters());
        let input = whole(&mut r, g.inputs());
        let mut want = reference::deconv2d(&g, &input, &weights).unwrap();
        for (p, plane) in want.chunks_mut(g.out_area()).enumerate() {
            plane.iter_mut().for_each(|v| *v += biases[p]);
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let out = pool.install(|| {
                let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config).unwrap();
                layer.weights_mut().copy_from_slice(&cast(&weights));
                layer.biases_mut().copy_from_slice(&cast(&biases));
                layer
                    .forward(&cast(&input), Mode::Inference)
                    .unwrap()
                    .to_vec()
            });
            assert_eq!(out, cast::<f32>(&want), "{threads} threads: {config:?}");
        }
    }
}
