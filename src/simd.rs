//! Runtime selection of vector instructions for the crate's own loops.
//!
//! The crate is compiled for the baseline of its target (SSE2 on x86-64), which leaves the
//! loops around the GEMMs (col2im, im2col, batch norm, activations) four floats wide. GEMM
//! libraries pick their kernels at run time; [`multiversion!`] does the same for a function: it
//! compiles the body three times (AVX-512, AVX2+FMA, baseline) and calls the widest one the CPU
//! supports. Helpers the body calls must be `#[inline(always)]` to be compiled along with it.

/// Defines `fn $name<T: Element>(args)` whose body runs compiled for the widest vector
/// extension the CPU supports.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident<$t:ident: Element>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        multiversion! { $(#[$meta])* $vis fn $name<$t: Element>($($arg: $ty),*) -> () $body }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident<$t:ident: Element>($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$meta])*
        $vis fn $name<$t: Element>($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn body<$t: Element>($($arg: $ty),*) -> $ret $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512<$t: Element>($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2<$t: Element>($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: `avx512` needs only AVX-512F, which the CPU has (checked above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: `avx2` needs only AVX2 and FMA, which the CPU has (checked above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;
