//! Data-parallel training over several processes (MPI ranks), exact: R ranks that each run a
//! part of a batch take the same step as one process on the whole batch.
//!
//! The single-node layer knows nothing of ranks. This module adds, around it:
//! - [`Collective`], the seam to a transport: a sum-allreduce and a broadcast of `f32`/`f64`
//!   slices, that every rank calls in the same order. Implementations: [`ThreadGroup`] (ranks
//!   as threads of one process, for tests and for trying things without MPI), [`Mpi`] (feature
//!   `mpi`, rsmpi over an MPI communicator; see [below](#over-mpi)), and from C a pair of
//!   callbacks.
//! - [`DataParallel`], which runs a layer's forward and backward as one rank of the group:
//!   - **gradients**: the layer's gradients are one contiguous buffer
//!     ([`DeconvLayer::gradients`]); after each backward the fresh gradients of all ranks are
//!     summed by one allreduce. Darknet's SGD keeps its momentum carry in that same buffer
//!     (`weight_updates *= momentum` after each step), and summing it as well would count it
//!     once per rank; so the carry is set aside before the backward, the fresh gradients are
//!     summed, and the carry is added back.
//!   - **synchronized batch norm** (the default): the per-channel statistics of a training
//!     forward (sums of the plane means, then of the squared deviations from the mean of the
//!     whole batch: the same numerically safe combination as on one process) and of the
//!     backward (`sum(delta)`, `sum(delta * x_hat)`) are summed over the ranks, so every rank
//!     normalizes with the whole batch's statistics, and the rolling statistics (Darknet's
//!     unbiased variance over the global count) are the same on every rank.
//!     [`DataParallel::sync_batch_norm(false)`](DataParallel::sync_batch_norm) normalizes each
//!     rank's part with its own statistics instead (cheaper, not equal to one process; the
//!     ranks' rolling statistics then differ).
//!
//! Then every rank calls [`DeconvLayer::update`] with the **global** batch
//! ([`DataParallel::global_batch`]): all ranks hold the same gradients and parameters, so
//! they take the same step (SGD with momentum and decay, or Adam) and stay bitwise identical,
//! as long as the collective gives every rank the same bits (both implementations here do).
//! The results equal one process on the whole batch up to rounding: sums are taken in
//! another order.
//!
//! # Example: two ranks as threads
//! ```
//! use deconv::distributed::{Collective, DataParallel, ThreadGroup};
//! use deconv::{Activation, DeconvConfig, DeconvLayer, Mode, UpdateArgs};
//!
//! // A global batch of 5 images, 3 on rank 0 and 2 on rank 1.
//! let config = |batch| {
//!     DeconvConfig::new(batch, 3, 4, 4, 2, 4)
//!         .stride(2)
//!         .pad(1)
//!         .batch_normalize(true)
//!         .activation(Activation::Leaky)
//!         .seed(1)
//! };
//! let results = std::thread::scope(|s| {
//!     let handles: Vec<_> = ThreadGroup::<f32>::new(2)
//!         .into_iter()
//!         .map(|rank| {
//!             s.spawn(move || -> deconv::Result<Vec<f32>> {
//!                 let batch = if rank.rank() == 0 { 3 } else { 2 };
//!                 let mut layer: DeconvLayer<f32> = DeconvLayer::new(&config(batch))?;
//!                 let mut dp = DataParallel::new(&layer, rank)?;
//!                 dp.broadcast_parameters(&mut layer, 0)?;
//!                 let input = vec![0.5f32; batch * 3 * 4 * 4];
//!                 for _ in 0..3 {
//!                     let output = dp.forward(&mut layer, &input, Mode::Train)?.to_vec();
//!                     for (d, y) in layer.delta_mut().iter_mut().zip(&output) {
//!                         *d = 0.25 - y; // -dLoss/dOutput of 0.5 * |y - 0.25|^2
//!                     }
//!                     dp.backward(&mut layer, &input, None)?;
//!                     layer.update(&UpdateArgs::sgd(0.1, 0.9, 0.0005, dp.global_batch()))?;
//!                 }
//!                 Ok(layer.weights().to_vec())
//!             })
//!         })
//!         .collect();
//!     handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
//! });
//! let weights: Vec<Vec<f32>> = results.into_iter().collect::<deconv::Result<_>>()?;
//! assert_eq!(weights[0], weights[1]); // the ranks agree bit for bit
//! # Ok::<(), deconv::Error>(())
//! ```
//!
//! # Over MPI
//! With the `mpi` feature (Open MPI or MPICH and libclang installed; Debian/Ubuntu:
//! `apt-get install libopenmpi-dev openmpi-bin libclang-dev clang`), [`Mpi`] is the
//! [`Collective`] of an rsmpi communicator, for ranks that are processes started by `mpirun`,
//! on one machine or many. `examples/train_mpi.rs` is a complete job
//! (`mpirun -np 2 target/release/examples/train_mpi`), and its checks are those a user's job
//! can make: every rank's parameters equal rank 0's bit for bit, and the result equals one
//! process on the global batch up to rounding.
//! - Before each collective the ranks check, in one 8-value allreduce, that they all make the
//!   same call (operation, element type, length, root): ranks that disagree get
//!   [`Error::Collective`] on every rank instead of the undefined behaviour of MPI collectives
//!   with mismatched counts. Failures inside MPI follow the communicator's error handler (by
//!   default MPI aborts the job).
//! - The sum goes through a scratch copy of the data kept by [`Mpi`] (one more copy of the
//!   gradients in memory): rsmpi 0.8 has no safe `MPI_IN_PLACE`, and the copy's time is small
//!   next to a training step (measured by `examples/perf_mpi.rs`; figures in the README's
//!   "Training over MPI" section).
//! - MPI is called only from the thread that calls [`DataParallel`]'s methods, never from
//!   rayon's threads: initialize MPI with `Threading::Funneled` (from the main thread) or
//!   `Serialized`.
//!
//! # Ranks and threads share the cores
//! Each rank is a process with its own rayon pool, so a machine runs ranks x threads per rank
//! threads: keep that at most the cores, or the threads take turns. rayon starts one thread
//! per core the process may run on (or `RAYON_NUM_THREADS`). `mpirun` binds each rank to one
//! core by default (Open MPI, 2 ranks or fewer; to a socket beyond), where rayon then starts one
//! thread: right for one rank per core. For fewer ranks with several threads each, start them
//! with `--bind-to none` (or `--map-by slot:PE=<threads>`) and set `RAYON_NUM_THREADS`; threads
//! forced into a rank bound to one core share that core (two threads run at half speed each;
//! the README gives the measurement).
//!
// Without the `mpi` feature there is no `Mpi` to link to: the links go to "Over MPI" above.
#![cfg_attr(not(feature = "mpi"), doc = "[`Mpi`]: #over-mpi")]

