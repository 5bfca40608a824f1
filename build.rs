//! Build script. Its job: tell the crate which GEMM backends this build compiles in, by writing
//! `$OUT_DIR/compiled_backends.rs` (`COMPILED_BACKENDS`, used in reports, benches and examples),
//! and fail early with a clear message when no backend feature is enabled. With the `capi`
//! feature it also generates the C header from `src/capi/mod.rs` with cbindgen (`cbindgen.toml`)
//! into `$OUT_DIR/deconv.h`; a test in `src/capi/mod.rs` (and `.ci/run`) checks that the committed
//! `include/deconv.h` equals it. `DECONV_WRITE_HEADER=1 cargo build --features capi` rewrites
//! `include/deconv.h` after a change to the C API.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let mut backends = Vec::new();
    if env::var_os("CARGO_FEATURE_MATRIXMULTIPLY").is_some() {
        backends.push("matrixmultiply");
    }
    if env::var_os("CARGO_FEATURE_OPENBLAS").is_some() {
        backends.push("openblas");
    }
    if backends.is_empty() {
        panic!(
            "deconv needs at least one GEMM backend: enable the `matrixmultiply` feature \
             (default, pure Rust) or `openblas` (needs libopenblas-dev)"
        );
    }
    let list: Vec<String> = backends.iter().map(|b| format!("{b:?}")).collect();
    let code = format!(
        "/// The GEMM backends compiled into this build, by feature name.\n\
         pub const COMPILED_BACKENDS: &[&str] = &[{}];\n",
        list.join(", ")
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("compiled_backends.rs"), code).expect("write compiled_backends.rs");
    #[cfg(feature = "capi")]
    generate_header(&out);
}

/// Writes `$OUT_DIR/deconv.h` (and `include/deconv.h` when `DECONV_WRITE_HEADER` is set).
#[cfg(feature = "capi")]
fn generate_header(out: &std::path::Path) {
    println!("cargo:rerun-if-changed=src/capi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=DECONV_WRITE_HEADER");
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    // Only `src/capi/mod.rs` is parsed: every type of the C API is declared there.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/capi/mod.rs"))
        .generate()
        .expect("cbindgen: generate the C header from src/capi/mod.rs");
    bindings.write_to_file(out.join("deconv.h"));
    if env::var_os("DECONV_WRITE_HEADER").is_some_and(|v| !v.is_empty() && v != "0") {
        bindings.write_to_file(dir.join("include/deconv.h"));
    }
}
