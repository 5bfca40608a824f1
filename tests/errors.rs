//! Every error path: bad geometry, wrong buffer lengths, calls in the wrong state. None panics.

use deconv::{DeconvConfig, DeconvLayer, Error, Mode, Optimizer, UpdateArgs};

fn base() -> DeconvConfig {
    DeconvConfig::new(2, 4, 5, 6, 6, 3).stride(2).pad(1)
}

fn invalid_param(config: &DeconvConfig) -> (&'static str, String) {
    let err = config.geometry().unwrap_err();
    let msg = err.to_string();
    match err {
        Error::InvalidParameter { param, .. } => {
            assert!(msg.contains(param), "message `{msg}` names `{param}`");
            // Building a layer fails the same way.
            let layer = DeconvLayer::<f32>::new(config);
            assert_eq!(layer.unwrap_err().to_string(), msg);
            (param, msg)
        }
        other => panic!("expected InvalidParameter, got {other:?}"),
    }
}

#[test]
fn zero_sizes_name_the_parameter() {
    type Setter = fn(&mut DeconvConfig);
    let cases: [(&str, Setter); 12] = [
        ("batch", |c| c.batch = 0),
        ("in_channels", |c| c.in_channels = 0),
        ("in_h", |c| c.in_h = 0),
        ("in_w", |c| c.in_w = 0),
        ("filters", |c| c.filters = 0),
        ("groups", |c| c.groups = 0),
        ("kernel", |c| c.kernel[0] = 0),
        ("kernel", |c| c.kernel[1] = 0),
        ("stride", |c| c.stride[0] = 0),
        ("stride", |c| c.stride[1] = 0),
        ("dilation", |c| c.dilation[0] = 0),
        ("dilation", |c| c.dilation[1] = 0),
    ];
    for (param, set) in cases {
        let mut config = base();
        set(&mut config);
        assert_eq!(invalid_param(&config).0, param);
    }
}

#[test]
fn padding_that_empties_the_output_is_rejected() {
    // out = (5-1)*2 + 3 - 2*pad: pad 5 gives 1 row, pad 6 gives none.
    assert!(base().pad_hw(5, 0).geometry().is_ok());
    let (param, msg) = invalid_param(&base().pad_hw(6, 0));
    assert_eq!(param, "pad");
    assert!(msg.contains("height"), "{msg}");
    let (_, msg) = invalid_param(&base().pad_hw(0, 100));
    assert!(msg.contains("width"), "{msg}");
}

#[test]
fn output_padding_must_be_below_stride_or_dilation() {
    assert!(base().output_padding(1).geometry().is_ok());
    assert_eq!(invalid_param(&base().output_padding(2)).0, "output_padding");
    // Allowed by the dilation even where the stride forbids it (as PyTorch).
    assert!(
        base()
            .stride(1)
            .dilation(3)
            .output_padding(2)
            .geometry()
            .is_ok()
    );
    assert_eq!(
        invalid_param(&base().stride(1).output_padding_hw(0, 1)).0,
        "output_padding"
    );
}

#[test]
fn channels_must_divide_into_groups() {
    assert!(base().groups(2).geometry().is_ok());
    assert_eq!(invalid_param(&base().groups(3)).0, "in_channels");
    assert_eq!(invalid_param(&base().groups(4)).0, "filters");
}

#[test]
fn overflowing_sizes_are_errors_not_panics() {
    let huge = usize::MAX / 2;
    for config in [
        DeconvConfig::new(1, 1, huge, 1, 1, 3).stride(4),
        DeconvConfig::new(1, 1, 1000, 1000, 1, 1).kernel_hw(huge, 1),
        DeconvConfig::new(huge, 1000, 1000, 1000, 1000, 3),
        DeconvConfig::new(1, huge, 1000, 1000, 1000, 3),
        DeconvConfig::new(1, 1, 4, 4, 1, 3).pad(huge + 1),
        DeconvConfig::new(1, 1, 2, 2, 1, 3).dilation(huge),
    ] {
        let err = config.geometry().unwrap_err();
        assert!(matches!(err, Error::Overflow { .. }), "{config:?}: {err}");
        assert!(DeconvLayer::<f32>::new(&config).is_err());
    }
}

