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
                match $crate::simd::level() {
                    // SAFETY: `avx512` needs only AVX-512F, which `level` found on the CPU.
                    $crate::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `avx2` needs only AVX2 and FMA, which `level` found on the CPU.
                    $crate::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Level::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// The instruction sets [`multiversion!`] compiles a body for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// AVX-512F.
    Avx512,
    /// AVX2 and FMA.
    Avx2,
    /// The target's baseline (SSE2 on x86-64).
    Baseline,
}

/// The widest [`Level`] this CPU supports (std caches the CPUID reads).
#[inline]
pub(crate) fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// Copies `src` to `dst` with non-temporal stores (past the caches, no read of the lines
/// first), where the target has them and `dst` is 16-byte aligned; returns whether it did (else
/// `dst` is untouched). A caller that stored this way calls [`stream_fence`] before its
/// results are read by another thread.
#[inline(always)]
pub(crate) fn stream_copy<T: Copy, const N: usize>(dst: &mut [T; N], src: &[T; N]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let bytes = std::mem::size_of::<[T; N]>();
        let (d, s) = (dst.as_mut_ptr().cast::<u8>(), src.as_ptr().cast::<u8>());
        if !(d as usize).is_multiple_of(16) || !bytes.is_multiple_of(16) {
            return false;
        }
        for i in (0..bytes).step_by(16) {
            // SAFETY: `i + 16 <= bytes`, the size of both arrays, so both 16-byte accesses lie
            // inside them; `d + i` is 16-byte aligned (checked above) as `_mm_stream_si128`
            // requires, `_mm_loadu_si128` has no alignment requirement, and SSE2 is part of
            // x86_64. `T: Copy`, so its bytes may be copied as they are.
            unsafe {
                let v = _mm_loadu_si128(s.add(i).cast::<__m128i>());
                _mm_stream_si128(d.add(i).cast::<__m128i>(), v);
            }
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dst, src);
        false
    }
}

/// Orders earlier [`stream_copy`] stores before later stores (they are weakly ordered).
#[inline(always)]
pub(crate) fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_sfence` has no preconditions; SSE is part of x86_64.
    unsafe {
        std::arch::x86_64::_mm_sfence();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The level the CPU should give: `DECONV_EXPECT_ISA` where set, else read from the
    /// kernel's CPU flags (Linux), a source independent of the CPUID reads behind [`level`].
    /// `.ci/run` runs the tests a second and third time under qemu, with CPU models that lack
    /// AVX-512 and AVX, so that the AVX2 and baseline bodies are tested too; qemu's user mode
    /// shows the host's `/proc/cpuinfo`, so those runs name their level in the variable.
    fn expected_level() -> Option<String> {
        if let Ok(expected) = std::env::var("DECONV_EXPECT_ISA") {
            return Some(expected);
        }
        if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            return None;
        }
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))?
            .split_whitespace()
            .collect();
        let has = |f: &str| flags.contains(&f);
        Some(if has("avx512f") {
            "avx512".into()
        } else if has("avx2") && has("fma") {
            "avx2".into()
        } else {
            "baseline".into()
        })
    }

    /// The vector bodies that run are the ones the CPU (or the CI step) calls for: a wrong
    /// level under qemu would silently test the wrong bodies.
    #[test]
    fn instruction_set_is_the_expected_one() {
        let found = format!("{:?}", level()).to_lowercase();
        match expected_level() {
            Some(expected) => assert_eq!(found, expected, "not the expected vector level"),
            None => eprintln!("vector instructions in use: {found} (nothing to compare with)"),
        }
    }
}
