//! Nothing aborts, nothing surprises: sizes that cannot be allocated are errors, public
//! functions validate their own inputs, Adam's step count works for any value, and a layer
//! that does not train holds no gradient state.

use deconv::batchnorm::channel_stats;
use deconv::im2col::{Window, col2im, im2col};
use deconv::{Activation, DeconvConfig, DeconvLayer, Error, Mode, Optimizer, Params, UpdateArgs};

fn allocation_error<T: deconv::Element>(config: &DeconvConfig) -> (&'static str, u64)
where
    deconv::DefaultBackend: deconv::Gemm<T>,
{
    config
        .geometry()
        .expect("the sizes themselves are representable");
    match DeconvLayer::<T>::new(config) {
        Err(Error::Allocation { what, bytes }) => (what, bytes),
        Err(other) => panic!("expected Error::Allocation, got {other}"),
        Ok(_) => panic!("a layer of {config:?} was built"),
    }
}

/// The examples of the issue, each of which aborted the process ("memory allocation of ...
/// failed"): a 4 TiB output, 2^40 weights, a batch of 2^40. Far above any machine's memory, so
/// the layer refuses them before reserving anything.
#[test]
fn layers_larger_than_memory_are_allocation_errors() {
    let output = DeconvConfig::new(1, 1, 1 << 20, 1 << 20, 1, 1);
    let (_, bytes) = allocation_error::<f32>(&output);
    assert!(bytes >= 4 << 40, "{bytes}");
    let weights = DeconvConfig::new(1, 1 << 20, 1, 1, 1 << 20, 1);
    allocation_error::<f32>(&weights);
    let batch = DeconvConfig::new(1 << 40, 1, 1, 1, 1, 1);
    allocation_error::<f64>(&batch);
    // An inference-only layer of the same sizes is refused too (its output alone is 4 TiB).
    allocation_error::<f32>(&output.clone().training(false));
    // Beyond the address space: refused even where the machine check is absent.
    allocation_error::<f32>(&DeconvConfig::new(1, 1, 1 << 23, 1 << 23, 1, 1));
    let message = DeconvLayer::<f32>::new(&output).unwrap_err().to_string();
    assert!(message.contains("could not allocate"), "{message}");
}

/// A layer whose buffers each fit the machine but together do not (the 50 GB layer on
/// a 24 GB machine): refused before its buffers are touched, instead of being killed by the
/// kernel while zeroing them.
#[test]
fn buffers_that_only_together_exceed_memory_are_refused() {
    let Some(memory) = machine_memory() else {
        eprintln!("no /proc/meminfo here: nothing to check");
        return;
    };
    // Output and delta, f32, 0.6 of the machine each: a 1x1 kernel maps h*w pixels to h*w.
    let pixels = (memory * 6 / 10 / 4) as usize;
    let w = 1 << 16;
    let config = DeconvConfig::new(1, 1, pixels / w, w, 1, 1);
    let (what, bytes) = allocation_error::<f32>(&config);
    assert_eq!(what, "the layer's buffers");
    assert!(bytes > memory, "{bytes} <= {memory}");
    // Without the gradient state (delta), the same layer is only the output: 0.6 of memory,
    // which fits; not built here so as not to take the memory of the other tests.
}

fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((kib("MemTotal:")? + kib("SwapTotal:").unwrap_or(0)) * 1024)
}

#[test]
fn resize_beyond_memory_is_an_error_and_leaves_the_layer_unchanged() {
    let config = DeconvConfig::new(2, 3, 4, 5, 2, 4).stride(2).pad(1);
    let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config).unwrap();
    let input: Vec<f32> = (0..2 * 3 * 4 * 5)
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    let before = layer.forward(&input, Mode::Inference).unwrap().to_vec();
    let geometry = *layer.geometry();
    let err = layer.resize(1 << 20, 1 << 20).unwrap_err();
    assert!(matches!(err, Error::Allocation { .. }), "{err}");
    assert_eq!(*layer.geometry(), geometry);
    assert_eq!(layer.forward(&input, Mode::Inference).unwrap(), &before[..]);
}

