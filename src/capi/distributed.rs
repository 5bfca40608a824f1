//! Data-parallel training from C: a `deconv_collective` of two callbacks (which a C caller
//! implements with `MPI_Allreduce(MPI_IN_PLACE, ...)` and `MPI_Bcast`, so that this interface
//! knows no MPI type) and a `deconv_data_parallel` handle per layer, the C side of
//! [`crate::distributed::DataParallel`].

use std::ffi::{c_int, c_void};

use super::args::{check_buffer, check_out};
use super::buffers::Ranges;
use super::config::mode_from_code;
use super::layer::{Vouched, deconv_layer, with_handle, with_handle_ref, with_layer};
use super::precision::{AnyLayer, Real};
use super::status::{Fail, Res, deconv_status, run};
use crate::distributed::{Collective, DataParallel};
use crate::error::{Error, Result};

/// Sums `count` elements of `data` (`float`s or `double`s, as `precision` says) element by
/// element over every rank of the group, in place, so that every rank gets the same bits; returns
/// 0 on success, anything else on failure. With MPI:
/// `MPI_Allreduce(MPI_IN_PLACE, data, count, precision == DECONV_PRECISION_F64 ? MPI_DOUBLE :
/// MPI_FLOAT, MPI_SUM, comm)`.
pub type deconv_allreduce_fn = Option<
    unsafe extern "C" fn(
        data: *mut c_void,
        count: usize,
        precision: c_int,
        context: *mut c_void,
    ) -> c_int,
>;

/// Replaces `count` elements of `data` on every rank by rank `root`'s; returns 0 on success.
/// With MPI: `MPI_Bcast(data, count, MPI_FLOAT or MPI_DOUBLE, root, comm)`.
pub type deconv_broadcast_fn = Option<
    unsafe extern "C" fn(
        data: *mut c_void,
        count: usize,
        precision: c_int,
        root: c_int,
        context: *mut c_void,
    ) -> c_int,
>;

/// A group of ranks that sum and broadcast together, through the caller's callbacks: the
/// transport of data-parallel training. Every rank makes the same calls in the same order.
///
/// The callbacks run on the thread of the `deconv_data_parallel_*` call, or, after
/// `deconv_set_num_threads`, on one of the library's threads while the calling thread waits:
/// with MPI, initialize it with at least `MPI_THREAD_SERIALIZED` then.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct deconv_collective {
    /// This process's rank, `0 .. size - 1` (`MPI_Comm_rank`).
    pub rank: c_int,
    /// The number of ranks (`MPI_Comm_size`).
    pub size: c_int,
    /// The sum-allreduce.
    pub allreduce_sum: deconv_allreduce_fn,
    /// The broadcast.
    pub broadcast: deconv_broadcast_fn,
    /// Passed to both callbacks as it is (an `MPI_Comm *`, say).
    pub context: *mut c_void,
}

/// The callbacks, checked, as a [`Collective`].
#[derive(Debug, Clone, Copy)]
struct Callbacks {
    rank: usize,
    size: usize,
    allreduce_sum: unsafe extern "C" fn(*mut c_void, usize, c_int, *mut c_void) -> c_int,
    broadcast: unsafe extern "C" fn(*mut c_void, usize, c_int, c_int, *mut c_void) -> c_int,
    context: *mut c_void,
}

impl Callbacks {
    fn new(c: &deconv_collective) -> Res<Self> {
        let (Some(allreduce_sum), Some(broadcast)) = (c.allreduce_sum, c.broadcast) else {
            return Err(Fail::null("collective callback"));
        };
        let (Ok(rank), Ok(size)) = (usize::try_from(c.rank), usize::try_from(c.size)) else {
            return Err(Fail::param(format!(
                "rank {} of {} ranks: both must be non-negative",
                c.rank, c.size
            )));
        };
        if rank >= size {
            return Err(Fail::param(format!("rank {rank} of {size} ranks")));
        }
        Ok(Callbacks {
            rank,
            size,
            allreduce_sum,
            broadcast,
            context: c.context,
        })
    }

    fn failed(operation: &'static str, code: c_int) -> Error {
        Error::Collective {
            operation,
            message: format!("the C callback returned {code}"),
        }
    }
}

