//! Tests of the C API, calling the `extern "C"` functions as C does.

use super::status::run;
use super::*;
use crate::activation::Activation;
use crate::backend::AnyBackend;
use crate::layer::DeconvLayer;
use deconv_buffer::*;
use deconv_status::*;
use std::cell::Cell;
use std::ffi::{CStr, CString, c_int};
use std::ptr::{null, null_mut};

thread_local! {
    static PANIC_NEXT: Cell<bool> = const { Cell::new(false) };
}

/// Test hook: panics once inside the next layer call on this thread if armed.
pub(super) fn maybe_panic() {
    if PANIC_NEXT.with(|p| p.replace(false)) {
        panic!("injected test panic");
    }
}

fn last_error() -> String {
    // SAFETY: deconv_last_error never returns NULL and the string is NUL-terminated.
    unsafe { CStr::from_ptr(deconv_last_error()) }
        .to_str()
        .unwrap()
        .to_owned()
}

fn config(batch: usize, c: usize, h: usize, w: usize, n: usize, k: usize) -> deconv_config {
    let mut cfg = std::mem::MaybeUninit::<deconv_config>::uninit();
    // SAFETY: a valid out pointer.
    let st = unsafe { deconv_config_default(cfg.as_mut_ptr(), batch, c, h, w, n, k) };
    assert_eq!(st, DECONV_OK);
    // SAFETY: initialized by the call above.
    unsafe { cfg.assume_init() }
}

fn create(cfg: &deconv_config) -> *mut deconv_layer {
    let mut layer = null_mut();
    // SAFETY: valid pointers.
    let st = unsafe { deconv_layer_create(cfg, 0, &mut layer) };
    assert_eq!(st, DECONV_OK, "{}", last_error());
    assert!(!layer.is_null());
    layer
}

fn geometry(layer: *const deconv_layer) -> deconv_geometry {
    let mut g = std::mem::MaybeUninit::uninit();
    // SAFETY: valid pointers.
    let st = unsafe { deconv_layer_geometry(layer, g.as_mut_ptr()) };
    assert_eq!(st, DECONV_OK);
    // SAFETY: initialized by the call above.
    unsafe { g.assume_init() }
}

fn free(layer: *mut deconv_layer) {
    // SAFETY: a live handle, not used afterwards.
    assert_eq!(unsafe { deconv_layer_free(layer) }, DECONV_OK);
}

fn get(layer: *const deconv_layer, which: deconv_buffer, len: usize) -> Vec<f32> {
    let mut v = vec![f32::NAN; len];
    // SAFETY: valid pointers and length.
    let st = unsafe { deconv_layer_get(layer, which as c_int, v.as_mut_ptr(), v.len()) };
    assert_eq!(st, DECONV_OK, "{}", last_error());
    v
}

fn set(layer: *mut deconv_layer, which: deconv_buffer, v: &[f32]) {
    // SAFETY: valid pointers and length.
    let st = unsafe { deconv_layer_set(layer, which as c_int, v.as_ptr(), v.len()) };
    assert_eq!(st, DECONV_OK, "{}", last_error());
}

#[test]
fn committed_header_matches_generated() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/deconv.h"));
    let committed = include_str!("../../include/deconv.h");
    if generated != committed {
        let line = generated
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the end".to_owned(), |i| format!("line {}", i + 1));
        panic!(
            "include/deconv.h is out of date (first difference at {line}); regenerate it \
             with `DECONV_WRITE_HEADER=1 cargo build --features capi` and commit it"
        );
    }
}