/// Element counts that fit `usize` but whose bytes do not fit `isize::MAX` made `Vec` panic
/// with "capacity overflow" (from C: DECONV_ERR_PANIC); the geometry rejects them.
#[test]
fn sizes_whose_bytes_do_not_fit_are_overflow_errors() {
    for filters in [1usize << 62, 1 << 61, 1 << 60] {
        let config = DeconvConfig::new(1, 1, 1, 1, filters, 1);
        let err = config.geometry().unwrap_err();
        assert!(matches!(err, Error::Overflow { .. }), "{filters}: {err}");
        let err = DeconvLayer::<f32>::new(&config).unwrap_err();
        assert!(matches!(err, Error::Overflow { .. }), "{filters}: {err}");
        let err = DeconvLayer::<f64>::new(&config).unwrap_err();
        assert!(matches!(err, Error::Overflow { .. }), "{filters}: {err}");
    }
}

#[test]
fn a_window_is_checked_when_it_is_made() {
    let ok = Window::new([3, 3], [2, 2], [1, 1], [1, 1], [4, 4], [7, 7]).unwrap();
    assert_eq!(
        (ok.kernel(), ok.stride(), ok.big()),
        ([3, 3], [2, 2], [7, 7])
    );
    for (what, stride, kernel, dilation) in [
        ("stride", [0, 2], [3, 3], [1, 1]),
        ("stride", [2, 0], [3, 3], [1, 1]),
        ("kernel", [2, 2], [0, 3], [1, 1]),
        ("dilation", [2, 2], [3, 3], [1, 0]),
    ] {
        let err = Window::new(kernel, stride, [1, 1], dilation, [4, 4], [7, 7]).unwrap_err();
        assert!(
            matches!(err, Error::InvalidParameter { param, .. } if param == what),
            "{err}"
        );
    }
    let err = Window::new([3, 3], [usize::MAX, 2], [1, 1], [1, 1], [4, 4], [7, 7]).unwrap_err();
    assert!(matches!(err, Error::Overflow { .. }), "{err}");
    // What is made runs: the window from above, both directions, on one channel.
    let mut cols = vec![0.0f64; 9 * 16];
    im2col(&vec![1.0; 49], &ok, &mut cols).unwrap();
    let mut planes = vec![0.0; 49];
    col2im(&cols, &ok, &mut planes).unwrap();
    assert!(planes.iter().all(|&v| v >= 1.0));
}

#[test]
fn channel_stats_validates_its_inputs() {
    let data = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let (mut mean, mut var) = ([0.0f32; 2], [0.0f32; 2]);
    let param = |r: deconv::Result<()>| match r {
        Err(Error::InvalidParameter { param, .. }) => param,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        param(channel_stats(&data, 0, 2, &mut [], &mut [])),
        "channels"
    );
    assert_eq!(
        param(channel_stats(&data, 2, 0, &mut mean, &mut var)),
        "spatial"
    );
    // One value per channel: the unbiased variance would divide by 0.
    assert_eq!(
        param(channel_stats(&data[..2], 2, 1, &mut mean, &mut var)),
        "data"
    );
    let err = channel_stats(&data[..7], 2, 2, &mut mean, &mut var).unwrap_err();
    assert!(
        matches!(err, Error::BufferLength { buffer: "data", .. }),
        "{err}"
    );
    let err = channel_stats(&data, 2, 2, &mut mean[..1], &mut var).unwrap_err();
    assert!(
        matches!(err, Error::BufferLength { buffer: "mean", .. }),
        "{err}"
    );
    channel_stats(&data, 2, 2, &mut mean, &mut var).unwrap();
    assert_eq!(mean, [3.5, 5.5]);
}

