//! How a layer's passes run for its geometry: the forward algorithm ([`Plan`]) and the tiles
//! of the column backward ([`Tile`]).

use super::Weights;
use crate::alloc;
use crate::config::{Algorithm, DeconvConfig, Geometry};
use crate::direct::DirectPlan;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::phase::PhasePlan;
use crate::transpose::{skewed_ld, transpose};
use std::ops::Range;

/// Fewest GEMM rows per phase class for [`Algorithm::Auto`] to choose the phase decomposition:
/// S4's 32-row classes lose to columns (20.0 ms against 9.85), FCN-8s upscore2's 84-row class
/// wins (fcn-up2: 0.79 ms against 0.93; `benches/peers.py`, 2 threads, 3 rounds).
const MIN_PHASE_GEMM_ROWS: usize = 64;
/// Most `group_in * group_out` for [`Algorithm::Auto`] to choose the direct plan.
const MAX_DIRECT_GROUP_PRODUCT: usize = 16;
/// Most input channels per group, and most `group_in * group_out`, for [`Algorithm::Auto`] to
/// run the forward alone with the direct plan where it would run columns (the backward then
/// runs as after a column forward): with few input channels the GEMM's `K` is short and
/// col2im costs most next to it. `benches/peers.py`, 2 threads, 3 rounds, forward inference:
/// enet-out (16 -> 12 channels) 8.6 ms against 12.3 with columns, darknet-mask (32 -> 1) 1.50
/// against 1.86, enet-up (16 -> 16) 2.92 against 3.03; with more input channels columns win
/// (dcgan-rgb, 64 -> 3: 0.92 against 1.90; fsrcnn-x3, 56 -> 1: 6.2 against 8.7). Its backward
/// is the slower one (enet-out 61 ms against 26 forward+backward).
const MAX_DIRECT_FORWARD_GROUP_IN: usize = 32;
/// See [`MAX_DIRECT_FORWARD_GROUP_IN`].
const MAX_DIRECT_FORWARD_PRODUCT: usize = 256;
/// Most input channels per group for [`Algorithm::Auto`] to run the backward with phases (the
/// adjoint of their GEMMs), when the forward runs with columns or phases. The backward's
/// im2col costs the columns plan most next to its GEMMs with few channels: fcn-up2 (21
/// channels) 1.9 ms against 5.2 with columns, lapsrn-feat (64 channels) forward+backward 29.6
/// and 31.8 ms against 33.5 and 35.0 (`examples/sweep`, 2 threads, two runs); with 128
/// channels and more columns win (linknet 24.5 ms against 29.2).
const MAX_PHASE_BACKWARD_GROUP_IN: usize = 64;
/// Fewest rows of a class GEMM for [`Algorithm::Auto`] to run the backward with phases: with
/// one filter a class GEMM is a row (darknet-mask, 32 -> 1 channels: 5x slower than columns).
const MIN_PHASE_BACKWARD_ROWS: usize = 64;
/// Most input channels per group for [`Algorithm::Auto`] to choose the phase decomposition.
const MAX_PHASE_GROUP_IN: usize = 64;

/// How the forward pass runs, chosen once per geometry ([`Algorithm`]).
#[derive(Debug, Clone)]
pub(super) enum Plan<T> {
    /// GEMM into columns, then col2im; the backward works through each image in tiles when
    /// `tiles` is set (see [`column_tiles`]). Small images go `images` at a time through one
    /// GEMM, their columns side by side (see [`batched_images`]); `images` is 1 with tiles.
    Columns {
        tiles: Option<Tiles<T>>,
        images: usize,
    },
    /// With the weights repacked for the phase GEMMs (from the weights' version
    /// `packed_from`; repacked when they changed), and the one-thread backward's weight
    /// gradient in that layout (reserved by the first backward).
    Phases {
        plan: Box<PhasePlan>,
        packed: Vec<T>,
        packed_from: Option<u64>,
        packed_grad: Vec<T>,
    },
    /// Each output pixel gathered from the input rows ([`DirectPlan`]).
    Direct { plan: Box<DirectPlan> },
}

/// The tiled column backward: its [`Tile`], and the weights transposed per group
/// (`[group][rows][in_channels / groups]`, rows [`skewed_ld`] apart) from the weights' version
/// `transposed_from` (transposed again when they changed); reserved by the first backward.
#[derive(Debug, Clone)]
pub(super) struct Tiles<T> {
    pub(super) tile: Tile,
    pub(super) weights_t: Vec<T>,
    pub(super) transposed_from: Option<u64>,
}