#[test]
fn enums_match_the_crate() {
    for (i, a) in Activation::ALL.iter().enumerate() {
        assert_eq!(*a as usize, i);
    }
    let names = [
        "LOGISTIC", "RELU", "RELIE", "LINEAR", "RAMP", "TANH", "PLSE", "LEAKY", "ELU", "LOGGY",
        "STAIR", "HARDTAN", "LHTAN", "SELU",
    ];
    for (name, a) in names.iter().zip(Activation::ALL) {
        assert_eq!(name.to_lowercase(), a.name());
    }
    assert_eq!(
        deconv_activation::DECONV_ACTIVATION_SELU as usize,
        Activation::ALL.len() - 1
    );
    for (i, s) in deconv_status::ALL.iter().enumerate() {
        assert_eq!(*s as usize, i);
        // SAFETY: static NUL-terminated strings.
        let name = unsafe { CStr::from_ptr(deconv_status_name(i as c_int)) };
        assert_eq!(name.to_str().unwrap(), format!("{s:?}"));
    }
    // SAFETY: as above.
    let unknown = unsafe { CStr::from_ptr(deconv_status_name(-1)) };
    assert_eq!(unknown.to_str().unwrap(), "unknown status");
    for (i, b) in deconv_buffer::ALL.iter().enumerate() {
        assert_eq!(*b as usize, i);
    }
    // SAFETY: static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(deconv_version()) };
    assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn config_round_trip() {
    let mut cfg = config(2, 4, 5, 6, 2, 3);
    cfg.kernel = [3, 2];
    cfg.stride = [2, 3];
    cfg.pad = [1, 0];
    cfg.dilation = [1, 2];
    cfg.output_padding = [1, 2];
    cfg.groups = 2;
    cfg.activation = deconv_activation::DECONV_ACTIVATION_LEAKY as c_int;
    cfg.batch_normalize = 1;
    cfg.adam = 1;
    cfg.algorithm = deconv_algorithm::DECONV_ALGORITHM_COLUMNS as c_int;
    cfg.seed = 99;
    let layer = create(&cfg);
    let mut back = config(1, 1, 1, 1, 1, 1);
    // SAFETY: valid pointers.
    assert_eq!(unsafe { deconv_layer_config(layer, &mut back) }, DECONV_OK);
    assert_eq!(back, cfg);
    let g = geometry(layer);
    let rust = cfg.to_rust().unwrap().geometry().unwrap();
    assert_eq!((g.out_h, g.out_w), (rust.out_h(), rust.out_w()));
    assert_eq!(g.output_len, 2 * rust.outputs());
    assert_eq!(g.input_len, 2 * 4 * 5 * 6);
    assert_eq!(g.weight_count, 4 * 3 * 2); // in_channels * filters / groups * kh * kw
    // Same seed, same weights as the Rust API.
    let rust_layer: DeconvLayer<f32, AnyBackend> =
        DeconvLayer::new(&cfg.to_rust().unwrap()).unwrap();
    assert_eq!(
        get(layer, DECONV_BUFFER_WEIGHTS, g.weight_count),
        rust_layer.weights()
    );
    free(layer);
}

#[test]
fn null_pointers_are_errors() {
    let cfg = config(1, 1, 2, 2, 1, 2);
    let layer = create(&cfg);
    let g = geometry(layer);
    let input = vec![0.0f32; g.input_len];
    let mut out = null_mut();
    let mut len = 0usize;
    let mut data = null();
    // SAFETY: (all calls) every non-null pointer is valid; the null ones are what is tested.
    unsafe {
        assert_eq!(
            deconv_config_default(null_mut(), 1, 1, 1, 1, 1, 1),
            DECONV_ERR_NULL_POINTER
        );
        assert_eq!(
            deconv_layer_create(null(), 0, &mut out),
            DECONV_ERR_NULL_POINTER
        );
        assert!(
            last_error().contains("`config` is NULL"),
            "{}",
            last_error()
        );
        assert!(out.is_null());
        assert_eq!(
            deconv_layer_create(&cfg, 0, null_mut()),
            DECONV_ERR_NULL_POINTER
        );
        assert_eq!(
            deconv_layer_forward(null_mut(), input.as_ptr(), input.len(), 0),
            DECONV_ERR_NULL_POINTER
        );
        assert!(last_error().starts_with("deconv_layer_forward: `layer` is NULL"));
        assert_eq!(
            deconv_layer_forward(layer, null(), g.input_len, 0),
            DECONV_ERR_NULL_POINTER
        );
        assert_eq!(
            deconv_layer_backward(layer, null(), g.input_len, null_mut(), 0),
            DECONV_ERR_NULL_POINTER
        );
        assert_eq!(deconv_layer_update(layer, null()), DECONV_ERR_NULL_POINTER);
        assert_eq!(
            deconv_layer_output(layer, null_mut(), &mut len),
            DECONV_ERR_NULL_POINTER
        );
        assert_eq!(
            deconv_layer_output(layer, &mut data, null_mut()),
            DECONV_ERR_NULL_POINTER
        );
        assert_eq!(
            deconv_layer_set(layer, 0, null(), g.weight_count),
            DECONV_ERR_NULL_POINTER
        );
        assert_eq!(
            deconv_layer_geometry(layer, null_mut()),
            DECONV_ERR_NULL_POINTER
        );
        assert_eq!(
            deconv_layer_resize(null_mut(), 3, 3),
            DECONV_ERR_NULL_POINTER
        );
        assert_eq!(
            deconv_backend_compiled(0, null_mut()),
            DECONV_ERR_NULL_POINTER
        );
        assert_eq!(deconv_layer_free(null_mut()), DECONV_OK);
    }
    free(layer);
}

#[test]
fn wrong_lengths_and_codes_are_errors() {
    let cfg = config(2, 1, 2, 2, 1, 2);
    let layer = create(&cfg);
    let g = geometry(layer);
    let input = vec![1.0f32; g.input_len + 1];
    let mut dx = vec![0.0f32; g.input_len - 1];
    // SAFETY: (all calls) valid pointers with at least the lengths passed.
    unsafe {
        assert_eq!(
            deconv_layer_forward(layer, input.as_ptr(), g.input_len + 1, 0),
            DECONV_ERR_BUFFER_LENGTH
        );
        assert_eq!(
            last_error(),
            format!(
                "deconv_layer_forward: buffer `input` has {} elements, expected {}",
                g.input_len + 1,
                g.input_len
            )
        );
        assert_eq!(
            deconv_layer_forward(layer, input.as_ptr(), g.input_len, 7),
            DECONV_ERR_INVALID_PARAMETER
        );
        assert!(last_error().contains("unknown mode code 7"));
        assert_eq!(
            deconv_layer_forward(layer, input.as_ptr(), g.input_len, 0),
            DECONV_OK
        );
        assert_eq!(
            deconv_layer_backward(
                layer,
                input.as_ptr(),
                g.input_len,
                dx.as_mut_ptr(),
                dx.len()
            ),
            DECONV_ERR_BUFFER_LENGTH
        );
        assert!(last_error().contains("`input_delta`"), "{}", last_error());
        let mut w = vec![0.0f32; g.weight_count + 3];
        assert_eq!(
            deconv_layer_set(layer, 0, w.as_ptr(), w.len()),
            DECONV_ERR_BUFFER_LENGTH
        );
        assert_eq!(
            deconv_layer_get(layer, 0, w.as_mut_ptr(), g.weight_count - 1),
            DECONV_ERR_BUFFER_LENGTH
        );
        assert_eq!(
            deconv_layer_get(layer, 99, w.as_mut_ptr(), g.weight_count),
            DECONV_ERR_INVALID_PARAMETER
        );
        // Batch-norm and Adam buffers of a plain layer.
        assert_eq!(
            deconv_layer_get(layer, DECONV_BUFFER_SCALES as c_int, w.as_mut_ptr(), 1),
            DECONV_ERR_INVALID_STATE
        );
        assert!(last_error().contains("batch normalization"));
        let mut step = 0u64;
        assert_eq!(
            deconv_layer_adam_step(layer, &mut step),
            DECONV_ERR_INVALID_STATE
        );
        let mut args = std::mem::MaybeUninit::uninit();
        assert_eq!(
            deconv_update_args_adam(args.as_mut_ptr(), 0.1, 0.0, 1),
            DECONV_OK
        );
        assert_eq!(
            deconv_layer_update(layer, args.as_ptr()),
            DECONV_ERR_INVALID_STATE
        );
        let mut args = args.assume_init();
        args.optimizer = 5;
        assert_eq!(
            deconv_layer_update(layer, &args),
            DECONV_ERR_INVALID_PARAMETER
        );
        args.optimizer = 0;
        args.batch = 0;
        assert_eq!(
            deconv_layer_update(layer, &args),
            DECONV_ERR_INVALID_PARAMETER
        );
        // The layer's own output as its input, or as the input delta, is refused.
        let mut out = null();
        let mut len = 0;
        assert_eq!(deconv_layer_output(layer, &mut out, &mut len), DECONV_OK);
        assert_eq!(
            deconv_layer_forward(layer, out, g.input_len, 0),
            DECONV_ERR_INVALID_PARAMETER
        );
        assert!(last_error().contains("overlaps output"), "{}", last_error());
        // Backward without forward.
        assert_eq!(
            deconv_layer_backward(layer, input.as_ptr(), g.input_len, null_mut(), 0),
            DECONV_OK
        );
        assert_eq!(
            deconv_layer_backward(layer, input.as_ptr(), g.input_len, null_mut(), 0),
            DECONV_ERR_INVALID_STATE
        );
        assert!(last_error().contains("forward pass first"));
    }
    free(layer);
}

#[test]
fn invalid_configs_are_errors() {
    let mut out = null_mut();
    let check = |cfg: deconv_config, status: deconv_status, text: &str| {
        let mut out = null_mut();
        // SAFETY: valid pointers.
        assert_eq!(unsafe { deconv_layer_create(&cfg, 0, &mut out) }, status);
        assert!(out.is_null());
        assert!(last_error().contains(text), "{text}: {}", last_error());
    };
    let good = config(1, 2, 3, 3, 2, 3);
    check(
        config(0, 2, 3, 3, 2, 3),
        DECONV_ERR_INVALID_PARAMETER,
        "`batch`",
    );
    check(
        deconv_config {
            pad: [5, 0],
            ..good
        },
        DECONV_ERR_INVALID_PARAMETER,
        "`pad`",
    );
    check(
        deconv_config { groups: 3, ..good },
        DECONV_ERR_INVALID_PARAMETER,
        "multiple of groups",
    );
    check(
        deconv_config {
            output_padding: [1, 1],
            ..good
        },
        DECONV_ERR_INVALID_PARAMETER,
        "output_padding",
    );
    check(
        deconv_config {
            activation: 14,
            ..good
        },
        DECONV_ERR_INVALID_PARAMETER,
        "unknown activation code 14",
    );
    check(
        deconv_config {
            algorithm: deconv_algorithm::DECONV_ALGORITHM_PHASES as c_int,
            dilation: [2, 2],
            ..good
        },
        DECONV_ERR_INVALID_PARAMETER,
        "dilation",
    );
    check(
        deconv_config {
            algorithm: 4,
            ..good
        },
        DECONV_ERR_INVALID_PARAMETER,
        "unknown algorithm code 4",
    );
    // A layer larger than any machine: an error, not an abort (#10).
    check(
        config(1, 1, 1 << 20, 1 << 20, 1, 1),
        DECONV_ERR_ALLOCATION,
        "could not allocate",
    );
    // Element counts whose bytes do not fit isize: an error, not a panic (#10).
    check(config(1, 1, 1, 1, 1 << 62, 1), DECONV_ERR_OVERFLOW, "bytes");
    check(
        deconv_config {
            activation: -1,
            ..good
        },
        DECONV_ERR_INVALID_PARAMETER,
        "activation",
    );
    check(
        deconv_config {
            in_h: usize::MAX / 2,
            in_w: usize::MAX / 2,
            ..good
        },
        DECONV_ERR_OVERFLOW,
        "overflow",
    );
    // SAFETY: valid pointers.
    let st = unsafe { deconv_layer_create(&good, 42, &mut out) };
    assert_eq!(st, DECONV_ERR_INVALID_PARAMETER);
    assert!(last_error().contains("unknown backend code 42"));
}

#[test]
fn backends() {
    let cfg = config(1, 1, 2, 2, 1, 2);
    let mut compiled = -1;
    for code in [0, 1, 2] {
        // SAFETY: valid pointer.
        let st = unsafe { deconv_backend_compiled(code, &mut compiled) };
        assert_eq!(st, DECONV_OK);
        let name = ["default", "matrixmultiply", "openblas"][code as usize];
        let expect = code == 0 || crate::COMPILED_BACKENDS.contains(&name);
        assert_eq!(compiled != 0, expect, "{name}");
        let mut layer = null_mut();
        // SAFETY: valid pointers.
        let st = unsafe { deconv_layer_create(&cfg, code, &mut layer) };
        if expect {
            assert_eq!(st, DECONV_OK);
            let mut resolved = -1;
            // SAFETY: valid pointers.
            let st = unsafe { deconv_layer_backend(layer, &mut resolved) };
            assert_eq!(st, DECONV_OK);
            assert_ne!(resolved, 0);
            if code != 0 {
                assert_eq!(resolved, code);
            }
            free(layer);
        } else {
            assert_eq!(st, DECONV_ERR_INVALID_PARAMETER);
            assert!(last_error().contains("not a compiled-in backend"));
        }
    }
    // SAFETY: valid pointer.
    let st = unsafe { deconv_backend_compiled(3, &mut compiled) };
    assert_eq!(st, DECONV_ERR_INVALID_PARAMETER);
}

/// The hand-computable case of the C example: 1x1x2x2 input, 2x2 kernel, stride 2.
#[test]
fn forward_backward_update_match_hand_computation() {
    let cfg = config(1, 1, 2, 2, 1, 2);
    let cfg = deconv_config {
        stride: [2, 2],
        ..cfg
    };
    let layer = create(&cfg);
    let g = geometry(layer);
    assert_eq!((g.out_h, g.out_w, g.output_len), (4, 4, 16));
    let w = [1.0f32, 2.0, 3.0, 4.0];
    set(layer, DECONV_BUFFER_WEIGHTS, &w);
    set(layer, DECONV_BUFFER_BIASES, &[0.5]);
    let x = [1.0f32, 2.0, 3.0, 4.0];
    // SAFETY: (all calls) valid pointers and lengths.
    unsafe {
        assert_eq!(deconv_layer_forward(layer, x.as_ptr(), 4, 1), DECONV_OK);
        let (mut out, mut len) = (null(), 0);
        assert_eq!(deconv_layer_output(layer, &mut out, &mut len), DECONV_OK);
        let out = std::slice::from_raw_parts(out, len);
        #[rustfmt::skip]
        let expect = [
            1.5, 2.5, 2.5, 4.5,
            3.5, 4.5, 6.5, 8.5,
            3.5, 6.5, 4.5, 8.5,
            9.5, 12.5, 12.5, 16.5,
        ];
        assert_eq!(out, expect);
        // A training step with delta = 1 everywhere.
        assert_eq!(deconv_layer_forward(layer, x.as_ptr(), 4, 0), DECONV_OK);
        let (mut delta, mut len) = (null_mut(), 0);
        assert_eq!(deconv_layer_delta(layer, &mut delta, &mut len), DECONV_OK);
        std::slice::from_raw_parts_mut(delta, len).fill(1.0);
        let mut dx = [0.0f32; 4];
        assert_eq!(
            deconv_layer_backward(layer, x.as_ptr(), 4, dx.as_mut_ptr(), 4),
            DECONV_OK
        );
        assert_eq!(dx, [10.0; 4]);
        assert_eq!(get(layer, DECONV_BUFFER_WEIGHT_UPDATES, 4), [10.0; 4]);
        assert_eq!(get(layer, DECONV_BUFFER_BIAS_UPDATES, 1), [16.0]);
        let mut args = std::mem::MaybeUninit::uninit();
        assert_eq!(
            deconv_update_args_sgd(args.as_mut_ptr(), 0.1, 0.9, 0.01, 1),
            DECONV_OK
        );
        assert_eq!(deconv_layer_update(layer, args.as_ptr()), DECONV_OK);
    }
    let new_w = get(layer, DECONV_BUFFER_WEIGHTS, 4);
    for (i, (nw, w)) in new_w.iter().zip(w).enumerate() {
        let expect = w + 0.1 * (10.0 - 0.01 * w);
        assert!(
            (nw - expect).abs() < 1e-5,
            "w[{i}] = {nw}, expected {expect}"
        );
    }
    let b = get(layer, DECONV_BUFFER_BIASES, 1)[0];
    assert!((b - 2.1).abs() < 1e-5, "{b}");
    free(layer);
}

/// Weights written through a pointer kept from `deconv_layer_buffer_mut` reach the next
/// pass, although the layer keeps copies derived from them (here the phase packing).
#[test]
fn weights_written_through_a_kept_pointer_are_used() {
    for algorithm in [
        deconv_algorithm::DECONV_ALGORITHM_PHASES,
        deconv_algorithm::DECONV_ALGORITHM_COLUMNS,
    ] {
        let cfg = deconv_config {
            stride: [2, 2],
            algorithm: algorithm as c_int,
            ..config(1, 1, 2, 2, 1, 2)
        };
        let layer = create(&cfg);
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let (mut w, mut len) = (null_mut(), 0);
        // SAFETY: (all calls) valid pointers and lengths; `w` is used between calls only.
        unsafe {
            let which = DECONV_BUFFER_WEIGHTS as c_int;
            let st = deconv_layer_buffer_mut(layer, which, &mut w, &mut len);
            assert_eq!(st, DECONV_OK);
            let w = std::slice::from_raw_parts_mut(w, len);
            w.copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
            assert_eq!(deconv_layer_forward(layer, x.as_ptr(), 4, 1), DECONV_OK);
            let first = get(layer, DECONV_BUFFER_OUTPUT, 16);
            w.iter_mut().for_each(|v| *v *= 2.0);
            assert_eq!(deconv_layer_forward(layer, x.as_ptr(), 4, 1), DECONV_OK);
            let second = get(layer, DECONV_BUFFER_OUTPUT, 16);
            let doubled: Vec<f32> = first.iter().map(|v| 2.0 * v).collect();
            assert_eq!(second, doubled, "{algorithm:?}");
        }
        free(layer);
    }
}

#[test]
fn buffers_of_batch_norm_and_adam_layers() {
    let mut cfg = config(2, 2, 3, 3, 2, 2);
    cfg.batch_normalize = 1;
    cfg.adam = 1;
    let layer = create(&cfg);
    let g = geometry(layer);
    let lens = [
        g.weight_count,
        g.weight_count,
        2,
        2,
        2,
        2,
        2,
        2,
        2,
        2,
        g.output_len,
        g.output_len,
        g.output_len,
        g.weight_count,
        g.weight_count,
        2,
        2,
        2,
        2,
    ];
    for (b, expect) in deconv_buffer::ALL.into_iter().zip(lens) {
        let (mut data, mut len) = (null(), 0);
        // SAFETY: valid pointers.
        let st = unsafe { deconv_layer_buffer(layer, b as c_int, &mut data, &mut len) };
        assert_eq!(st, DECONV_OK, "{b:?}");
        assert_eq!(len, expect, "{b:?}");
        let (mut data_mut, mut len_mut) = (null_mut(), 0);
        // SAFETY: valid pointers.
        let st = unsafe { deconv_layer_buffer_mut(layer, b as c_int, &mut data_mut, &mut len_mut) };
        assert_eq!(st, DECONV_OK, "{b:?}");
        assert_eq!((data_mut.cast_const(), len_mut), (data, len), "{b:?}");
    }
    set(layer, DECONV_BUFFER_ROLLING_MEAN, &[1.0, 2.0]);
    assert_eq!(get(layer, DECONV_BUFFER_ROLLING_MEAN, 2), [1.0, 2.0]);
    let x = vec![0.25f32; g.input_len];
    let mut step = 7;
    // SAFETY: (all calls) valid pointers and lengths.
    unsafe {
        assert_eq!(
            deconv_layer_forward(
                layer,
                x.as_ptr(),
                x.len(),
                deconv_mode::DECONV_MODE_TRAIN as c_int
            ),
            DECONV_OK
        );
        assert_eq!(
            deconv_layer_backward(layer, x.as_ptr(), x.len(), null_mut(), 0),
            DECONV_OK
        );
        let mut args = std::mem::MaybeUninit::uninit();
        assert_eq!(
            deconv_update_args_adam(args.as_mut_ptr(), 0.01, 0.0005, 2),
            DECONV_OK
        );
        assert_eq!(deconv_layer_update(layer, args.as_ptr()), DECONV_OK);
        assert_eq!(deconv_layer_adam_step(layer, &mut step), DECONV_OK);
        assert_eq!(step, 1);
        let mut copy = null_mut();
        assert_eq!(deconv_layer_clone(layer, &mut copy), DECONV_OK);
        assert_eq!(deconv_layer_denormalize(layer), DECONV_OK);
        assert_eq!(deconv_layer_denormalize(layer), DECONV_ERR_INVALID_STATE);
        assert_eq!(
            deconv_layer_get(
                copy,
                DECONV_BUFFER_SCALES as c_int,
                [0.0f32; 2].as_mut_ptr(),
                2
            ),
            DECONV_OK
        );
        free(copy);
        assert_eq!(deconv_layer_resize(layer, 4, 5), DECONV_OK);
        assert_eq!(geometry(layer).in_w, 5);
        assert_eq!(
            deconv_layer_resize(layer, 0, 5),
            DECONV_ERR_INVALID_PARAMETER
        );
        assert_eq!(geometry(layer).in_w, 5);
    }
    free(layer);
}

/// The header promises that buffer pointers survive forward, backward and update (only
/// resize, denormalize and free invalidate them): check it for every buffer.
#[test]
fn buffer_pointers_are_stable_across_calls() {
    let mut cfg = config(2, 2, 3, 3, 2, 3);
    cfg.batch_normalize = 1;
    cfg.adam = 1;
    let layer = create(&cfg);
    let g = geometry(layer);
    let pointers = || {
        deconv_buffer::ALL.map(|b| {
            let (mut data, mut len) = (null(), 0);
            // SAFETY: valid pointers.
            let st = unsafe { deconv_layer_buffer(layer, b as c_int, &mut data, &mut len) };
            assert_eq!(st, DECONV_OK);
            (data, len)
        })
    };
    let before = pointers();
    let x = vec![0.5f32; g.input_len];
    let mut args = std::mem::MaybeUninit::uninit();
    // SAFETY: (all calls) valid pointers and lengths.
    unsafe {
        assert_eq!(
            deconv_layer_forward(
                layer,
                x.as_ptr(),
                x.len(),
                deconv_mode::DECONV_MODE_TRAIN as c_int
            ),
            DECONV_OK
        );
        assert_eq!(
            deconv_layer_backward(layer, x.as_ptr(), x.len(), null_mut(), 0),
            DECONV_OK
        );
        assert_eq!(
            deconv_update_args_adam(args.as_mut_ptr(), 0.01, 0.0, 2),
            DECONV_OK
        );
        assert_eq!(deconv_layer_update(layer, args.as_ptr()), DECONV_OK);
        assert_eq!(
            deconv_layer_forward(layer, x.as_ptr(), x.len(), 1),
            DECONV_OK
        );
    }
    assert_eq!(pointers(), before);
    free(layer);
}

#[test]
fn own_workspace_off() {
    let mut cfg = config(1, 2, 3, 3, 2, 3);
    cfg.own_workspace = 0;
    let layer = create(&cfg);
    let g = geometry(layer);
    let x = vec![1.0f32; g.input_len];
    let mut ws = vec![0.0f32; g.workspace_size + 5];
    let mut dx = vec![0.0f32; g.input_len];
    // SAFETY: (all calls) valid pointers and lengths.
    unsafe {
        assert_eq!(
            deconv_layer_forward(
                layer,
                x.as_ptr(),
                x.len(),
                deconv_mode::DECONV_MODE_TRAIN as c_int
            ),
            DECONV_ERR_INVALID_STATE
        );
        assert_eq!(
            deconv_layer_forward_with_workspace(
                layer,
                x.as_ptr(),
                x.len(),
                0,
                ws.as_mut_ptr(),
                g.workspace_size - 1
            ),
            DECONV_ERR_BUFFER_LENGTH
        );
        assert_eq!(
            deconv_layer_forward_with_workspace(
                layer,
                x.as_ptr(),
                x.len(),
                0,
                ws.as_mut_ptr(),
                ws.len()
            ),
            DECONV_OK
        );
        // The workspace may not overlap the input delta.
        assert_eq!(
            deconv_layer_backward_with_workspace(
                layer,
                x.as_ptr(),
                x.len(),
                ws.as_mut_ptr(),
                g.input_len,
                ws.as_mut_ptr(),
                ws.len()
            ),
            DECONV_ERR_INVALID_PARAMETER
        );
        assert!(
            last_error().contains("overlaps input_delta"),
            "{}",
            last_error()
        );
        assert_eq!(
            deconv_layer_backward_with_workspace(
                layer,
                x.as_ptr(),
                x.len(),
                dx.as_mut_ptr(),
                dx.len(),
                ws.as_mut_ptr(),
                ws.len()
            ),
            DECONV_OK
        );
    }
    free(layer);
}

#[test]
fn panic_becomes_a_status_and_poisons_the_layer() {
    let cfg = config(1, 1, 2, 2, 1, 2);
    let layer = create(&cfg);
    let x = [1.0f32; 4];
    PANIC_NEXT.with(|p| p.set(true));
    // SAFETY: (all calls) valid pointers and lengths.
    unsafe {
        assert_eq!(
            deconv_layer_forward(layer, x.as_ptr(), 4, 0),
            DECONV_ERR_PANIC
        );
        assert!(
            last_error().contains("injected test panic"),
            "{}",
            last_error()
        );
        assert_eq!(
            deconv_layer_forward(layer, x.as_ptr(), 4, 0),
            DECONV_ERR_INVALID_STATE
        );
        assert!(last_error().contains("panicked"));
        let mut g = std::mem::MaybeUninit::uninit();
        assert_eq!(
            deconv_layer_geometry(layer, g.as_mut_ptr()),
            DECONV_ERR_INVALID_STATE
        );
    }
    free(layer);
    // `run` itself catches panics from any body.
    assert_eq!(run("f", || panic!("{}", 42)), DECONV_ERR_PANIC);
    assert!(last_error().starts_with("f: panic"), "{}", last_error());
    assert!(last_error().ends_with("42"), "{}", last_error());
}

#[test]
fn weights_round_trip_through_files_and_memory() {
    let mut cfg = config(2, 3, 4, 4, 2, 3);
    cfg.batch_normalize = 1;
    cfg.seed = 5;
    let a = create(&cfg);
    let g = geometry(a);
    set(a, DECONV_BUFFER_ROLLING_MEAN, &[0.25, -0.5]);
    set(a, DECONV_BUFFER_BIASES, &[1.5, 2.5]);
    cfg.seed = 6;
    let b = create(&cfg);
    let c = create(&cfg);
    let dir = std::env::temp_dir().join(format!("deconv-capi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = CString::new(dir.join("a.weights").to_str().unwrap()).unwrap();
    let missing = CString::new(dir.join("missing.weights").to_str().unwrap()).unwrap();
    let mut header = std::mem::MaybeUninit::uninit();
    // SAFETY: (all calls) valid pointers and lengths; the nulls are what is tested.
    unsafe {
        assert_eq!(
            deconv_weights_header_default(header.as_mut_ptr(), 1234),
            DECONV_OK
        );
        let header = header.assume_init();
        assert_eq!((header.major, header.minor, header.seen), (0, 2, 1234));
        assert_eq!(
            deconv_layer_save_weights(a, path.as_ptr(), &header),
            DECONV_OK
        );
        let mut read_header = deconv_weights_header {
            major: 9,
            minor: 9,
            revision: 9,
            seen: 9,
        };
        assert_eq!(
            deconv_layer_load_weights(b, path.as_ptr(), 1, &mut read_header),
            DECONV_OK
        );
        assert_eq!(read_header, header);
        assert_eq!(
            deconv_layer_load_weights(b, missing.as_ptr(), 0, null_mut()),
            DECONV_ERR_IO
        );
        assert!(last_error().contains("missing.weights"), "{}", last_error());
        assert_eq!(
            deconv_layer_load_weights(b, null(), 0, null_mut()),
            DECONV_ERR_NULL_POINTER
        );
        assert_eq!(
            deconv_layer_save_weights(a, null(), null()),
            DECONV_ERR_NULL_POINTER
        );
        // In memory: exact length required for writing; reading checks the size.
        let mut bytes = 0usize;
        assert_eq!(
            deconv_layer_weights_byte_len(a, null(), &mut bytes),
            DECONV_OK
        );
        let floats = 2 * 4 + g.weight_count; // biases, scales, mean, variance; weights
        assert_eq!(bytes, 20 + 4 * floats);
        let mut data = vec![0u8; bytes + 1];
        assert_eq!(
            deconv_layer_write_weights(a, null(), data.as_mut_ptr(), bytes + 1),
            DECONV_ERR_BUFFER_LENGTH
        );
        assert_eq!(
            deconv_layer_write_weights(a, null(), data.as_mut_ptr(), bytes),
            DECONV_OK
        );
        assert_eq!(
            deconv_layer_read_weights(c, data.as_ptr(), bytes - 1, 0, null_mut()),
            DECONV_ERR_FORMAT
        );
        assert!(last_error().contains("expected"), "{}", last_error());
        assert_eq!(
            deconv_layer_read_weights(c, data.as_ptr(), bytes + 1, 0, null_mut()),
            DECONV_ERR_FORMAT
        );
        // A NaN weight (the last float) is rejected when asked, accepted otherwise.
        data[bytes - 4..bytes].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(
            deconv_layer_read_weights(c, data.as_ptr(), bytes, 1, null_mut()),
            DECONV_ERR_FORMAT
        );
        assert!(last_error().contains("non-finite"), "{}", last_error());
        assert_eq!(
            deconv_layer_read_weights(c, data.as_ptr(), bytes, 0, null_mut()),
            DECONV_OK
        );
        // The layer's own buffer as the data is refused.
        let (mut w, mut n) = (null(), 0);
        assert_eq!(
            deconv_layer_buffer(c, DECONV_BUFFER_WEIGHTS as c_int, &mut w, &mut n),
            DECONV_OK
        );
        assert_eq!(
            deconv_layer_read_weights(c, w.cast(), n * 4, 0, null_mut()),
            DECONV_ERR_INVALID_PARAMETER
        );
    }
    for which in [
        DECONV_BUFFER_WEIGHTS,
        DECONV_BUFFER_BIASES,
        DECONV_BUFFER_SCALES,
        DECONV_BUFFER_ROLLING_MEAN,
        DECONV_BUFFER_ROLLING_VARIANCE,
    ] {
        let len = if which == DECONV_BUFFER_WEIGHTS {
            g.weight_count
        } else {
            2
        };
        assert_eq!(get(b, which, len), get(a, which, len), "{which:?}");
    }
    let wc = g.weight_count;
    assert_eq!(
        get(c, DECONV_BUFFER_WEIGHTS, wc)[..wc - 1],
        get(a, DECONV_BUFFER_WEIGHTS, wc)[..wc - 1]
    );
    assert!(get(c, DECONV_BUFFER_WEIGHTS, wc)[wc - 1].is_nan());
    std::fs::remove_dir_all(&dir).unwrap();
    for l in [a, b, c] {
        free(l);
    }
}

#[test]
fn config_from_darknet_cfg() {
    let text = c"[deconvolutional]
batch_normalize=1
filters=2
size=4
stride=2
pad=1
activation=leaky
";
    let mut cfg = config(1, 1, 1, 1, 1, 1);
    // SAFETY: (all calls) valid pointers.
    unsafe {
        assert_eq!(
            deconv_config_from_cfg(text.as_ptr(), 1, 3, 8, 8, &mut cfg),
            DECONV_OK
        );
        assert_eq!(
            (
                cfg.filters,
                cfg.kernel,
                cfg.stride,
                cfg.pad,
                cfg.batch_normalize
            ),
            (2, [4, 4], [2, 2], [2, 2], 1)
        );
        assert_eq!(
            cfg.activation,
            deconv_activation::DECONV_ACTIVATION_LEAKY as c_int
        );
        assert_eq!(
            deconv_config_from_cfg(c"size=3x".as_ptr(), 1, 3, 8, 8, &mut cfg),
            DECONV_ERR_FORMAT
        );
        assert!(last_error().contains("size"), "{}", last_error());
        assert_eq!(
            deconv_config_from_cfg(null(), 1, 3, 8, 8, &mut cfg),
            DECONV_ERR_NULL_POINTER
        );
    }
}

#[test]
fn last_error_is_per_thread_and_kept_on_success() {
    // SAFETY: null is what is tested.
    let st = unsafe { deconv_layer_resize(null_mut(), 1, 1) };
    assert_eq!(st, DECONV_ERR_NULL_POINTER);
    let here = last_error();
    assert!(here.contains("deconv_layer_resize"));
    let there = std::thread::spawn(last_error).join().unwrap();
    assert_eq!(there, "");
    let mut compiled = 0;
    // SAFETY: valid pointer.
    let st = unsafe { deconv_backend_compiled(0, &mut compiled) };
    assert_eq!(st, DECONV_OK);
    assert_eq!(last_error(), here);
}

/// The same layer in double through the `_f64` functions: the hand-computed numbers of
/// `forward_backward_update_match_hand_computation`, exactly where they are exact, and the
/// weights of the Rust `DeconvLayer<f64>` with the same seed.
#[test]
fn f64_layer_forward_backward_update() {
    let cfg = deconv_config {
        stride: [2, 2],
        seed: 5,
        ..config(1, 1, 2, 2, 1, 2)
    };
    let mut layer = null_mut();
    // SAFETY: valid pointers.
    let st = unsafe { deconv_layer_create_f64(&cfg, 0, &mut layer) };
    assert_eq!(st, DECONV_OK, "{}", last_error());
    let mut precision = -1;
    // SAFETY: valid pointers.
    let st = unsafe { deconv_layer_precision(layer, &mut precision) };
    assert_eq!(st, DECONV_OK);
    assert_eq!(precision, deconv_precision::DECONV_PRECISION_F64 as c_int);
    let rust: DeconvLayer<f64, AnyBackend> = DeconvLayer::new(&cfg.to_rust().unwrap()).unwrap();
    let mut w0 = [0.0f64; 4];
    // SAFETY: (all calls) valid pointers and lengths.
    unsafe {
        let st = deconv_layer_get_f64(layer, DECONV_BUFFER_WEIGHTS as c_int, w0.as_mut_ptr(), 4);
        assert_eq!(st, DECONV_OK);
        assert_eq!(w0[..], rust.weights()[..]);
        let w = [1.0f64, 2.0, 3.0, 4.0];
        let st = deconv_layer_set_f64(layer, DECONV_BUFFER_WEIGHTS as c_int, w.as_ptr(), 4);
        assert_eq!(st, DECONV_OK);
        let st = deconv_layer_set_f64(layer, DECONV_BUFFER_BIASES as c_int, [0.5].as_ptr(), 1);
        assert_eq!(st, DECONV_OK);
        let x = [1.0f64, 2.0, 3.0, 4.0];
        assert_eq!(deconv_layer_forward_f64(layer, x.as_ptr(), 4, 1), DECONV_OK);
        let (mut out, mut len) = (null(), 0);
        assert_eq!(
            deconv_layer_output_f64(layer, &mut out, &mut len),
            DECONV_OK
        );
        #[rustfmt::skip]
        let expect = [
            1.5, 2.5, 2.5, 4.5,
            3.5, 4.5, 6.5, 8.5,
            3.5, 6.5, 4.5, 8.5,
            9.5, 12.5, 12.5, 16.5,
        ];
        assert_eq!(std::slice::from_raw_parts(out, len), expect);
        assert_eq!(deconv_layer_forward_f64(layer, x.as_ptr(), 4, 0), DECONV_OK);
        let (mut delta, mut len) = (null_mut(), 0);
        assert_eq!(
            deconv_layer_delta_f64(layer, &mut delta, &mut len),
            DECONV_OK
        );
        std::slice::from_raw_parts_mut(delta, len).fill(1.0);
        let mut dx = [0.0f64; 4];
        let st = deconv_layer_backward_f64(layer, x.as_ptr(), 4, dx.as_mut_ptr(), 4);
        assert_eq!(st, DECONV_OK);
        assert_eq!(dx, [10.0; 4]);
        let mut args = std::mem::MaybeUninit::uninit();
        let st = deconv_update_args_sgd_f64(args.as_mut_ptr(), 0.1, 0.9, 0.01, 1);
        assert_eq!(st, DECONV_OK);
        assert_eq!(deconv_layer_update_f64(layer, args.as_ptr()), DECONV_OK);
        let mut new_w = [0.0f64; 4];
        let (mut data, mut len) = (null_mut(), 0);
        let st =
            deconv_layer_buffer_mut_f64(layer, DECONV_BUFFER_WEIGHTS as c_int, &mut data, &mut len);
        assert_eq!(st, DECONV_OK);
        new_w.copy_from_slice(std::slice::from_raw_parts(data, len));
        for (nw, w) in new_w.iter().zip(w) {
            let expect = w + 0.1 * (10.0 - 0.01 * w);
            assert!((nw - expect).abs() < 1e-12, "{nw} vs {expect}");
        }
        let (mut b, mut len) = (null(), 0);
        let st = deconv_layer_buffer_f64(layer, DECONV_BUFFER_BIASES as c_int, &mut b, &mut len);
        assert_eq!(st, DECONV_OK);
        assert!((*b - 2.1).abs() < 1e-12);
        let mut scale = 0.0f64;
        assert_eq!(
            deconv_layer_set_learning_rate_scale_f64(layer, 0.25),
            DECONV_OK
        );
        assert_eq!(
            deconv_layer_learning_rate_scale_f64(layer, &mut scale),
            DECONV_OK
        );
        assert_eq!(scale, 0.25);
        // The functions that take either precision.
        let mut copy = null_mut();
        assert_eq!(deconv_layer_clone(layer, &mut copy), DECONV_OK);
        assert_eq!(deconv_layer_resize(copy, 3, 3), DECONV_OK);
        assert_eq!(geometry(copy).out_h, 6);
        free(copy);
    }
    free(layer);
}

/// A function of one precision on a layer of the other is an error naming the right one.
#[test]
fn the_other_precision_is_an_error_naming_the_twin() {
    let cfg = config(1, 1, 2, 2, 1, 2);
    let float_layer = create(&cfg);
    let mut double_layer = null_mut();
    // SAFETY: (all calls) valid pointers and lengths.
    unsafe {
        assert_eq!(
            deconv_layer_create_f64(&cfg, 0, &mut double_layer),
            DECONV_OK
        );
        let x32 = [1.0f32; 4];
        let x64 = [1.0f64; 4];
        let st = deconv_layer_forward(double_layer, x32.as_ptr(), 4, 0);
        assert_eq!(st, DECONV_ERR_INVALID_PARAMETER);
        assert!(
            last_error().ends_with("call deconv_layer_forward_f64"),
            "{}",
            last_error()
        );
        let st = deconv_layer_forward_f64(float_layer, x64.as_ptr(), 4, 0);
        assert_eq!(st, DECONV_ERR_INVALID_PARAMETER);
        assert!(
            last_error().ends_with("call deconv_layer_forward"),
            "{}",
            last_error()
        );
        let mut args = std::mem::MaybeUninit::uninit();
        assert_eq!(
            deconv_update_args_sgd(args.as_mut_ptr(), 0.1, 0.9, 0.0, 1),
            DECONV_OK
        );
        let st = deconv_layer_update(double_layer, args.as_ptr());
        assert_eq!(st, DECONV_ERR_INVALID_PARAMETER);
        let mut precision = -1;
        assert_eq!(
            deconv_layer_precision(float_layer, &mut precision),
            DECONV_OK
        );
        assert_eq!(precision, deconv_precision::DECONV_PRECISION_F32 as c_int);
        assert_eq!(
            deconv_layer_precision(null(), &mut precision),
            DECONV_ERR_NULL_POINTER
        );
    }
    free(float_layer);
    free(double_layer);
}

/// Adam's step count can be restored (checkpoint/restart), and only on an Adam layer.
#[test]
fn adam_step_is_restored() {
    let mut cfg = config(1, 1, 2, 2, 1, 2);
    let plain = create(&cfg);
    cfg.adam = 1;
    let adam = create(&cfg);
    let mut step = 0u64;
    // SAFETY: (all calls) valid pointers.
    unsafe {
        assert_eq!(deconv_layer_set_adam_step(adam, 41), DECONV_OK);
        assert_eq!(deconv_layer_adam_step(adam, &mut step), DECONV_OK);
        assert_eq!(step, 41);
        let x = [1.0f32; 4];
        assert_eq!(deconv_layer_forward(adam, x.as_ptr(), 4, 0), DECONV_OK);
        assert_eq!(
            deconv_layer_backward(adam, x.as_ptr(), 4, null_mut(), 0),
            DECONV_OK
        );
        let mut args = std::mem::MaybeUninit::uninit();
        assert_eq!(
            deconv_update_args_adam(args.as_mut_ptr(), 0.01, 0.0, 1),
            DECONV_OK
        );
        assert_eq!(deconv_layer_update(adam, args.as_ptr()), DECONV_OK);
        assert_eq!(deconv_layer_adam_step(adam, &mut step), DECONV_OK);
        assert_eq!(step, 42);
        assert_eq!(
            deconv_layer_set_adam_step(plain, 1),
            DECONV_ERR_INVALID_STATE
        );
        assert!(last_error().contains("Adam"), "{}", last_error());
        assert_eq!(
            deconv_layer_set_adam_step(null_mut(), 1),
            DECONV_ERR_NULL_POINTER
        );
    }
    free(plain);
    free(adam);
}

/// `deconv_set_num_threads` sizes the pool the calls run on, and 0 goes back to rayon's.
#[test]
fn thread_count_is_set_for_the_calls() {
    let default = rayon::current_num_threads();
    let mut threads = 0usize;
    let cfg = deconv_config {
        stride: [2, 2],
        ..config(4, 2, 5, 5, 3, 4)
    };
    let run_layer = || {
        let layer = create(&cfg);
        let g = geometry(layer);
        let x: Vec<f32> = (0..g.input_len).map(|i| (i % 7) as f32 - 3.0).collect();
        // SAFETY: valid pointers and lengths.
        let st = unsafe { deconv_layer_forward(layer, x.as_ptr(), x.len(), 1) };
        assert_eq!(st, DECONV_OK);
        let out = get(layer, DECONV_BUFFER_OUTPUT, g.output_len);
        free(layer);
        out
    };
    let before = run_layer();
    assert_eq!(deconv_set_num_threads(3), DECONV_OK);
    // SAFETY: valid pointer.
    assert_eq!(unsafe { deconv_num_threads(&mut threads) }, DECONV_OK);
    assert_eq!(threads, 3);
    // Forward runs image by image: the same numbers on any number of threads.
    assert_eq!(run_layer(), before);
    assert_eq!(deconv_set_num_threads(0), DECONV_OK);
    // SAFETY: valid pointer.
    assert_eq!(unsafe { deconv_num_threads(&mut threads) }, DECONV_OK);
    assert_eq!(threads, default);
    // SAFETY: null is what is tested.
    let st = unsafe { deconv_num_threads(null_mut()) };
    assert_eq!(st, DECONV_ERR_NULL_POINTER);
}

/// A C caller's collective, here a `ThreadRank` behind the context pointer.
unsafe extern "C" fn thread_allreduce(
    data: *mut std::ffi::c_void,
    count: usize,
    precision: c_int,
    context: *mut std::ffi::c_void,
) -> c_int {
    use crate::distributed::{Collective, ThreadRank};
    assert_eq!(precision, deconv_precision::DECONV_PRECISION_F32 as c_int);
    // SAFETY: the test passes a live `ThreadRank<f32>` and `count` floats.
    let (rank, data) = unsafe {
        (
            &*context.cast::<ThreadRank<f32>>(),
            std::slice::from_raw_parts_mut(data.cast::<f32>(), count),
        )
    };
    c_int::from(rank.allreduce_sum(data).is_err())
}

/// The broadcast of [`thread_allreduce`]'s collective.
unsafe extern "C" fn thread_broadcast(
    data: *mut std::ffi::c_void,
    count: usize,
    precision: c_int,
    root: c_int,
    context: *mut std::ffi::c_void,
) -> c_int {
    use crate::distributed::{Collective, ThreadRank};
    assert_eq!(precision, deconv_precision::DECONV_PRECISION_F32 as c_int);
    // SAFETY: as in `thread_allreduce`.
    let (rank, data) = unsafe {
        (
            &*context.cast::<ThreadRank<f32>>(),
            std::slice::from_raw_parts_mut(data.cast::<f32>(), count),
        )
    };
    c_int::from(rank.broadcast(data, root as usize).is_err())
}

/// Data-parallel training through the C callbacks: 2 ranks (3 + 1 images) with synchronized
/// batch norm agree bit for bit and equal one process on the 4 images; a failing callback is
/// DECONV_ERR_COLLECTIVE.
#[test]
fn data_parallel_through_callbacks() {
    use crate::distributed::ThreadGroup;
    let cfg = |batch| {
        let mut c = config(batch, 2, 4, 4, 3, 4);
        c.stride = [2, 2];
        c.pad = [1, 1];
        c.batch_normalize = 1;
        c.activation = Activation::Leaky as c_int;
        c
    };
    let (inputs, outputs) = (2 * 16, 3 * 8 * 8);
    let input = |b: usize| -> Vec<f32> {
        (b * inputs..(b + 1) * inputs)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1)
            .collect()
    };
    let delta = |b: usize| -> Vec<f32> {
        (b * outputs..(b + 1) * outputs)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.05)
            .collect()
    };
    // Three steps of images `first .. first + batch` of a global batch of 4.
    let train = |layer: *mut deconv_layer, dp: *mut deconv_data_parallel, first, batch| {
        let x: Vec<f32> = (first..first + batch).flat_map(input).collect();
        let d: Vec<f32> = (first..first + batch).flat_map(delta).collect();
        let mut args = std::mem::MaybeUninit::uninit();
        // SAFETY: valid out pointer.
        let st = unsafe { deconv_update_args_sgd(args.as_mut_ptr(), 0.1, 0.9, 0.001, 4) };
        assert_eq!(st, DECONV_OK);
        // SAFETY: initialized above.
        let args = unsafe { args.assume_init() };
        for _ in 0..3 {
            // SAFETY: live handles and buffers of the right lengths.
            unsafe {
                let st = if dp.is_null() {
                    deconv_layer_forward(
                        layer,
                        x.as_ptr(),
                        x.len(),
                        deconv_mode::DECONV_MODE_TRAIN as c_int,
                    )
                } else {
                    deconv_data_parallel_forward(
                        dp,
                        layer,
                        x.as_ptr(),
                        x.len(),
                        deconv_mode::DECONV_MODE_TRAIN as c_int,
                    )
                };
                assert_eq!(st, DECONV_OK, "{}", last_error());
                assert_eq!(
                    deconv_layer_set(layer, DECONV_BUFFER_DELTA as c_int, d.as_ptr(), d.len()),
                    DECONV_OK
                );
                let st = if dp.is_null() {
                    deconv_layer_backward(layer, x.as_ptr(), x.len(), null_mut(), 0)
                } else {
                    deconv_data_parallel_backward(dp, layer, x.as_ptr(), x.len(), null_mut(), 0)
                };
                assert_eq!(st, DECONV_OK, "{}", last_error());
                assert_eq!(
                    deconv_layer_update(layer, &args),
                    DECONV_OK,
                    "{}",
                    last_error()
                );
            }
        }
        let mut w = vec![0.0f32; 2 * 3 * 16];
        // SAFETY: live handle, buffer of the weights' length.
        let st = unsafe {
            deconv_layer_get(
                layer,
                DECONV_BUFFER_WEIGHTS as c_int,
                w.as_mut_ptr(),
                w.len(),
            )
        };
        assert_eq!(st, DECONV_OK);
        w
    };
    let ranks: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::<f32>::new(2)
            .into_iter()
            .enumerate()
            .map(|(r, rank)| {
                s.spawn(move || {
                    let (first, batch) = if r == 0 { (0, 3) } else { (3, 1) };
                    // Another seed on rank 1: the broadcast makes the weights rank 0's.
                    let mut c = cfg(batch);
                    c.seed = r as u64;
                    let layer = create(&c);
                    let collective = deconv_collective {
                        rank: r as c_int,
                        size: 2,
                        allreduce_sum: Some(thread_allreduce),
                        broadcast: Some(thread_broadcast),
                        context: (&raw const rank).cast_mut().cast(),
                    };
                    let mut dp = null_mut();
                    // SAFETY: live layer, valid collective and out pointer; `rank` outlives dp.
                    let st = unsafe { deconv_data_parallel_create(layer, &collective, 1, &mut dp) };
                    assert_eq!(st, DECONV_OK, "{}", last_error());
                    let mut global = 0;
                    // SAFETY: live handle, valid out pointer.
                    let st = unsafe { deconv_data_parallel_global_batch(dp, &mut global) };
                    assert_eq!(st, DECONV_OK);
                    assert_eq!(global, 4);
                    // SAFETY: live handles.
                    let st = unsafe { deconv_data_parallel_broadcast_parameters(dp, layer, 0) };
                    assert_eq!(st, DECONV_OK, "{}", last_error());
                    let w = train(layer, dp, first, batch);
                    // SAFETY: live handles, freed once.
                    unsafe {
                        assert_eq!(deconv_data_parallel_free(dp), DECONV_OK);
                        free(layer);
                    }
                    w
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ranks[0], ranks[1], "the ranks agree bit for bit");
    let one = create(&cfg(4));
    let want = train(one, null_mut(), 0, 4);
    free(one);
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = ranks[0]
        .iter()
        .zip(&want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-6 * scale, "{diff} of {scale}");

    // A callback that fails: DECONV_ERR_COLLECTIVE naming the operation.
    unsafe extern "C" fn failing(
        _: *mut std::ffi::c_void,
        _: usize,
        _: c_int,
        _: *mut std::ffi::c_void,
    ) -> c_int {
        7
    }
    let layer = create(&cfg(2));
    let collective = deconv_collective {
        rank: 0,
        size: 1,
        allreduce_sum: Some(failing),
        broadcast: Some(thread_broadcast),
        context: null_mut(),
    };
    let mut dp = null_mut();
    // SAFETY: live layer, valid pointers.
    let st = unsafe { deconv_data_parallel_create(layer, &collective, 1, &mut dp) };
    assert_eq!(st, DECONV_ERR_COLLECTIVE);
    assert!(dp.is_null());
    assert!(
        last_error().contains("allreduce_sum") && last_error().contains("returned 7"),
        "{}",
        last_error()
    );
    let bad_rank = deconv_collective {
        rank: 1,
        ..collective
    };
    // SAFETY: as above.
    let st = unsafe { deconv_data_parallel_create(layer, &bad_rank, 1, &mut dp) };
    assert_eq!(st, DECONV_ERR_INVALID_PARAMETER);
    free(layer);
}