#[cfg(feature = "mpi")]
mod mpi;
mod threads;

#[cfg(feature = "mpi")]
#[cfg_attr(docsrs, doc(cfg(feature = "mpi")))]
pub use self::mpi::Mpi;
/// The rsmpi crate (`mpi` 0.8) that [`Mpi`] is built on, for `initialize` and communicators
/// of the same version.
#[cfg(feature = "mpi")]
#[cfg_attr(docsrs, doc(cfg(feature = "mpi")))]
pub use ::mpi as rsmpi;
pub use threads::{ThreadGroup, ThreadRank};

use crate::alloc;
use crate::backend::Gemm;
use crate::batchnorm::Synced;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::layer::{DeconvLayer, Mode, Params};

/// A group of processes (ranks) that sum and broadcast slices together: the transport of
/// [`DataParallel`].
///
/// Every rank calls the same methods in the same order with slices of the same length (as with
/// MPI collectives). Implementations must give every rank the **same bits** from
/// [`allreduce_sum`](Self::allreduce_sum) (MPI's reductions do for a given communicator and
/// count; [`ThreadGroup`] sums in rank order on every rank), so that the ranks stay identical.
pub trait Collective<T: Element> {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// How many ranks the group has.
    fn size(&self) -> usize;
    /// Replaces `data` on every rank by the element-wise sum of every rank's `data`.
    ///
    /// # Errors
    /// The transport's failure, as [`Error::Collective`].
    fn allreduce_sum(&self, data: &mut [T]) -> Result<()>;
    /// Replaces `data` on every rank by rank `root`'s `data`.
    ///
    /// # Errors
    /// The transport's failure, as [`Error::Collective`].
    fn broadcast(&self, data: &mut [T], root: usize) -> Result<()>;
}

