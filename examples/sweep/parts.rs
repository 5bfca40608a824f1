//! `--parts`: the column algorithm's pieces timed alone, with the layer's sizes and the same
//! threads, to say where a shape's time goes: the forward's GEMM, col2im and epilogue (bias and
//! activation), the backward's im2col of the delta and its two GEMMs (weight and input
//! gradients). Each piece runs `batch * groups` times, the images spread over the threads when
//! there are at least as many as threads, else one after the other with each split over the
//! threads (as the layer does). Batch norm's share is the layer's `forward_train` minus
//! `forward_inference`.

use crate::measure::{Budget, random};
use crate::sweep::{Dtype, SweepShape};
use deconv::backend::{MatMut, MatRef, par_gemm};
use deconv::im2col::{col2im, im2col};
use deconv::{AnyBackend, Element, Gemm};
use rayon::prelude::*;
use serde_json::{Value, json};

/// Runs `work(item, scratch)` for `count` items: spread over the threads (each with its own
/// scratch of `scratch_len`) when there are enough of them, else one after the other with
/// `parallel` set so that the work splits itself.
fn over_items<T: Element>(
    count: usize,
    scratch_len: usize,
    budget: Budget,
    work: impl Fn(usize, &mut [T], bool) + Sync,
) -> f64 {
    let threads = rayon::current_num_threads();
    if count >= threads && threads > 1 {
        let per_task = count.div_ceil(threads);
        let mut scratch = vec![T::zero(); threads * scratch_len];
        budget.time(|| {
            scratch
                .par_chunks_mut(scratch_len.max(1))
                .enumerate()
                .for_each(|(t, s)| {
                    for i in t * per_task..((t + 1) * per_task).min(count) {
                        work(i, s, false);
                    }
                });
        }) * 1e3
    } else {
        let mut scratch = vec![T::zero(); scratch_len];
        budget.time(|| {
            for i in 0..count {
                work(i, &mut scratch, true);
            }
        }) * 1e3
    }
}

fn gemm<T: Element>(
    backend: &AnyBackend,
    parallel: bool,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    beta: T,
    c: MatMut<'_, T>,
) where
    AnyBackend: Gemm<T>,
{
    if parallel {
        par_gemm(backend, T::one(), a, b, beta, c).expect("gemm");
    } else {
        backend.gemm(T::one(), a, b, beta, c).expect("gemm");
    }
}

fn parts_typed<T: Element>(shape: &SweepShape, backend: AnyBackend, budget: Budget) -> Value
where
    AnyBackend: Gemm<T>,
{
    let g = shape.config().geometry().expect("sweep shapes are valid");
    let (cg, ng, hw, rows, ohw) = (
        g.group_in(),
        g.group_out(),
        g.in_area(),
        g.col_rows(),
        g.out_area(),
    );
    let count = g.batch() * g.groups();
    let window = g.window();
    let weights = random::<T>(cg * rows, 1);
    let x = random::<T>(count * cg * hw, 2);
    let cols = random::<T>(rows * hw, 3);
    let planes = random::<T>(count * ng * ohw, 4);
    let b = &backend;
    let input = |i: usize| MatRef::new(&x[i * cg * hw..][..cg * hw], cg, hw, hw).expect("x");

    // Forward: cols (rows x hw) = W^T (rows x cg) * x (cg x hw).
    let gemm_fwd = over_items::<T>(count, rows * hw, budget, |i, s, par| {
        let w = MatRef::new(&weights, cg, rows, rows).expect("w").t();
        let c = MatMut::new(s, rows, hw, hw).expect("cols");
        gemm(b, par, w, input(i), T::zero(), c);
    });
    let col2im_ms = over_items::<T>(count, ng * ohw, budget, |_, s, _| {
        col2im(&cols, &window, s).expect("col2im");
    });
    let activation = shape.activation;
    // One pass over each plane: bias and activation (the layer does it in place; here from
    // the planes into the scratch, the same bytes read and written).
    let epilogue = over_items::<T>(count, ng * ohw, budget, |i, s, _| {
        let src = &planes[i * ng * ohw..][..ng * ohw];
        for (d, &v) in s.iter_mut().zip(src) {
            *d = activation.activate(v + T::one());
        }
    });
    // Backward: cols = im2col(delta); dW (cg x rows) += x (cg x hw) * cols^T (hw x rows);
    // dx (cg x hw) = W (cg x rows) * cols (rows x hw).
    let im2col_ms = over_items::<T>(count, rows * hw, budget, |i, s, _| {
        im2col(&planes[i * ng * ohw..][..ng * ohw], &window, s).expect("im2col");
    });
    let gemm_wgrad = over_items::<T>(count, cg * rows, budget, |i, s, par| {
        let c_t = MatRef::new(&cols, rows, hw, hw).expect("cols").t();
        let dw = MatMut::new(s, cg, rows, rows).expect("dw");
        gemm(b, par, input(i), c_t, T::one(), dw);
    });
    let gemm_dgrad = over_items::<T>(count, cg * hw, budget, |_, s, par| {
        let w = MatRef::new(&weights, cg, rows, rows).expect("w");
        let c = MatRef::new(&cols, rows, hw, hw).expect("cols");
        let dx = MatMut::new(s, cg, hw, hw).expect("dx");
        gemm(b, par, w, c, T::zero(), dx);
    });
    json!({
        "gemm_fwd": gemm_fwd,
        "col2im": col2im_ms,
        "epilogue": epilogue,
        "im2col": im2col_ms,
        "gemm_wgrad": gemm_wgrad,
        "gemm_dgrad": gemm_dgrad,
    })
}

/// Milliseconds of each piece of `shape`'s column algorithm.
pub fn parts(shape: &SweepShape, backend: AnyBackend, budget: Budget) -> Value {
    match shape.dtype {
        Dtype::F32 => parts_typed::<f32>(shape, backend, budget),
        Dtype::F64 => parts_typed::<f64>(shape, backend, budget),
    }
}
