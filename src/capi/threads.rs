//! The threads the library's calls use: one rayon pool for the process, set from C with
//! `deconv_set_num_threads`.
//!
//! Why one setting for the process rather than a pool per layer: the crate runs everything on
//! one pool so that nothing is oversubscribed, and that holds through the C API too: two host
//! threads calling two layers at once share the pool's threads instead of each bringing its own.
//! It is also what HPC codes already do for their other libraries (`omp_set_num_threads`,
//! `openblas_set_num_threads`). rayon's global pool cannot be resized once used, so the library
//! keeps its own pool when a count is set, and each call runs inside it.

use std::sync::{Arc, PoisonError, RwLock};

use super::args::check_out;
use super::status::{Fail, deconv_status, run};

/// The pool set by `deconv_set_num_threads`; `None`: rayon's global pool.
static POOL: RwLock<Option<Arc<rayon::ThreadPool>>> = RwLock::new(None);

/// The body of a call, moved to a pool thread and back.
struct OnPool<F>(F);

// SAFETY: `install` runs the body on a pool thread while the calling thread waits for it, and
// nothing else touches what the body borrows meanwhile. The body's raw pointers (the caller's
// buffers, the layer handle) are valid for the whole call by each function's contract, and the
// layer types are `Send`; thread-local state (the last error, the test panic hook) is only
// touched outside the body.
unsafe impl<F> Send for OnPool<F> {}

impl<F> OnPool<F> {
    /// Runs the body (a method, so that a closure calling it captures the whole `OnPool`).
    fn run<R>(self) -> R
    where
        F: FnOnce() -> R,
    {
        (self.0)()
    }
}

/// Runs `body` on the pool set by `deconv_set_num_threads`, or right here (on rayon's global
/// pool) when none is set.
pub(super) fn install<R: Send>(body: impl FnOnce() -> R) -> R {
    let pool = POOL.read().unwrap_or_else(PoisonError::into_inner).clone();
    match pool {
        None => body(),
        Some(pool) => {
            let job = OnPool(body);
            pool.install(move || job.run())
        }
    }
}

/// Sets the number of threads the library's calls use from now on, for the whole process; 0
/// goes back to the default (`RAYON_NUM_THREADS`, else one per core).
///
/// A layer works on the threads of the call (images of a batch in parallel, or each GEMM split
/// by rows); a layer's own workspace has one image slot per thread it saw when created (at most
/// its batch), so set the count before creating layers. Results do not depend on it beyond
/// rounding. Calls already running finish on the threads they started with.
///
/// Errors: `DECONV_ERR_OTHER` when the threads cannot be started (the setting is unchanged).
#[unsafe(no_mangle)]
pub extern "C" fn deconv_set_num_threads(threads: usize) -> deconv_status {
    run("deconv_set_num_threads", || {
        let pool = if threads == 0 {
            None
        } else {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("deconv-{i}"))
                .build()
                .map_err(|e| Fail {
                    status: deconv_status::DECONV_ERR_OTHER,
                    message: format!("cannot start {threads} threads: {e}"),
                })?;
            Some(Arc::new(pool))
        };
        *POOL.write().unwrap_or_else(PoisonError::into_inner) = pool;
        Ok(())
    })
}

/// Sets `*threads` to the number of threads the library's next call uses.
///
/// # Safety
/// `threads` must be `NULL` (an error) or valid for writing a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn deconv_num_threads(threads: *mut usize) -> deconv_status {
    run("deconv_num_threads", || {
        check_out("threads", threads)?;
        let count = install(rayon::current_num_threads);
        // SAFETY: checked non-null and aligned; the caller guarantees it is writable.
        unsafe { threads.write(count) };
        Ok(())
    })
}
