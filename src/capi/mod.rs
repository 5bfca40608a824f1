//! The C ABI (cargo feature `capi`): an opaque `deconv_layer *` handle around a
//! `DeconvLayer<f32, AnyBackend>` or `DeconvLayer<f64, AnyBackend>`, and plain functions on it.
//! The header `include/deconv.h` is generated from this folder by `build.rs` (cbindgen); each
//! function's doc comment is its comment in the header, including its safety contract.
//! `cargo cinstall` (cargo-c) installs the C library; see README.md, "Using it from C, CMake
//! and Fortran".
//!
//! Conventions of every function:
//! - It returns a [`deconv_status`] (`DECONV_OK == 0` on success), except the three that cannot
//!   fail and return a static or thread-local string (`deconv_version`, `deconv_status_name`,
//!   `deconv_last_error`).
//! - On failure it stores a message for [`deconv_last_error`] (thread-local) and leaves the layer
//!   and every out-parameter as they were (except `deconv_layer_create`, which sets `*out` to
//!   `NULL`).
//! - A null pointer is `DECONV_ERR_NULL_POINTER`, except where a function says `NULL` is allowed.
//!   Every buffer is a pointer plus a length in elements, and a wrong length is
//!   `DECONV_ERR_BUFFER_LENGTH`. Buffers passed in must not overlap the layer's own buffers
//!   (checked: `DECONV_ERR_INVALID_PARAMETER`) nor each other where one is written.
//! - Nothing unwinds into C: each body runs under `catch_unwind`, and a panic (a bug) becomes
//!   `DECONV_ERR_PANIC`. A layer whose call panicked is "poisoned": every later call on it fails
//!   with `DECONV_ERR_INVALID_STATE` except `deconv_layer_free`. This needs the default
//!   `panic = "unwind"`; with `panic = "abort"` a panic aborts the process.
//! - A layer may be used from any thread, but from one thread at a time.
//! - `int` codes (activation, algorithm, mode, optimizer, backend, buffer) are checked; an
//!   unknown code is `DECONV_ERR_INVALID_PARAMETER`.
//!
//! One file per concern; cbindgen reads them in the order of the `mod` lines below, which is
//! the order of the functions in the header:
//! - `status`: status codes, `deconv_last_error`, and `run`, the boundary every call goes
//!   through (an error or a panic becomes a status and a message);
//! - `config`: the `int` codes and `deconv_config` / `deconv_update_args` with their fillers;
//! - `layer`: the handle (create, clone, free) and its queries;
//! - `buffers`: `deconv_buffer` codes, pointers to the layer's buffers, copies in and out;
//! - `passes`: forward, backward, update, resize, bilinear init, denormalize;
//! - `darknet`: Darknet `.weights` files and bytes, cfg sections;
//! - `distributed`: data-parallel training through the caller's collective callbacks (MPI);
//! - `args`: checks of pointer arguments (no C functions);
//! - `tests`: the tests, calling the functions as C does.
//!
//! A new concern gets a new file with its own `mod` line (its place in the list is its place in
//! the header) and a `pub use` below.

#![allow(non_camel_case_types)]
#![warn(clippy::undocumented_unsafe_blocks)]

// In header order (rustfmt keeps blank-line-separated `mod` lines where they are).
mod status;

mod config;

mod layer;

mod buffers;

mod passes;

mod darknet;

mod distributed;

mod args;

mod precision;

mod threads;

#[cfg(test)]
mod tests;

pub use buffers::*;
pub use config::*;
pub use darknet::*;
pub use distributed::*;
pub use layer::*;
pub use passes::*;
pub use precision::*;
pub use status::*;
pub use threads::*;