impl<T: Element> Tiles<T> {
    /// Tiles of `tile`, their buffer not yet reserved.
    pub(super) fn new(tile: Tile) -> Self {
        Tiles {
            tile,
            weights_t: Vec::new(),
            transposed_from: None,
        }
    }
}

/// A tile of the column backward: `band_rows` rows of the input image by `filters` output
/// channels (a block of `filters * kh * kw` column rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tile {
    pub(super) band_rows: usize,
    pub(super) filters: usize,
}

impl<T: Element> Plan<T> {
    pub(super) fn columns(g: &Geometry) -> Self {
        let tiles = column_tiles::<T>(g).map(Tiles::new);
        let images = match tiles {
            Some(_) => 1,
            None => batched_images(g),
        };
        Plan::Columns { tiles, images }
    }

    /// The plan of the backward pass where [`Algorithm::Auto`] gives it another algorithm
    /// than the forward's `self` (the backward needs only the input, `delta` and the weights,
    /// so the two passes may differ); `None` where they share `self`.
    pub(super) fn backward_for(&self, config: &DeconvConfig, g: &Geometry) -> Option<Self> {
        if config.algorithm != Algorithm::Auto {
            return None;
        }
        if let Plan::Direct { .. } = self {
            // Direct both ways for the fewest channels, else only forward (see
            // MAX_DIRECT_FORWARD_GROUP_IN): the backward of a column forward.
            if g.group_in() * g.group_out() <= MAX_DIRECT_GROUP_PRODUCT {
                return None;
            }
            let columns = Plan::columns(g);
            return Some(columns.backward_for(config, g).unwrap_or(columns));
        }
        let phases = PhasePlan::new(g).filter(|plan| {
            !kernel_tiles_output(g)
                && g.group_in() <= MAX_PHASE_BACKWARD_GROUP_IN
                && plan.min_gemm_rows() >= MIN_PHASE_BACKWARD_ROWS
        });
        match (self, phases) {
            (Plan::Columns { .. }, Some(plan)) => Some(Plan::Phases {
                plan: Box::new(plan),
                packed: Vec::new(),
                packed_from: None,
                packed_grad: Vec::new(),
            }),
            (Plan::Phases { .. }, None) => Some(Plan::columns(g)),
            _ => None,
        }
    }

    /// The algorithm this plan runs.
    pub(super) fn algorithm(&self) -> Algorithm {
        match self {
            Plan::Columns { .. } => Algorithm::Columns,
            Plan::Phases { .. } => Algorithm::Phases,
            Plan::Direct { .. } => Algorithm::Direct,
        }
    }

    /// Images that go through one GEMM (1 but for the column plan on small images).
    pub(super) fn images_per_gemm(&self) -> usize {
        match self {
            Plan::Columns { images, .. } => *images,
            _ => 1,
        }
    }

    /// The plan for `config`'s algorithm on `g`, its buffers not yet reserved
    /// ([`reserve_forward`](Self::reserve_forward), [`reserve_backward`](Self::reserve_backward)).
    pub(super) fn new(config: &DeconvConfig, g: &Geometry) -> Result<Self> {
        let phases = || {
            PhasePlan::new(g).map(|plan| Plan::Phases {
                plan: Box::new(plan),
                packed: Vec::new(),
                packed_from: None,
                packed_grad: Vec::new(),
            })
        };
        Ok(match config.algorithm {
            Algorithm::Columns => Plan::columns(g),
            Algorithm::Direct => Plan::Direct {
                plan: Box::new(DirectPlan::new(g)),
            },
            Algorithm::Phases => phases().ok_or_else(|| Error::InvalidParameter {
                param: "algorithm",
                reason: format!(
                    "the phase decomposition needs dilation 1 and at most {} phases \
                     (stride_h * stride_w)",
                    crate::phase::MAX_PHASES
                ),
            })?,
            // A GEMM per group of a few channels has nothing to multiply: the direct plan's
            // runs are bound by memory instead. `examples/sweep` (2 threads): depthwise 4 to 5x
            // faster than the better GEMM plan (centernet-dw2 1.56 ms against 6.18), groups of
            // 4 x 4 channels 1.6x faster (resnext-g32 7.2 ms against 11.3).
            Algorithm::Auto if g.group_in() * g.group_out() <= MAX_DIRECT_GROUP_PRODUCT => {
                Plan::Direct {
                    plan: Box::new(DirectPlan::new(g)),
                }
            }
            Algorithm::Auto => {
                // Phases replace col2im, whose cost relative to the GEMM is about
                // 1 / (2 * in_channels per group): they pay for few input channels (S3: 21),
                // provided each class GEMM is tall enough to amortize packing its input (S4's
                // 32-row classes lose). With many channels, the phase GEMMs multiply on the
                // grid of the output's phases: they pay where the padding crops that grid below
                // the input (darknet-k4: 12x12 against 13x13, 21.8 ms against 26.1), not where
                // it is larger (S1: 17x17 against 16x16, 44 ms against 40). Where the kernel
                // tiles the output (kernel == stride, no pad), col2im is a plain copy.
                // Measured with `examples/sweep`, 2 threads, three rounds.
                match PhasePlan::new(g) {
                    Some(plan)
                        if !kernel_tiles_output(g)
                            && (g.group_in() <= MAX_PHASE_GROUP_IN
                                || plan.grid_area() < g.in_area())
                            && plan.min_gemm_rows() >= MIN_PHASE_GEMM_ROWS =>
                    {
                        Plan::Phases {
                            plan: Box::new(plan),
                            packed: Vec::new(),
                            packed_from: None,
                            packed_grad: Vec::new(),
                        }
                    }
                    _ if g.group_in() <= MAX_DIRECT_FORWARD_GROUP_IN
                        && g.group_in() * g.group_out() <= MAX_DIRECT_FORWARD_PRODUCT =>
                    {
                        Plan::Direct {
                            plan: Box::new(DirectPlan::new(g)),
                        }
                    }
                    _ => Plan::columns(g),
                }
            }
        })
    }

