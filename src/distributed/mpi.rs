//! A [`Collective`] over MPI (feature `mpi`): rsmpi's allreduce and broadcast on a
//! communicator, with a check that every rank makes the same call.

use super::Collective;
use crate::element::Element;
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};
use std::cell::RefCell;
use std::fmt;

/// The ranks of an MPI communicator as a [`Collective`] (feature `mpi`, crate
/// [`rsmpi`](super::rsmpi)), for [`DataParallel`](super::DataParallel) over processes.
///
/// Every call is checked before it reaches MPI: all ranks first agree, in one small allreduce,
/// on what they are calling (the operation, the element type, the length and the root), so
/// that ranks that disagree get [`Error::Collective`] on every rank instead of the undefined
/// behaviour of an MPI collective with mismatched counts. A failure inside MPI itself follows
/// the communicator's error handler: by default (`MPI_ERRORS_ARE_FATAL`) MPI aborts the job.
///
/// The sum goes through a scratch copy of the data (rsmpi 0.8 has no safe `MPI_IN_PLACE`),
/// kept between calls: memory for one more copy of the largest buffer summed (the layer's
/// gradients), and a copy's time, which is small next to a training step (measured by
/// `examples/perf_mpi.rs`; figures in the README's "Training over MPI" section).
///
/// Every rank gets the same bits from [`allreduce_sum`](Collective::allreduce_sum) as long as
/// the MPI library reduces the same way on every rank for a given communicator and count, as
/// the MPI standard recommends; `tests/mpi.rs` (2 and 3 ranks) and `examples/train_mpi.rs`
/// check it, for Open MPI 4.1 in CI.
///
/// MPI calls are made on the thread that calls [`DataParallel`](super::DataParallel)'s
/// methods, never on rayon's worker threads; initialize MPI with at least
/// [`Threading::Funneled`](mpi::environment::Threading::Funneled) when that is the main
/// thread (rayon's threads exist in the process), `Serialized` otherwise.
///
/// # Example
/// Run with `mpirun -np 2 ...` (a single process without `mpirun` is a group of one):
/// ```no_run
/// use deconv::distributed::rsmpi::environment::Threading;
/// use deconv::distributed::rsmpi::traits::Communicator;
/// use deconv::distributed::{DataParallel, Mpi};
/// use deconv::{DeconvConfig, DeconvLayer, Mode, UpdateArgs};
///
/// let (universe, _) = deconv::distributed::rsmpi::initialize_with_threading(Threading::Funneled)
///     .expect("MPI initialized once");
/// // A communicator of its own keeps the layer's traffic apart from the application's.
/// let comm = Mpi::new(universe.world().duplicate());
/// let local_batch = 4; // this rank's part of the global batch
/// let mut layer: DeconvLayer<f32> =
///     DeconvLayer::new(&DeconvConfig::new(local_batch, 8, 8, 8, 4, 4).stride(2).pad(1))?;
/// let mut dp = DataParallel::new(&layer, &comm)?;
/// dp.broadcast_parameters(&mut layer, 0)?;
/// let input = vec![0.1f32; layer.geometry().batch() * layer.geometry().inputs()];
/// let output = dp.forward(&mut layer, &input, Mode::Train)?.to_vec();
/// for (d, y) in layer.delta_mut().iter_mut().zip(&output) {
///     *d = 0.5 - y;
/// }
/// dp.backward(&mut layer, &input, None)?;
/// layer.update(&UpdateArgs::sgd(0.01, 0.9, 0.0005, dp.global_batch()))?;
/// # Ok::<(), deconv::Error>(())
/// ```
pub struct Mpi {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    scratch_f32: RefCell<Vec<f32>>,
    scratch_f64: RefCell<Vec<f64>>,
}

impl fmt::Debug for Mpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// What a rank is calling, as the ranks compare it: operation, bytes per element, length,
/// root.
type Call = [i64; 4];

const ALLREDUCE_SUM: i64 = 1;
const BROADCAST: i64 = 2;
/// An allreduce whose rank could not reserve its scratch copy.
const NO_SCRATCH: i64 = 3;

/// The element types summed here, each with its scratch buffer.
trait Scratch: Element + Equivalence {
    fn scratch(mpi: &Mpi) -> &RefCell<Vec<Self>>;
}

impl Scratch for f32 {
    fn scratch(mpi: &Mpi) -> &RefCell<Vec<f32>> {
        &mpi.scratch_f32
    }
}

impl Scratch for f64 {
    fn scratch(mpi: &Mpi) -> &RefCell<Vec<f64>> {
        &mpi.scratch_f64
    }
}