/// Adam's bias corrections `1 - beta^t` for any step count: the step saturates at `u64::MAX`
/// (it overflowed in debug builds and wrapped to 0 in release), and the power is taken in
/// floating point (an `i32` exponent truncated past 2^31).
#[test]
fn adam_works_for_any_step_count() {
    let config = DeconvConfig::new(1, 1, 2, 2, 1, 2).adam(true);
    let (beta1, beta2, eps, lr) = (0.9f64, 0.999f64, 1e-7f64, 0.01f64);
    let mut args = UpdateArgs::sgd(lr, 0.0, 0.0, 1);
    args.optimizer = Optimizer::Adam {
        beta1,
        beta2,
        epsilon: eps,
    };
    for start in [0u64, 9, (1 << 31) + 5, u64::MAX - 1, u64::MAX] {
        let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
        layer.set_adam_step(start).unwrap();
        layer.weight_updates_mut().fill(0.5);
        let w0 = layer.weights()[0];
        layer.update(&args).unwrap();
        let t = start.saturating_add(1);
        assert_eq!(layer.adam_step(), Some(t));
        // One step from zero moments: m = (1 - b1) d, v = (1 - b2) d^2.
        let d = 0.5;
        let m_hat = (1.0 - beta1) * d / (1.0 - beta1.powf(t as f64));
        let v_hat = (1.0 - beta2) * d * d / (1.0 - beta2.powf(t as f64));
        let want = w0 + lr * m_hat / (v_hat.sqrt() + eps);
        let got = layer.weights()[0];
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "step {start}: {got} vs {want}"
        );
        let (m, _) = layer.adam_moments(Params::Weights).unwrap();
        assert!(m.iter().all(|v| v.is_finite()));
    }
    // Betas outside [0, 1) are errors, not NaN.
    let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    args.optimizer = Optimizer::Adam {
        beta1: 1.0,
        beta2,
        epsilon: eps,
    };
    let err = layer.update(&args).unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { param: "beta1", .. }),
        "{err}"
    );
}

/// A layer built with `training(false)` holds no gradient state and says so when asked to
/// train; its inference output equals a training layer's.
#[test]
fn an_inference_only_layer_holds_no_gradient_state() {
    let config = DeconvConfig::new(4, 8, 6, 6, 16, 4)
        .stride(2)
        .pad(1)
        .batch_normalize(true)
        .activation(Activation::Leaky)
        .seed(3);
    let mut full: DeconvLayer<f32> = DeconvLayer::new(&config).unwrap();
    let mut lean: DeconvLayer<f32> = DeconvLayer::new(&config.clone().training(false)).unwrap();
    assert!(full.trains() && !lean.trains());
    assert!(lean.weight_updates().is_empty() && lean.bias_updates().is_empty());
    assert!(lean.delta().is_empty() && lean.gradients().is_empty());
    assert_eq!(lean.scale_updates(), Some(&[][..]));
    assert!(lean.x_norm().unwrap().is_empty());
    let g = *full.geometry();
    // The lean layer holds parameters, output and workspace; the full one also delta,
    // x_norm and the gradients.
    let saved = (2 * g.batch() * g.outputs() + g.weight_count() + 2 * g.filters()) * 4;
    assert!(
        full.memory_bytes() >= lean.memory_bytes() + saved,
        "{} vs {}",
        full.memory_bytes(),
        lean.memory_bytes()
    );
    if let Some(v) = lean.rolling_variance_mut() {
        v.fill(0.5);
    }
    full.rolling_variance_mut().unwrap().fill(0.5);
    let input: Vec<f32> = (0..g.batch() * g.inputs())
        .map(|i| (i as f32 * 0.1).cos())
        .collect();
    let a = full.forward(&input, Mode::Inference).unwrap().to_vec();
    let b = lean.forward(&input, Mode::Inference).unwrap().to_vec();
    assert_eq!(a, b);
    let state = |r: deconv::Result<()>| match r {
        Err(Error::InvalidState(msg)) => assert!(msg.contains("training(false)"), "{msg}"),
        other => panic!("{other:?}"),
    };
    state(lean.forward(&input, Mode::Train).map(|_| ()));
    state(lean.backward(&input, None));
    state(lean.update(&UpdateArgs::sgd(0.1, 0.9, 0.0, 4)));
    // Adam's buffers are training state too.
    let err = DeconvLayer::<f32>::new(&config.training(false).adam(true)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { param: "adam", .. }),
        "{err}"
    );
}