    /// Brings the copies of `weights` the plan keeps up to date with the weights' version: the
    /// phase plan's repacked weights, and the tiled backward's transposed ones (the
    /// input-gradient GEMM packs `W^T`, stored k-major, with plain copies).
    pub(super) fn refresh_weights(&mut self, weights: &Weights<T>, g: &Geometry) {
        let current = Some(weights.version);
        match self {
            Plan::Phases {
                plan,
                packed,
                packed_from,
                ..
            } if *packed_from != current => {
                plan.pack_weights(weights, packed);
                *packed_from = current;
            }
            Plan::Columns { tiles: Some(t), .. }
                if t.transposed_from != current && !t.weights_t.is_empty() =>
            {
                let (cg, rows) = (g.group_in(), g.col_rows());
                let ld = skewed_ld::<T>(cg);
                let per_group = weights.chunks(cg * rows);
                for (w, wt) in per_group.zip(t.weights_t.chunks_mut(ld * rows)) {
                    transpose(w, cg, rows, rows, wt, ld);
                }
                t.transposed_from = current;
            }
            _ => {}
        }
    }

    /// Elements the forward pass's buffers take ([`reserve_forward`](Self::reserve_forward)).
    pub(super) fn forward_elements(&self, g: &Geometry) -> u128 {
        match self {
            Plan::Columns { .. } | Plan::Direct { .. } => 0,
            Plan::Phases { .. } => g.weight_count() as u128,
        }
    }