impl<T: Element, C: Collective<T> + ?Sized> Collective<T> for &C {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn size(&self) -> usize {
        (**self).size()
    }
    fn allreduce_sum(&self, data: &mut [T]) -> Result<()> {
        (**self).allreduce_sum(data)
    }
    fn broadcast(&self, data: &mut [T], root: usize) -> Result<()> {
        (**self).broadcast(data, root)
    }
}

/// One layer's data-parallel training on one rank of a [`Collective`] (see the [module
/// docs](self)): its forward and backward as parts of one global batch.
#[derive(Debug)]
pub struct DataParallel<T, C> {
    collective: C,
    global_batch: usize,
    sync_batch_norm: bool,
    /// The gradients' momentum carry, set aside during a backward.
    carry: Vec<T>,
}

impl<T: Element, C: Collective<T>> DataParallel<T, C> {
    /// Joins the group for `layer`, whose batch is this rank's part of the global batch (the
    /// parts may differ). A collective call: every rank calls it, each with its own layer.
    /// Batch norm is synchronized ([`sync_batch_norm`](Self::sync_batch_norm)).
    ///
    /// # Errors
    /// [`Error::InvalidState`] for a layer built with
    /// [`training(false)`](crate::DeconvConfig::training); [`Error::Allocation`]; the
    /// collective's errors.
    pub fn new<B: Gemm<T>>(layer: &DeconvLayer<T, B>, collective: C) -> Result<Self> {
        if !layer.trains() {
            return Err(Error::InvalidState(
                "data-parallel training needs a layer built with training(true)".into(),
            ));
        }
        let local = layer.geometry().batch();
        let mut batch = [T::of(local as f64)];
        collective.allreduce_sum(&mut batch)?;
        let global = batch[0].to_f64_lossless();
        // Exact in f32 up to 2^24 images.
        if !(global >= local as f64 && global.fract() == 0.0 && global < (1u64 << 24) as f64) {
            return Err(Error::Collective {
                operation: "allreduce_sum",
                message: format!(
                    "the ranks' batches summed to {global}, not a whole number of at least \
                     this rank's {local} images"
                ),
            });
        }
        Ok(DataParallel {
            collective,
            global_batch: global as usize,
            sync_batch_norm: true,
            carry: alloc::zeros("gradient carry", layer.gradients().len())?,
        })
    }

    /// Synchronized batch norm (the default, `true`) or each rank's part normalized with its
    /// own statistics (`false`). Every rank must choose the same.
    #[must_use]
    pub fn sync_batch_norm(mut self, on: bool) -> Self {
        self.sync_batch_norm = on;
        self
    }

    /// Images in the global batch, summed over the ranks: the `batch` of
    /// [`UpdateArgs`](crate::UpdateArgs) that makes the step equal one process's.
    pub fn global_batch(&self) -> usize {
        self.global_batch
    }

    /// The collective.
    pub fn collective(&self) -> &C {
        &self.collective
    }

    /// Gives every rank `root`'s parameters and optimizer state: weights, biases, batch-norm
    /// scales and rolling statistics, the gradients (momentum carry) and Adam's moments (not
    /// Adam's step count: set it on every rank). A collective call.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a `root` outside the group; the collective's errors.
    pub fn broadcast_parameters<B: Gemm<T>>(
        &self,
        layer: &mut DeconvLayer<T, B>,
        root: usize,
    ) -> Result<()> {
        if root >= self.collective.size() {
            return Err(Error::InvalidParameter {
                param: "root",
                reason: format!("rank {root} of a group of {}", self.collective.size()),
            });
        }
        let c = &self.collective;
        c.broadcast(layer.weights_mut(), root)?;
        c.broadcast(layer.biases_mut(), root)?;
        c.broadcast(layer.scales_mut().unwrap_or_default(), root)?;
        c.broadcast(layer.rolling_mean_mut().unwrap_or_default(), root)?;
        c.broadcast(layer.rolling_variance_mut().unwrap_or_default(), root)?;
        c.broadcast(layer.gradients_mut(), root)?;
        for params in [Params::Weights, Params::Biases, Params::Scales] {
            if let Some((m, v)) = layer.adam_moments_mut(params) {
                c.broadcast(m, root)?;
                c.broadcast(v, root)?;
            }
        }
        Ok(())
    }

