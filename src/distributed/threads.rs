//! A [`Collective`] whose ranks are threads of one process: for tests that run in plain
//! `cargo test`, and for trying data-parallel training without MPI.

use super::Collective;
use crate::element::Element;
use crate::error::{Error, Result};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};

/// A group of `size` ranks in one process. [`ThreadGroup::new`] returns one [`ThreadRank`]
/// per rank; move each into its own thread. Each rank deposits its slice, then every rank sums
/// all deposits in rank order (so every rank gets the same bits), as MPI ranks would.
///
/// Like MPI collectives, every rank must make the same calls in the same order: a rank that
/// stops calling leaves the others waiting.
#[derive(Debug)]
pub struct ThreadGroup<T> {
    _marker: std::marker::PhantomData<T>,
}

impl<T: Element> ThreadGroup<T> {
    /// The ranks `0..size` of a new group (`size` at least 1).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(size: usize) -> Vec<ThreadRank<T>> {
        let size = size.max(1);
        let shared = Arc::new(Shared {
            barrier: Barrier::new(size),
            slots: (0..size).map(|_| Mutex::new(Vec::new())).collect(),
        });
        (0..size)
            .map(|rank| ThreadRank {
                rank,
                shared: Arc::clone(&shared),
            })
            .collect()
    }
}

/// One rank of a [`ThreadGroup`].
#[derive(Debug)]
pub struct ThreadRank<T> {
    rank: usize,
    shared: Arc<Shared<T>>,
}

#[derive(Debug)]
struct Shared<T> {
    barrier: Barrier,
    /// Each rank's deposit of the current call.
    slots: Vec<Mutex<Vec<T>>>,
}

impl<T> Shared<T> {
    fn slot(&self, rank: usize) -> MutexGuard<'_, Vec<T>> {
        // A rank that panicked while holding its slot poisons it; the data is plain numbers.
        self.slots[rank]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<T: Element> ThreadRank<T> {
    /// Puts `data` in this rank's slot.
    fn deposit(&self, data: &[T]) {
        let mut slot = self.shared.slot(self.rank);
        slot.clear();
        slot.extend_from_slice(data);
    }

    /// Waits for every rank's deposit, runs `read` over all slots, and waits again so that no
    /// slot is replaced before every rank has read it.
    fn gather<R>(&self, read: impl FnOnce(&[MutexGuard<'_, Vec<T>>]) -> R) -> R {
        self.shared.barrier.wait();
        let result = {
            let slots: Vec<_> = (0..self.shared.slots.len())
                .map(|r| self.shared.slot(r))
                .collect();
            read(&slots)
        };
        self.shared.barrier.wait();
        result
    }
}

impl<T: Element> Collective<T> for ThreadRank<T> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.slots.len()
    }

    fn allreduce_sum(&self, data: &mut [T]) -> Result<()> {
        self.deposit(data);
        self.gather(|slots| {
            if let Some(other) = slots.iter().position(|s| s.len() != data.len()) {
                return Err(Error::Collective {
                    operation: "allreduce_sum",
                    message: format!(
                        "rank {} sums {} values, rank {other} {}",
                        self.rank,
                        data.len(),
                        slots[other].len()
                    ),
                });
            }
            for (i, d) in data.iter_mut().enumerate() {
                *d = slots[0][i];
                for slot in &slots[1..] {
                    *d += slot[i];
                }
            }
            Ok(())
        })
    }

    fn broadcast(&self, data: &mut [T], root: usize) -> Result<()> {
        if root >= self.size() {
            return Err(Error::InvalidParameter {
                param: "root",
                reason: format!("rank {root} of a group of {}", self.size()),
            });
        }
        if self.rank == root {
            self.deposit(data);
        }
        self.gather(|slots| {
            let from = &slots[root];
            if from.len() != data.len() {
                return Err(Error::Collective {
                    operation: "broadcast",
                    message: format!(
                        "rank {root} sends {} values, rank {} expects {}",
                        from.len(),
                        self.rank,
                        data.len()
                    ),
                });
            }
            data.copy_from_slice(from);
            Ok(())
        })
    }
}