/// The per-thread weight-gradient sums of an image-parallel backward are reserved by the
/// backward, not at construction, and never take more than the rest of the layer: a layer
/// whose weights dominate (the shape, channels / 4) holds at most twice the memory on
/// 16 threads that it holds on 1, with the same results.
#[test]
fn per_thread_gradient_state_is_bounded() {
    let config = DeconvConfig::new(16, 256, 2, 2, 128, 4);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config).unwrap();
            let built = layer.memory_bytes();
            let g = *layer.geometry();
            let input: Vec<f32> = (0..g.batch() * g.inputs())
                .map(|i| ((i % 7) as f32) - 3.0)
                .collect();
            layer.forward(&input, Mode::Train).unwrap();
            for (i, d) in layer.delta_mut().iter_mut().enumerate() {
                *d = ((i % 5) as f32) - 2.0;
            }
            layer.backward(&input, None).unwrap();
            (built, layer.memory_bytes(), layer.weight_updates().to_vec())
        })
    };
    let (built1, after1, grad1) = run(1);
    for threads in [2, 8, 16] {
        let (built, after, grad) = run(threads);
        eprintln!(
            "{threads:>2} threads: built {built} B, after backward {after} B (1 thread: {after1} B)"
        );
        // The workspace grows with the threads (one slot each, at most the batch); nothing else
        // is reserved at construction.
        assert!(
            built < built1 + 16 * 512 * 16 * 4 * 4,
            "{built} vs {built1}"
        );
        assert!(
            after <= 2 * after1,
            "{threads} threads: {after} B > 2 x {after1} B"
        );
        // Whole numbers: every order of summation gives the same bits.
        assert_eq!(grad, grad1, "{threads} threads");
    }
}

/// Cloning a layer fallibly gives the same layer.
#[test]
fn try_clone_copies_everything() {
    let config = DeconvConfig::new(2, 3, 4, 4, 4, 3)
        .stride(2)
        .batch_normalize(true)
        .adam(true)
        .seed(5);
    let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    let input: Vec<f64> = (0..2 * 3 * 16).map(|i| (i as f64 * 0.3).sin()).collect();
    layer.forward(&input, Mode::Train).unwrap();
    layer.delta_mut().fill(0.25);
    layer.backward(&input, None).unwrap();
    let mut args = UpdateArgs::sgd(0.1, 0.9, 0.001, 2);
    args.optimizer = Optimizer::adam();
    layer.update(&args).unwrap();
    layer.forward(&input, Mode::Train).unwrap();
    let mut copy = layer.try_clone().unwrap();
    assert_eq!(copy.weights(), layer.weights());
    assert_eq!(copy.gradients(), layer.gradients());
    assert_eq!(copy.rolling_mean(), layer.rolling_mean());
    assert_eq!(copy.x_norm(), layer.x_norm());
    assert_eq!(copy.adam_step(), layer.adam_step());
    assert_eq!(
        copy.adam_moments(Params::Scales),
        layer.adam_moments(Params::Scales)
    );
    // Both continue the same way: the copy kept the pending forward too.
    for l in [&mut layer, &mut copy] {
        l.delta_mut().fill(0.5);
        l.backward(&input, None).unwrap();
        l.update(&args).unwrap();
    }
    assert_eq!(copy.weights(), layer.weights());
    assert_eq!(copy.scales(), layer.scales());
}
