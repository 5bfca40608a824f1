//! The OpenBLAS backend runs its GEMMs with OpenBLAS single-threaded, and gives the process its
//! own thread count back afterwards: a host code that calls BLAS itself keeps its threads. One
//! test in its own process, so that no other test's GEMM runs at the same time.
#![cfg(feature = "openblas")]

use deconv::backend::OpenBlas;
use deconv::{Activation, DeconvConfig, DeconvLayer, Mode, UpdateArgs};
use std::os::raw::c_int;

unsafe extern "C" {
    fn openblas_set_num_threads(num_threads: c_int);
    fn openblas_get_num_threads() -> c_int;
}

fn openblas_threads() -> c_int {
    // SAFETY: reads OpenBLAS's thread count.
    unsafe { openblas_get_num_threads() }
}

fn train_step(batch: usize, threads: c_int) {
    let config = DeconvConfig::new(batch, 3, 6, 6, 4, 4)
        .stride(2)
        .pad(1)
        .activation(Activation::Leaky)
        .batch_normalize(true)
        .seed(3);
    let mut layer: DeconvLayer<f64, OpenBlas> = DeconvLayer::new(&config).unwrap();
    let input = vec![0.25; batch * 3 * 6 * 6];
    layer.forward(&input, Mode::Train).unwrap();
    assert_eq!(openblas_threads(), threads, "after forward, batch {batch}");
    layer.delta_mut().fill(0.5);
    let mut input_delta = vec![0.0; input.len()];
    layer.backward(&input, Some(&mut input_delta)).unwrap();
    assert_eq!(openblas_threads(), threads, "after backward, batch {batch}");
    layer
        .update(&UpdateArgs::sgd(0.01, 0.9, 0.0005, batch))
        .unwrap();
    layer.forward(&input, Mode::Inference).unwrap();
    assert_eq!(
        openblas_threads(),
        threads,
        "after inference, batch {batch}"
    );
}

#[test]
fn the_callers_openblas_thread_count_is_restored() {
    for threads in [2, 3, 1, 2] {
        // SAFETY: sets OpenBLAS's thread count; no GEMM runs now (this is the only test here).
        unsafe { openblas_set_num_threads(threads) };
        assert_eq!(openblas_threads(), threads);
        // Batch 1 splits each GEMM over rayon's threads; batch 4 runs images in parallel.
        train_step(1, threads);
        train_step(4, threads);
    }
}
