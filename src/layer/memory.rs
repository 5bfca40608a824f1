//! What a layer's buffers take, and how much of it may grow with the thread count.
//!
//! A layer's memory is its *base* (parameters, outputs, gradients and `delta` when it trains,
//! batch norm's buffers, the plan's repacked weights, one workspace slot) plus *per-thread
//! state*: more workspace slots, so that images run side by side, and per-task weight-gradient
//! sums for an image-parallel backward. Per-thread state never takes more than the base, so a
//! layer on any number of threads holds at most twice what it holds on one
//! ([`workspace_slots`], [`gradient_tasks`]). Sizes are added up from the configuration before
//! anything is reserved, so that a layer that cannot fit is refused before it touches memory.

use super::DeconvLayer;
use super::plan::Plan;
use crate::alloc;
use crate::backend::Gemm;
use crate::batchnorm::BatchNorm;
use crate::config::{DeconvConfig, Geometry};
use crate::element::Element;
use crate::error::Result;

/// Elements of `T` a layer of `config` reserves when it is built (or resized to `g`) with
/// `slots` workspace slots of `slot` elements of its own: parameters, outputs, the plan's
/// forward buffers, the workspace and, when it trains, the gradients, `delta` and Adam's
/// moments. The backward's own buffers come later, at the first backward.
pub(super) fn elements_at_construction<T: Element>(
    config: &DeconvConfig,
    g: &Geometry,
    plan: &Plan<T>,
    (slot, slots): (usize, usize),
) -> u128 {
    let (wc, n) = (g.weight_count() as u128, g.filters() as u128);
    let total = g.batch() as u128 * g.outputs() as u128;
    let scales = if config.batch_normalize { n } else { 0 };
    let mut elements = wc + n + total + plan.forward_elements(g);
    if config.own_workspace {
        elements += slot as u128 * slots as u128;
    }
    if config.batch_normalize {
        let (filters, batch) = (g.filters(), g.batch());
        elements +=
            BatchNorm::<T>::elements(filters, g.batch() * g.outputs(), batch, config.training);
    }
    if config.training {
        let params = wc + n + scales;
        elements += params + total;
        if config.adam {
            elements += 2 * params;
        }
    }
    elements
}

/// The length of the own workspace of a layer of `config` built (or resized) on the current
/// rayon pool, after checking that all the buffers it reserves at once fit the machine
/// ([`alloc::check_fits`]; `what` names them in the error).
pub(super) fn sized_workspace<T: Element>(
    config: &DeconvConfig,
    g: &Geometry,
    (plan, back): (&Plan<T>, Option<&Plan<T>>),
    what: &'static str,
) -> Result<usize> {
    let slot = slot_size(plan, back, g);
    let base = elements_at_construction(config, g, plan, (slot, 1));
    // The direct plan can spread one image's planes over slots too.
    let units = match plan {
        Plan::Direct { .. } => g.batch().saturating_mul(g.filters().max(g.in_channels())),
        // One image with few column rows computes them transposed in a second slot.
        Plan::Columns { .. } if g.col_rows() <= super::forward::MAX_TRANSPOSED_ROWS => {
            g.batch().div_ceil(plan.images_per_gemm()).max(2)
        }
        _ => g.batch().div_ceil(plan.images_per_gemm()),
    };
    let slots = workspace_slots(units, rayon::current_num_threads(), slot, base);
    let elements = elements_at_construction(config, g, plan, (slot, slots));
    let bytes = u64::try_from(elements * size_of::<T>() as u128).unwrap_or(u64::MAX);
    alloc::check_fits(what, bytes)?;
    Ok(if config.own_workspace {
        slot * slots
    } else {
        0
    })
}

/// Workspace slots of a layer's own workspace: one per unit of work that runs at once (an
/// image; for the direct plan, an image's plane; two for one image's transposed columns), that
/// is one per rayon thread up to the `units` there are, but the slots beyond the first never
/// take more than the layer's `base` elements (which include one slot).
pub(super) fn workspace_slots(units: usize, threads: usize, slot: usize, base: u128) -> usize {
    let room = base / slot.max(1) as u128;
    let most = usize::try_from(room)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    units.min(threads).min(most).max(1)
}

/// How many image tasks an image-parallel backward runs, each summing its weight gradient in a
/// buffer of its own: as many as `want` (one per workspace slot and thread, at most the batch),
/// but the buffers never take more than the `room` (in elements) that the layer's base leaves
/// after its extra workspace slots. 1 means no buffers: each image's work is then split over
/// the threads instead.
pub(super) fn gradient_tasks(want: usize, weight_count: usize, room: usize) -> usize {
    let most = room / weight_count.max(1);
    match want.min(most) {
        0 | 1 => 1,
        tasks => tasks,
    }
}

/// Workspace elements per slot of a layer whose forward runs `plan` and backward `back` (or
/// `plan`): what the larger of the two needs.
pub(super) fn slot_size<T: Element>(plan: &Plan<T>, back: Option<&Plan<T>>, g: &Geometry) -> usize {
    plan.slot_size(g).max(back.map_or(0, |b| b.slot_size(g)))
}

/// Elements of `T` the layer's buffers hold now, per-thread state included.
pub(super) fn held_elements<T: Element, B: Gemm<T>>(layer: &DeconvLayer<T, B>) -> usize {
    let mut held = layer.weights.len() + layer.biases.len() + layer.output.len();
    held += layer.workspace.len();
    held += layer.back.as_ref().map_or(0, plan_elements);
    held += plan_elements(&layer.plan);
    if let Some(bn) = &layer.bn {
        held += bn.held_elements();
    }
    if let Some(t) = &layer.train {
        held += t.gradients.len() + t.delta.len() + t.task_updates.len();
        held += t.adam.as_ref().map_or(0, |a| a.held_elements());
    }
    held
}

/// Elements the buffers of `plan` hold now.
fn plan_elements<T>(plan: &Plan<T>) -> usize {
    match plan {
        Plan::Columns { tiles, .. } => tiles.as_ref().map_or(0, |t| t.weights_t.len()),
        Plan::Direct { .. } => 0,
        Plan::Phases {
            packed,
            packed_grad,
            ..
        } => packed.len() + packed_grad.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_thread_state_stays_within_the_base() {
        // Slots: one per thread up to the batch, the extra ones within the base.
        assert_eq!(workspace_slots(16, 2, 100, 1000), 2);
        assert_eq!(workspace_slots(3, 16, 100, 1000), 3);
        assert_eq!(workspace_slots(16, 16, 100, 1000), 11);
        assert_eq!(workspace_slots(16, 16, 100, 50), 1);
        assert_eq!(workspace_slots(0, 0, 0, 0), 1);
        // Gradient buffers: within the room, none for a single task.
        assert_eq!(gradient_tasks(8, 100, 1000), 8);
        assert_eq!(gradient_tasks(16, 100, 1000), 10);
        assert_eq!(gradient_tasks(16, 100, 199), 1);
        assert_eq!(gradient_tasks(1, 100, 1000), 1);
        assert_eq!(gradient_tasks(4, 0, 0), 1);
    }
}
