//! Plain direct-loop implementations: the reference every fast path is tested against.
//!
//! These are deliberately simple (seven nested loops, no GEMM, no im2col) and slow; use them
//! to check results, not to compute them.

use crate::config::Geometry;
use crate::element::Element;
use crate::error::{Result, check_len};

/// Calls `f(input_index, weight_index, output_index)` for every multiply-add of the
/// transposed convolution, in a fixed order.
fn for_each_tap(g: &Geometry, mut f: impl FnMut(usize, usize, usize)) {
    let [kh, kw] = g.kernel();
    let [sh, sw] = g.stride();
    let [ph, pw] = g.pad();
    let [dh, dw] = g.dilation();
    let (cg, ng) = (g.group_in(), g.group_out());
    for b in 0..g.batch() {
        for c in 0..g.in_channels() {
            let group = c / cg;
            for local in 0..ng {
                let oc = group * ng + local;
                for ki in 0..kh {
                    for kj in 0..kw {
                        let wi = ((c * ng + local) * kh + ki) * kw + kj;
                        for iy in 0..g.in_h() {
                            let y = (iy * sh + ki * dh) as isize - ph as isize;
                            if y < 0 || y as usize >= g.out_h() {
                                continue;
                            }
                            for ix in 0..g.in_w() {
                                let x = (ix * sw + kj * dw) as isize - pw as isize;
                                if x < 0 || x as usize >= g.out_w() {
                                    continue;
                                }
                                let ii =
                                    ((b * g.in_channels() + c) * g.in_h() + iy) * g.in_w() + ix;
                                let oi = ((b * g.filters() + oc) * g.out_h() + y as usize)
                                    * g.out_w()
                                    + x as usize;
                                f(ii, wi, oi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The transposed convolution `output = deconv(input)` (no bias, no activation), by direct loops.
///
/// # Errors
/// [`Error::BufferLength`](crate::Error::BufferLength) when `input` or `weights` do not match `g`.
pub fn deconv2d<T: Element>(g: &Geometry, input: &[T], weights: &[T]) -> Result<Vec<T>> {
    check_len("input", g.batch() * g.inputs(), input.len())?;
    check_len("weights", g.weight_count(), weights.len())?;
    let mut out = vec![T::zero(); g.batch() * g.outputs()];
    for_each_tap(g, |i, w, o| out[o] += input[i] * weights[w]);
    Ok(out)
}

/// The adjoint of [`deconv2d`]: the ordinary (cross-correlation) convolution that maps an
/// output-shaped `grad` back to the input shape. `<deconv2d(x), y> = <x, conv2d_adjoint(y)>`.
///
/// # Errors
/// [`Error::BufferLength`](crate::Error::BufferLength) when `grad` or `weights` do not match `g`.
pub fn conv2d_adjoint<T: Element>(g: &Geometry, grad: &[T], weights: &[T]) -> Result<Vec<T>> {
    check_len("grad", g.batch() * g.outputs(), grad.len())?;
    check_len("weights", g.weight_count(), weights.len())?;
    let mut x = vec![T::zero(); g.batch() * g.inputs()];
    for_each_tap(g, |i, w, o| x[i] += grad[o] * weights[w]);
    Ok(x)
}

/// The weight gradient of [`deconv2d`]: `sum over taps of input * grad`, laid out like the
/// weights. With Darknet's sign convention (`grad` = descent direction) this is what
/// [`DeconvLayer::backward`](crate::DeconvLayer::backward) adds to `weight_updates` for a linear
/// layer without batch norm.
///
/// # Errors
/// [`Error::BufferLength`](crate::Error::BufferLength) when `input` or `grad` do not match `g`.
pub fn deconv2d_weight_grad<T: Element>(g: &Geometry, input: &[T], grad: &[T]) -> Result<Vec<T>> {
    check_len("input", g.batch() * g.inputs(), input.len())?;
    check_len("grad", g.batch() * g.outputs(), grad.len())?;
    let mut dw = vec![T::zero(); g.weight_count()];
    for_each_tap(g, |i, w, o| dw[w] += input[i] * grad[o]);
    Ok(dw)
}