#[test]
fn wrong_buffer_lengths_are_errors() {
    let config = base();
    let g = config.geometry().unwrap();
    let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config).unwrap();
    let n_in = g.batch() * g.inputs();
    for len in [0, n_in - 1, n_in + 1] {
        let err = layer.forward(&vec![0.0; len], Mode::Train).unwrap_err();
        assert_eq!(
            err,
            Error::BufferLength {
                buffer: "input",
                expected: n_in,
                found: len
            }
        );
    }
    let input = vec![0.5; n_in];
    layer.forward(&input, Mode::Train).unwrap();
    let err = layer.backward(&input[1..], None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferLength {
                buffer: "input",
                ..
            }
        ),
        "{err}"
    );
    let mut short = vec![0.0; n_in - 1];
    let err = layer.backward(&input, Some(&mut short)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferLength {
                buffer: "input_delta",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("expected"), "{err}");

    let mut shared = vec![0.0; layer.workspace_size() - 1];
    let err = layer
        .forward_with_workspace(&input, Mode::Train, &mut shared)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferLength {
                buffer: "workspace",
                ..
            }
        ),
        "{err}"
    );
    let err = layer
        .backward_with_workspace(&input, None, &mut shared)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferLength {
                buffer: "workspace",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn failed_calls_leave_the_layer_usable() {
    let config = base().batch_normalize(true);
    let g = config.geometry().unwrap();
    let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    let input = vec![0.25; g.batch() * g.inputs()];
    assert!(layer.forward(&input[1..], Mode::Train).is_err());
    let y = layer.forward(&input, Mode::Train).unwrap().to_vec();
    assert_eq!(y.len(), g.batch() * g.outputs());
    let mut short = vec![0.0; 3];
    assert!(layer.backward(&input, Some(&mut short)).is_err());
    // The failed backward did not consume the forward pass.
    layer.backward(&input, None).unwrap();
}

#[test]
fn calls_in_the_wrong_state_are_errors() {
    let config = base().batch_normalize(true);
    let g = config.geometry().unwrap();
    let input = vec![0.5f32; g.batch() * g.inputs()];
    let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config).unwrap();

    let err = layer.backward(&input, None).unwrap_err();
    assert!(
        matches!(err, Error::InvalidState(_)),
        "backward before forward: {err}"
    );
    layer.forward(&input, Mode::Inference).unwrap();
    let err = layer.backward(&input, None).unwrap_err();
    assert!(err.to_string().contains("Mode::Train"), "{err}");
    layer.forward(&input, Mode::Train).unwrap();
    layer.backward(&input, None).unwrap();
    let err = layer.backward(&input, None).unwrap_err();
    assert!(
        matches!(err, Error::InvalidState(_)),
        "second backward: {err}"
    );

    let err = layer
        .update(&UpdateArgs::sgd(0.1, 0.9, 0.0, 0))
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { param: "batch", .. }),
        "{err}"
    );
    let adam = UpdateArgs {
        optimizer: Optimizer::adam(),
        ..UpdateArgs::sgd(0.1, 0.9, 0.0, 2)
    };
    let err = layer.update(&adam).unwrap_err();
    assert!(err.to_string().contains("adam(true)"), "{err}");

    let mut plain: DeconvLayer<f32> = DeconvLayer::new(&base()).unwrap();
    assert!(matches!(plain.denormalize(), Err(Error::InvalidState(_))));
    assert!(matches!(
        plain.set_adam_step(3),
        Err(Error::InvalidState(_))
    ));

    let mut external: DeconvLayer<f32> = DeconvLayer::new(&base().own_workspace(false)).unwrap();
    let err = external.forward(&input, Mode::Train).unwrap_err();
    assert!(err.to_string().contains("forward_with_workspace"), "{err}");
    let err = external.backward(&input, None).unwrap_err();
    assert!(err.to_string().contains("backward_with_workspace"), "{err}");
}

#[test]
fn batch_norm_training_needs_two_values_per_channel() {
    let config = DeconvConfig::new(1, 2, 1, 1, 3, 1).batch_normalize(true);
    let mut layer: DeconvLayer<f64> = DeconvLayer::new(&config).unwrap();
    let err = layer.forward(&[1.0, 2.0], Mode::Train).unwrap_err();
    assert!(err.to_string().contains("at least 2"), "{err}");
    // Inference with rolling statistics is fine.
    layer.forward(&[1.0, 2.0], Mode::Inference).unwrap();
}

#[test]
fn phases_need_dilation_one() {
    let config = base().dilation(2).algorithm(deconv::Algorithm::Phases);
    let err = DeconvLayer::<f32>::new(&config).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                param: "algorithm",
                ..
            }
        ),
        "{err}"
    );
    // Auto picks an algorithm that applies (few channels here: direct).
    let layer = DeconvLayer::<f32>::new(&base().dilation(2)).unwrap();
    assert_ne!(layer.algorithm(), deconv::Algorithm::Phases);
}

#[test]
fn invalid_resize_leaves_the_layer_unchanged() {
    let mut layer: DeconvLayer<f32> = DeconvLayer::new(&base().pad(2)).unwrap();
    let before = *layer.geometry();
    let err = layer.resize(1, 0).unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { param: "in_w", .. }),
        "{err}"
    );
    // in_h = 1: out = 3 - 4 <= 0.
    let err = layer.resize(1, 6).unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { param: "pad", .. }),
        "{err}"
    );
    assert_eq!(*layer.geometry(), before);
    assert_eq!(layer.output().len(), before.batch() * before.outputs());
}

#[test]
fn huge_stride_on_a_tiny_input_builds_quickly() {
    // From fuzzing the cfg parser: the output is 1x1 whatever the stride, and building the
    // layer must not plan stride^2 phases.
    let config = DeconvConfig::new(1, 1, 1, 1, 1, 1).stride(47_483_648);
    let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config).unwrap();
    assert_eq!(layer.forward(&[2.0], Mode::Inference).unwrap().len(), 1);
    let err = DeconvLayer::<f32>::new(&config.algorithm(deconv::Algorithm::Phases)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                param: "algorithm",
                ..
            }
        ),
        "{err}"
    );
}
