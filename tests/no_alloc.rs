//! The crate's own code allocates nothing in forward and backward once the layer is built and
//! warmed up. Allocations inside GEMM calls are excluded: the matrixmultiply crate allocates its
//! packing buffer on every call, which its API does not let us avoid (OpenBLAS keeps a buffer
//! pool of its own). The layer runs inside a one-thread rayon pool, after three warm-up rounds:
//! with several threads, rayon's work stealing (crossbeam-epoch) allocates when a thread first
//! steals and when it flushes its garbage bags, depending on timing (seen here as 0 or 2
//! allocations of 2304 and 1520 bytes in a 2-thread run), and called from outside a pool, rayon's
//! job injector allocates a small block every 63 jobs. Those are rayon's, not the layer's.
//!
//! Only the pool's worker thread is counted. In a one-thread pool every piece of the layer's
//! work, its rayon jobs included, runs on that thread; the other threads of the process are not
//! the layer's. Counting them made a CI run fail with 4 allocations in the first, smallest case
//! with the OpenBLAS backend, where the whole window takes microseconds, while the same binary
//! passed 40 runs of 40 here, also with both cores loaded: most likely libtest's main thread,
//! which formats and records the test it has just started while the test already runs.

use deconv::backend::{DefaultBackend, Gemm, MatMut, MatRef};
use deconv::{Activation, Algorithm, DeconvConfig, DeconvLayer, Mode};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static GEMM_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Sizes of the first counted allocations, for the failure message.
static SIZES: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

thread_local! {
    /// Set on the pool's worker thread, the one thread that runs the layer.
    static LAYER_THREAD: Cell<bool> = const { Cell::new(false) };
    /// Set while this thread is inside a backend GEMM call.
    static IN_GEMM: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    if LAYER_THREAD.with(Cell::get) && !IN_GEMM.with(Cell::get) {
        let i = ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = SIZES.get(i) {
            slot.store(size, Ordering::Relaxed);
        }
    }
}

/// The default backend, marking its calls so their allocations are not counted.
#[derive(Default)]
struct Marked(DefaultBackend);

impl Gemm<f32> for Marked {
    fn name(&self) -> &'static str {
        "marked"
    }
    fn gemm(
        &self,
        alpha: f32,
        a: MatRef<'_, f32>,
        b: MatRef<'_, f32>,
        beta: f32,
        c: MatMut<'_, f32>,
    ) -> deconv::Result<()> {
        GEMM_CALLS.fetch_add(1, Ordering::Relaxed);
        IN_GEMM.with(|f| f.set(true));
        let result = self.0.gemm(alpha, a, b, beta, c);
        IN_GEMM.with(|f| f.set(false));
        result
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts them.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn forward_and_backward_do_not_allocate() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .start_handler(|_| LAYER_THREAD.with(|t| t.set(true)))
        .build()
        .unwrap();
    pool.install(|| {
        assert!(
            LAYER_THREAD.with(Cell::get),
            "check() runs on the counted thread"
        );
        check();
    });
}

fn check() {
    for (config, name) in [
        (
            DeconvConfig::new(3, 8, 6, 5, 6, 4).stride(2).pad(1),
            "columns",
        ),
        (
            DeconvConfig::new(3, 8, 6, 5, 6, 4)
                .stride(2)
                .pad(1)
                .algorithm(Algorithm::Phases),
            "phases",
        ),
        (
            DeconvConfig::new(1, 4, 6, 5, 4, 3).groups(2).dilation(2),
            "batch 1, groups",
        ),
        (
            DeconvConfig::new(3, 8, 6, 5, 8, 4)
                .stride(2)
                .pad(1)
                .groups(8)
                .algorithm(Algorithm::Direct),
            "direct, depthwise",
        ),
        // Columns past the backward's cache budget: it goes by tiles, bands of rows here...
        (
            DeconvConfig::new(2, 8, 48, 48, 16, 3).stride(2).pad(1),
            "tiles: bands of rows",
        ),
        // ... and blocks of filters here (16-pixel rows).
        (
            DeconvConfig::new(2, 8, 16, 16, 128, 4).stride(2).pad(1),
            "tiles: blocks of filters",
        ),
    ] {
        for bn in [false, true] {
            let config = config
                .clone()
                .batch_normalize(bn)
                .activation(Activation::Leaky);
            let g = config.geometry().unwrap();
            let mut layer: DeconvLayer<f32, Marked> = DeconvLayer::new(&config).unwrap();
            let input: Vec<f32> = (0..g.batch() * g.inputs())
                .map(|i| (i % 7) as f32 - 3.0)
                .collect();
            let mut dx = vec![0.0f32; input.len()];
            // Warm up: rayon's threads and queues settle in the first calls.
            for _ in 0..3 {
                layer.forward(&input, Mode::Train).unwrap();
                layer.backward(&input, Some(&mut dx)).unwrap();
                layer.forward(&input, Mode::Inference).unwrap();
            }

            // Only this thread counts, so resetting here cannot race with a count.
            ALLOCATIONS.store(0, Ordering::SeqCst);
            let calls = GEMM_CALLS.load(Ordering::SeqCst);
            for mode in [Mode::Train, Mode::Inference, Mode::Train] {
                layer.forward(&input, mode).unwrap();
            }
            layer.delta_mut().fill(0.5);
            layer.backward(&input, Some(&mut dx)).unwrap();
            layer.forward(&input, Mode::Train).unwrap();
            layer.backward(&input, None).unwrap();
            let allocations = ALLOCATIONS.load(Ordering::SeqCst);
            let sizes: Vec<usize> = SIZES[..allocations.min(SIZES.len())]
                .iter()
                .map(|s| s.load(Ordering::SeqCst))
                .collect();
            assert_eq!(
                allocations, 0,
                "{name}, batch norm {bn}: allocations in forward/backward (first sizes: {sizes:?})"
            );
            // The direct algorithm has no GEMM.
            assert!(
                GEMM_CALLS.load(Ordering::SeqCst) > calls || layer.algorithm() == Algorithm::Direct,
                "the GEMMs ran through the marker"
            );
        }
    }
}
