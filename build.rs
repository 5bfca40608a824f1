//! Build script. Its job: tell the crate which GEMM backends this build compiles in, by writing
//! `$OUT_DIR/compiled_backends.rs` (`COMPILED_BACKENDS`, used in reports, benches and examples),
//! and fail early with a clear message when no backend feature is enabled.

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
}