impl<T: Real> Collective<T> for Callbacks {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn allreduce_sum(&self, data: &mut [T]) -> Result<()> {
        // SAFETY: `data` is valid for `len` elements of `T`, whose precision is passed; the
        // caller of `deconv_data_parallel_create` vouched for the callback and its context.
        let code = unsafe {
            (self.allreduce_sum)(
                data.as_mut_ptr().cast(),
                data.len(),
                T::PRECISION as c_int,
                self.context,
            )
        };
        match code {
            0 => Ok(()),
            code => Err(Self::failed("allreduce_sum", code)),
        }
    }
    fn broadcast(&self, data: &mut [T], root: usize) -> Result<()> {
        let root = c_int::try_from(root).map_err(|_| Error::InvalidParameter {
            param: "root",
            reason: format!("rank {root} does not fit an int"),
        })?;
        // SAFETY: as `allreduce_sum`.
        let code = unsafe {
            (self.broadcast)(
                data.as_mut_ptr().cast(),
                data.len(),
                T::PRECISION as c_int,
                root,
                self.context,
            )
        };
        match code {
            0 => Ok(()),
            code => Err(Self::failed("broadcast", code)),
        }
    }
}

/// An opaque handle: one layer's data-parallel training on one rank (its momentum carry and
/// the group). Create with `deconv_data_parallel_create`, free with
/// `deconv_data_parallel_free`; use it with the layer it was created for.
pub struct deconv_data_parallel {
    inner: AnyDataParallel,
}

enum AnyDataParallel {
    F32(DataParallel<f32, Callbacks>),
    F64(DataParallel<f64, Callbacks>),
}

/// The [`DataParallel`] of element type `T` in a handle.
trait DataParallelOf: Real {
    fn data_parallel_of(any: &mut AnyDataParallel) -> Option<&mut DataParallel<Self, Callbacks>>;
}

impl DataParallelOf for f32 {
    fn data_parallel_of(any: &mut AnyDataParallel) -> Option<&mut DataParallel<f32, Callbacks>> {
        match any {
            AnyDataParallel::F32(dp) => Some(dp),
            AnyDataParallel::F64(_) => None,
        }
    }
}

impl DataParallelOf for f64 {
    fn data_parallel_of(any: &mut AnyDataParallel) -> Option<&mut DataParallel<f64, Callbacks>> {
        match any {
            AnyDataParallel::F64(dp) => Some(dp),
            AnyDataParallel::F32(_) => None,
        }
    }
}

/// The handle behind `dp`, or an error.
///
/// # Safety
/// `dp` is `NULL` or a live handle not used elsewhere during the call.
unsafe fn handle<'a>(dp: *mut deconv_data_parallel) -> Res<&'a mut deconv_data_parallel> {
    // SAFETY: the caller's contract.
    unsafe { dp.as_mut() }.ok_or_else(|| Fail::null("data_parallel"))
}