impl Mpi {
    /// The ranks of `comm` (for instance `universe.world()`, or a duplicate of it to keep the
    /// layer's traffic apart from the application's).
    pub fn new(comm: SimpleCommunicator) -> Self {
        let (rank, size) = (comm.rank(), comm.size());
        Mpi {
            // MPI ranks and sizes are non-negative.
            rank: usize::try_from(rank).unwrap_or_default(),
            size: usize::try_from(size).unwrap_or(1),
            comm,
            scratch_f32: RefCell::new(Vec::new()),
            scratch_f64: RefCell::new(Vec::new()),
        }
    }

    /// The communicator.
    pub fn communicator(&self) -> &SimpleCommunicator {
        &self.comm
    }

    /// Checks that every rank makes the same `call`: one allreduce of the call and its
    /// negation under `max` gives every rank the largest and the smallest value of each field.
    fn agree(&self, operation: &'static str, call: Call) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        let mut send = [0i64; 8];
        for (i, &v) in call.iter().enumerate() {
            (send[i], send[i + 4]) = (v, -v);
        }
        let mut max = [0i64; 8];
        self.comm
            .all_reduce_into(&send[..], &mut max[..], SystemOperation::max());
        if max == send {
            return Ok(());
        }
        let field = |i: usize, v: i64| match (i, v) {
            (0, ALLREDUCE_SUM) => "allreduce_sum".to_string(),
            (0, BROADCAST) => "broadcast".to_string(),
            (0, NO_SCRATCH) => "allreduce_sum without memory for its copy".to_string(),
            (1, 4) => "f32".to_string(),
            (1, 8) => "f64".to_string(),
            (2, v) => format!("{v} values"),
            (3, v) => format!("root {v}"),
            (_, v) => v.to_string(),
        };
        let differ: Vec<String> = (0..4)
            .filter(|&i| max[i] != -max[i + 4])
            .map(|i| {
                let (low, high) = (field(i, -max[i + 4]), field(i, max[i]));
                format!("{low} to {high} (this rank: {})", field(i, call[i]))
            })
            .collect();
        Err(Error::Collective {
            operation,
            message: format!("the ranks disagree on the call: {}", differ.join(", ")),
        })
    }

    /// MPI's element count for `len` elements, which must fit a C `int`.
    fn count(operation: &'static str, len: usize) -> Result<()> {
        if i32::try_from(len).is_err() {
            return Err(Error::Collective {
                operation,
                message: format!("{len} values: beyond MPI's count limit of {}", i32::MAX),
            });
        }
        Ok(())
    }

    fn sum<T: Scratch>(&self, data: &mut [T]) -> Result<()> {
        const OP: &str = "allreduce_sum";
        let mut scratch = T::scratch(self).borrow_mut();
        scratch.clear();
        // Reserved before the ranks compare their calls, so that a rank that cannot have it
        // makes every rank return an error instead of leaving them waiting in MPI.
        let reserved = if self.size == 1 {
            Ok(())
        } else {
            scratch.try_reserve(data.len())
        };
        let operation = if reserved.is_ok() {
            ALLREDUCE_SUM
        } else {
            NO_SCRATCH
        };
        let call = [operation, size_of::<T>() as i64, data.len() as i64, 0];
        let agreed = self.agree(OP, call);
        if reserved.is_err() {
            return Err(Error::Allocation {
                what: "MPI allreduce scratch",
                bytes: size_of_val(data) as u64,
            });
        }
        agreed?;
        Self::count(OP, data.len())?;
        if self.size == 1 || data.is_empty() {
            return Ok(());
        }
        scratch.extend_from_slice(data);
        self.comm
            .all_reduce_into(&scratch[..], data, SystemOperation::sum());
        Ok(())
    }

    fn bcast<T: Scratch>(&self, data: &mut [T], root: usize) -> Result<()> {
        const OP: &str = "broadcast";
        // Agree first, then refuse a bad root: every rank returns the same error.
        self.agree(
            OP,
            [
                BROADCAST,
                size_of::<T>() as i64,
                data.len() as i64,
                root as i64,
            ],
        )?;
        Self::count(OP, data.len())?;
        if root >= self.size {
            return Err(Error::InvalidParameter {
                param: "root",
                reason: format!("rank {root} of a group of {}", self.size),
            });
        }
        if self.size == 1 || data.is_empty() {
            return Ok(());
        }
        // `root < size`, and MPI sizes are C ints.
        self.comm.process_at_rank(root as i32).broadcast_into(data);
        Ok(())
    }
}

macro_rules! collective_for {
    ($t:ty) => {
        impl Collective<$t> for Mpi {
            fn rank(&self) -> usize {
                self.rank
            }
            fn size(&self) -> usize {
                self.size
            }
            fn allreduce_sum(&self, data: &mut [$t]) -> Result<()> {
                self.sum(data)
            }
            fn broadcast(&self, data: &mut [$t], root: usize) -> Result<()> {
                self.bcast(data, root)
            }
        }
    };
}

collective_for!(f32);
collective_for!(f64);