    /// Reserves what the forward pass needs: the phase plan's repacked weights.
    pub(super) fn reserve_forward(&mut self, g: &Geometry) -> Result<()> {
        match self {
            Plan::Phases { packed, .. } if packed.is_empty() => {
                *packed = alloc::zeros("phase-packed weights", g.weight_count())?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Reserves what the backward pass needs besides the forward's (once; later calls do
    /// nothing): the phase plan's packed weight gradient, or the tiles' transposed weights.
    pub(super) fn reserve_backward(&mut self, g: &Geometry) -> Result<()> {
        match self {
            Plan::Phases { packed_grad, .. } if packed_grad.is_empty() => {
                *packed_grad = alloc::zeros("phase-packed weight gradient", g.weight_count())?;
            }
            Plan::Columns { tiles: Some(t), .. } if t.weights_t.is_empty() => {
                t.weights_t = alloc::zeros("transposed weights", weights_t_len::<T>(g))?;
                t.transposed_from = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// Workspace elements per image, forward and backward.
    pub(super) fn slot_size(&self, g: &Geometry) -> usize {
        match self {
            // The columns of `images` images side by side, and their inputs gathered likewise.
            Plan::Columns { images: 1, .. } => g.workspace_size(),
            Plan::Columns { images, .. } => {
                images * (g.workspace_size() + g.group_in() * g.in_area())
            }
            Plan::Phases { plan, .. } => plan.workspace_size(),
            Plan::Direct { plan } => plan.slot_size(),
        }
    }
}

/// Whether the kernel tiles the output (kernel == stride and no padding on both axes): col2im
/// and im2col are then plain copies, and the column plan costs no more than its GEMMs.
fn kernel_tiles_output(g: &Geometry) -> bool {
    (0..2).all(|a| g.kernel()[a] == g.stride()[a] && g.pad()[a] == 0)
}

/// Columns a GEMM wants at least: below, packing the weights (which matrixmultiply does on every
/// call) costs more than the product. `examples/sweep --parts` on DCGAN's layers: 64 GEMMs of
/// 8192 x 1 x 100 took 19.6 ms, one 8192 x 64 x 100 took 0.83 ms.
const MIN_GEMM_COLUMNS: usize = 256;

/// Images per GEMM of the column plan: enough small images, side by side, to give the GEMM
/// [`MIN_GEMM_COLUMNS`] columns (at most the batch); 1 for images that have them alone.
pub(super) fn batched_images(g: &Geometry) -> usize {
    MIN_GEMM_COLUMNS
        .div_ceil(g.in_area().max(1))
        .min(g.batch())
        .max(1)
}

/// `0..n` cut into the fewest parts of at most `most` elements, of sizes differing by at most
/// one (64 rows in bands of at most 7: four of 7 and six of 6, not nine of 7 and one of 1).
pub(super) fn even_parts(n: usize, most: usize) -> impl Iterator<Item = Range<usize>> {
    let parts = n.div_ceil(most.max(1));
    (0..parts).map(move |i| i * n / parts..(i + 1) * n / parts)
}

/// Bytes of one tile's columns in the tiled column backward: the columns and their transposed
/// copy then share a core's L2 cache (1 MiB here).
const TILE_BYTES: usize = 512 * 1024;
/// Fewest pixels per band: the weight-gradient GEMM runs over a band's pixels, and shorter runs
/// cost it more than the cache saves (S1: 4-row bands of 16 pixels were 30% slower).
const MIN_BAND_PIXELS: usize = 256;
/// Fewest column rows per filter block: the input-gradient GEMM runs over a block's rows.
const MIN_BLOCK_ROWS: usize = 256;

/// The tile of the column backward, or `None` to take each image whole: when its columns
/// already fit the cache budget, when tiles would be too thin, or when a tile's buffers would
/// not fit the column workspace (Darknet's size, which the layer keeps; see [`Tile::fits`]). Bands of rows over all filters where rows are long
/// (S4), else the whole image over blocks of filters (S1).
pub(super) fn column_tiles<T>(g: &Geometry) -> Option<Tile> {
    let budget = TILE_BYTES / std::mem::size_of::<T>();
    tiles_within::<T>(g, budget, MIN_BAND_PIXELS, MIN_BLOCK_ROWS)
}

/// [`column_tiles`] for a budget of `budget` column elements per tile, bands of at least
/// `min_pixels` pixels and blocks of at least `min_rows` column rows.
pub(super) fn tiles_within<T>(
    g: &Geometry,
    budget: usize,
    min_pixels: usize,
    min_rows: usize,
) -> Option<Tile> {
    let (h, w, taps, ng) = (g.in_h(), g.in_w(), g.taps(), g.group_out());
    let rows = g.col_rows();
    if rows.checked_mul(h * w)? <= budget {
        return None;
    }
    let band_rows = budget / (rows * w).max(1);
    let filters = budget / (taps * h * w).max(1);
    let tile = if band_rows >= 1 && band_rows * w >= min_pixels && band_rows < h {
        Tile {
            band_rows,
            filters: ng,
        }
    } else if filters >= 1 && filters * taps >= min_rows && filters < ng {
        Tile {
            band_rows: h,
            filters,
        }
    } else {
        return None;
    };
    tile.fits::<T>(g).then_some(tile)
}

impl Tile {
    /// Whether the tile's columns, their transposed copy, the band's transposed input and its
    /// input-gradient buffer fit the column workspace.
    pub(super) fn fits<T>(&self, g: &Geometry) -> bool {
        let p = self.band_rows * g.in_w();
        let (rows, cg) = (self.filters * g.taps(), g.group_in());
        let per_pixel = rows + skewed_ld::<T>(rows) + skewed_ld::<T>(cg);
        let need = per_pixel
            .checked_mul(p)
            .zip(cg.checked_mul(skewed_ld::<T>(p)))
            .and_then(|(a, b)| a.checked_add(b));
        need.is_some_and(|need| need <= g.workspace_size())
    }
}

/// Elements of the transposed weights: per group, `rows` rows of [`skewed_ld`]`(cg)`.
pub(super) fn weights_t_len<T>(g: &Geometry) -> usize {
    g.groups() * g.col_rows() * skewed_ld::<T>(g.group_in())
}