/// Joins the data-parallel group `*collective` for `layer` (whose batch is this rank's part of
/// the global batch; the parts may differ) and sets `*out` to a new handle. A collective call:
/// every rank calls it. `sync_batch_norm` non-zero: batch norm's statistics are the global
/// batch's on every rank (ranks stay identical, rolling statistics included); 0: each rank
/// normalizes its own part (cheaper, not equal to one process). The collective is copied.
///
/// Then, per step on every rank: `deconv_data_parallel_forward`, fill the delta,
/// `deconv_data_parallel_backward` (the fresh gradients of all ranks summed by one allreduce,
/// the SGD momentum carry kept apart so it is not counted once per rank), and
/// `deconv_layer_update` with `batch = deconv_data_parallel_global_batch`.
///
/// Errors: `DECONV_ERR_NULL_POINTER`, `DECONV_ERR_INVALID_PARAMETER` for a rank outside
/// `0 .. size - 1`, `DECONV_ERR_INVALID_STATE` for a layer created with `training = 0`,
/// `DECONV_ERR_COLLECTIVE` when a callback fails; `*out` is then `NULL`.
///
/// # Safety
/// `layer` must be `NULL` or a live handle; `collective` must be `NULL` or valid for reading,
/// its callbacks valid to call with its `context` until the handle is freed; `out` must be
/// `NULL` or valid for writing a pointer. `NULL`s are errors.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_data_parallel_create(
    layer: *const deconv_layer,
    collective: *const deconv_collective,
    sync_batch_norm: c_int,
    out: *mut *mut deconv_data_parallel,
) -> deconv_status {
    // SAFETY: this function's contract.
    let layer = unsafe { Vouched::new(layer) };
    with_handle_ref("deconv_data_parallel_create", layer, |l| {
        check_out("out", out)?;
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: `collective` is NULL or readable (the caller's contract).
        let collective = unsafe { collective.as_ref() }.ok_or_else(|| Fail::null("collective"))?;
        let callbacks = Callbacks::new(collective)?;
        let sync = sync_batch_norm != 0;
        let inner = match l {
            AnyLayer::F32(l) => {
                AnyDataParallel::F32(DataParallel::new(l, callbacks)?.sync_batch_norm(sync))
            }
            AnyLayer::F64(l) => {
                AnyDataParallel::F64(DataParallel::new(l, callbacks)?.sync_batch_norm(sync))
            }
        };
        let handle = Box::into_raw(Box::new(deconv_data_parallel { inner }));
        // SAFETY: as above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Frees a data-parallel handle. `NULL` is allowed (nothing happens).
///
/// # Safety
/// `dp` must be `NULL` or a live handle from `deconv_data_parallel_create`, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_data_parallel_free(dp: *mut deconv_data_parallel) -> deconv_status {
    run("deconv_data_parallel_free", || {
        if !dp.is_null() {
            // SAFETY: from `Box::into_raw` in `deconv_data_parallel_create`, freed once (the
            // caller's contract).
            drop(unsafe { Box::from_raw(dp) });
        }
        Ok(())
    })
}

/// Sets `*global_batch` to the images of the global batch, summed over the ranks: the `batch`
/// of `deconv_update_args` that makes every rank's step equal one process's on the whole batch.
///
/// # Safety
/// `dp` must be `NULL` or a live handle; `global_batch` must be `NULL` or valid for writing a
/// `size_t`. `NULL`s are errors.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_data_parallel_global_batch(
    dp: *mut deconv_data_parallel,
    global_batch: *mut usize,
) -> deconv_status {
    run("deconv_data_parallel_global_batch", || {
        // SAFETY: this function's contract.
        let dp = unsafe { handle(dp) }?;
        check_out("global_batch", global_batch)?;
        let batch = match &dp.inner {
            AnyDataParallel::F32(dp) => dp.global_batch(),
            AnyDataParallel::F64(dp) => dp.global_batch(),
        };
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { global_batch.write(batch) };
        Ok(())
    })
}

/// Gives every rank rank `root`'s parameters and optimizer state (weights, biases, batch-norm
/// scales and rolling statistics, the gradients, Adam's moments; not Adam's step count). A
/// collective call, usually once after creating the layers.
///
/// # Safety
/// `dp` and `layer` must be `NULL` or live handles, `layer` the one `dp` was created for.
/// `NULL`s are errors.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_data_parallel_broadcast_parameters(
    dp: *mut deconv_data_parallel,
    layer: *mut deconv_layer,
    root: c_int,
) -> deconv_status {
    // SAFETY: this function's contract.
    let layer = unsafe { Vouched::new(layer) };
    with_handle("deconv_data_parallel_broadcast_parameters", layer, |l| {
        // SAFETY: this function's contract.
        let dp = unsafe { handle(dp) }?;
        let root = usize::try_from(root).map_err(|_| Fail::param(format!("root rank {root}")))?;
        match (&mut dp.inner, l) {
            (AnyDataParallel::F32(dp), AnyLayer::F32(l)) => {
                l.weights_may_have_changed();
                dp.broadcast_parameters(l, root)?;
            }
            (AnyDataParallel::F64(dp), AnyLayer::F64(l)) => {
                l.weights_may_have_changed();
                dp.broadcast_parameters(l, root)?;
            }
            _ => return Err(mismatch()),
        }
        Ok(())
    })
}

fn mismatch() -> Fail {
    Fail::param("the layer's precision is not the data-parallel handle's".into())
}

/// `deconv_layer_forward` as this rank's part of the global batch: in `DECONV_MODE_TRAIN`
/// with synchronized batch norm, a collective call (the batch statistics are the global
/// batch's).
///
/// # Safety
/// As `deconv_layer_forward`; `dp` must be `NULL` (an error) or a live handle created for
/// `layer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_data_parallel_forward(
    dp: *mut deconv_data_parallel,
    layer: *mut deconv_layer,
    input: *const f32,
    input_len: usize,
    mode: c_int,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe {
        forward(
            "deconv_data_parallel_forward",
            dp,
            layer,
            input,
            input_len,
            mode,
        )
    }
}

/// `deconv_data_parallel_forward` of a `double` layer.
///
/// # Safety
/// As `deconv_data_parallel_forward`, with doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_data_parallel_forward_f64(
    dp: *mut deconv_data_parallel,
    layer: *mut deconv_layer,
    input: *const f64,
    input_len: usize,
    mode: c_int,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe {
        forward(
            "deconv_data_parallel_forward_f64",
            dp,
            layer,
            input,
            input_len,
            mode,
        )
    }
}