    /// [`DeconvLayer::forward`] as this rank's part of the global batch: in [`Mode::Train`]
    /// with synchronized batch norm, the batch statistics are the global batch's. A collective
    /// call in that case.
    ///
    /// # Errors
    /// As [`DeconvLayer::forward`], and the collective's errors.
    pub fn forward<'l, B: Gemm<T>>(
        &self,
        layer: &'l mut DeconvLayer<T, B>,
        input: &[T],
        mode: Mode,
    ) -> Result<&'l [T]> {
        let sum = |v: &mut [T]| self.collective.allreduce_sum(v);
        layer.forward_own(input, mode, self.synced(layer, &sum))
    }

    /// [`forward`](Self::forward) on a caller's workspace
    /// ([`DeconvLayer::forward_with_workspace`]).
    ///
    /// # Errors
    /// As [`forward`](Self::forward), and [`Error::BufferLength`] for a short workspace.
    pub fn forward_with_workspace<B: Gemm<T>>(
        &self,
        layer: &mut DeconvLayer<T, B>,
        input: &[T],
        mode: Mode,
        workspace: &mut [T],
    ) -> Result<()> {
        let sum = |v: &mut [T]| self.collective.allreduce_sum(v);
        layer.forward_synced(input, mode, workspace, self.synced(layer, &sum))
    }

    /// [`DeconvLayer::backward`] as this rank's part of the global batch, then the fresh
    /// gradients of every rank summed into every rank's [`gradients`](DeconvLayer::gradients),
    /// on top of the momentum carry (see the [module docs](self)). A collective call.
    ///
    /// # Errors
    /// As [`DeconvLayer::backward`], and the collective's errors; [`Error::InvalidState`] when
    /// the layer's gradients changed size since [`new`](Self::new) (after
    /// [`denormalize`](DeconvLayer::denormalize)).
    pub fn backward<B: Gemm<T>>(
        &mut self,
        layer: &mut DeconvLayer<T, B>,
        input: &[T],
        input_delta: Option<&mut [T]>,
    ) -> Result<()> {
        self.backward_with(layer, |layer, synced| {
            layer.backward_own(input, input_delta, synced)
        })
    }

    /// [`backward`](Self::backward) on a caller's workspace
    /// ([`DeconvLayer::backward_with_workspace`]).
    ///
    /// # Errors
    /// As [`backward`](Self::backward), and [`Error::BufferLength`] for a short workspace.
    pub fn backward_with_workspace<B: Gemm<T>>(
        &mut self,
        layer: &mut DeconvLayer<T, B>,
        input: &[T],
        input_delta: Option<&mut [T]>,
        workspace: &mut [T],
    ) -> Result<()> {
        self.backward_with(layer, |layer, synced| {
            layer.backward_synced(input, input_delta, workspace, synced)
        })
    }

    /// The carry set aside, `pass` (the layer's backward) on zeroed gradients, the fresh
    /// gradients summed over the ranks, the carry added back.
    fn backward_with<B: Gemm<T>>(
        &mut self,
        layer: &mut DeconvLayer<T, B>,
        pass: impl FnOnce(&mut DeconvLayer<T, B>, Option<Synced<'_, T>>) -> Result<()>,
    ) -> Result<()> {
        if layer.gradients().len() != self.carry.len() {
            return Err(Error::InvalidState(format!(
                "the layer's gradients have {} elements, {} when DataParallel::new saw it",
                layer.gradients().len(),
                self.carry.len()
            )));
        }
        self.carry.copy_from_slice(layer.gradients());
        layer.gradients_mut().fill(T::zero());
        let collective = &self.collective;
        let sum = |v: &mut [T]| collective.allreduce_sum(v);
        let synced = self.synced(layer, &sum);
        let result = pass(layer, synced).and_then(|()| sum(layer.gradients_mut()));
        match result {
            Ok(()) => {
                for (g, &c) in layer.gradients_mut().iter_mut().zip(&self.carry) {
                    *g += c;
                }
                Ok(())
            }
            Err(e) => {
                // The gradients as they were; the delta has been consumed.
                layer.gradients_mut().copy_from_slice(&self.carry);
                Err(e)
            }
        }
    }

    /// The batch-norm synchronization of a pass, `None` when batch norm is off or per rank.
    fn synced<'s, B: Gemm<T>>(
        &self,
        layer: &DeconvLayer<T, B>,
        sum: &'s dyn Fn(&mut [T]) -> Result<()>,
    ) -> Option<Synced<'s, T>> {
        (self.sync_batch_norm && layer.batch_normalize()).then_some(Synced {
            sum,
            batch: self.global_batch,
        })
    }
}

#[cfg(test)]
mod tests;