/// The body of `deconv_data_parallel_forward` and its `_f64` twin.
///
/// # Safety
/// As `deconv_data_parallel_forward`.
unsafe fn forward<T: DataParallelOf>(
    func: &str,
    dp: *mut deconv_data_parallel,
    layer: *mut deconv_layer,
    input: *const T,
    input_len: usize,
    mode: c_int,
) -> deconv_status {
    // SAFETY: the caller's contract.
    let layer = unsafe { Vouched::new(layer) };
    with_layer::<T>(func, layer, |l| {
        // SAFETY: the caller's contract.
        let dp = T::data_parallel_of(&mut unsafe { handle(dp) }?.inner).ok_or_else(mismatch)?;
        let mode = mode_from_code(mode)?;
        let g = l.geometry();
        let expected = g.batch() * g.inputs();
        check_buffer("input", input, input_len, expected, false, &Ranges::of(l))?;
        // SAFETY: non-null, aligned, `input_len` readable elements (caller), disjoint from the
        // layer's buffers (checked).
        let input = unsafe { std::slice::from_raw_parts(input, input_len) };
        l.weights_may_have_changed();
        dp.forward(l, input, mode)?;
        Ok(())
    })
}

/// `deconv_layer_backward` as this rank's part of the global batch, then the fresh gradients
/// of every rank summed (one allreduce of the `DECONV_BUFFER_GRADIENTS` buffer) on top of the
/// momentum carry: a collective call. Afterwards every rank holds the same gradients; call
/// `deconv_layer_update` with `batch = deconv_data_parallel_global_batch`.
///
/// Errors: as `deconv_layer_backward`; `DECONV_ERR_COLLECTIVE` when a callback fails (the
/// gradients are then as before the call, the delta consumed).
///
/// # Safety
/// As `deconv_layer_backward`; `dp` must be `NULL` (an error) or a live handle created for
/// `layer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_data_parallel_backward(
    dp: *mut deconv_data_parallel,
    layer: *mut deconv_layer,
    input: *const f32,
    input_len: usize,
    input_delta: *mut f32,
    input_delta_len: usize,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe {
        backward(
            "deconv_data_parallel_backward",
            dp,
            layer,
            (input, input_len),
            (input_delta, input_delta_len),
        )
    }
}

/// `deconv_data_parallel_backward` of a `double` layer.
///
/// # Safety
/// As `deconv_data_parallel_backward`, with doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_data_parallel_backward_f64(
    dp: *mut deconv_data_parallel,
    layer: *mut deconv_layer,
    input: *const f64,
    input_len: usize,
    input_delta: *mut f64,
    input_delta_len: usize,
) -> deconv_status {
    // SAFETY: this function's contract.
    unsafe {
        backward(
            "deconv_data_parallel_backward_f64",
            dp,
            layer,
            (input, input_len),
            (input_delta, input_delta_len),
        )
    }
}

/// The body of `deconv_data_parallel_backward` and its `_f64` twin.
///
/// # Safety
/// As `deconv_data_parallel_backward`.
unsafe fn backward<T: DataParallelOf>(
    func: &str,
    dp: *mut deconv_data_parallel,
    layer: *mut deconv_layer,
    (input, input_len): (*const T, usize),
    (input_delta, input_delta_len): (*mut T, usize),
) -> deconv_status {
    // SAFETY: the caller's contract.
    let layer = unsafe { Vouched::new(layer) };
    with_layer::<T>(func, layer, |l| {
        // SAFETY: the caller's contract.
        let dp = T::data_parallel_of(&mut unsafe { handle(dp) }?.inner).ok_or_else(mismatch)?;
        let g = *l.geometry();
        let mut others = Ranges::of(l);
        let expected = g.batch() * g.inputs();
        check_buffer("input", input, input_len, expected, false, &others)?;
        others.push("input", input, input_len);
        let dx = if input_delta.is_null() {
            None
        } else {
            check_buffer(
                "input_delta",
                input_delta,
                input_delta_len,
                expected,
                false,
                &others,
            )?;
            // SAFETY: non-null, aligned, writable (caller), disjoint from the layer and
            // `input` (checked).
            Some(unsafe { std::slice::from_raw_parts_mut(input_delta, input_delta_len) })
        };
        // SAFETY: non-null, aligned, readable (caller), disjoint from the layer (checked).
        let input = unsafe { std::slice::from_raw_parts(input, input_len) };
        l.weights_may_have_changed();
        dp.backward(l, input, dx)?;
        Ok(())
    })
}
