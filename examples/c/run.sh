#!/usr/bin/env bash
# Builds libdeconv.a with the C API, compiles the C programs in examples/c/ against it with `cc`
# and runs them: deconv_example.c checks a forward pass and an SGD step against hand-computed
# values (it exits non-zero on any mismatch); minimal.c is README.md's example (checked to be
# identical to the README's C block).
#
#   examples/c/run.sh                 # default backend (matrixmultiply), release build
#   FEATURES=capi,openblas examples/c/run.sh   # with OpenBLAS (needs libopenblas-dev)
#   PROFILE=debug examples/c/run.sh
#
# The link line is libdeconv.a plus the native libraries rustc reports with
# `--print native-static-libs` (e.g. -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc, and
# -lopenblas with the openblas feature).
set -euo pipefail
cd "$(dirname "$0")/../.."

FEATURES="${FEATURES:-capi}"
PROFILE="${PROFILE:-release}"
CC="${CC:-cc}"
case "$PROFILE" in
    release) profile_flag=(--release) ;;
    debug) profile_flag=() ;;
    *) echo "PROFILE must be release or debug" >&2; exit 2 ;;
esac
target_dir="$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
out="$target_dir/$PROFILE"

# Build the static library and capture the native libraries it needs (cargo replays the note
# when the build is fresh).
log="$(cargo rustc "${profile_flag[@]}" --lib --features "$FEATURES" --crate-type staticlib \
    -- --print native-static-libs 2>&1)" || { echo "$log" >&2; exit 1; }
native="$(printf '%s\n' "$log" | sed -n 's/.*note: native-static-libs: //p' | tail -n 1)"
if [ -z "$native" ]; then
    native="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
    case ",$FEATURES," in *,openblas,*) native="-lopenblas $native" ;; esac
    echo "(no native-static-libs note from rustc; using the fixed list)"
fi

cflags=(-std=c99 -Wall -Wextra -Werror -pedantic -Iinclude)
for name in deconv_example minimal; do
    exe="$out/c_$name"
    echo "+ $CC ${cflags[*]} examples/c/$name.c $out/libdeconv.a $native -o $exe"
    # shellcheck disable=SC2086 # $native is a list of flags
    "$CC" "${cflags[@]}" "examples/c/$name.c" "$out/libdeconv.a" $native -o "$exe"
    echo "+ $exe $out/c_example.weights"
    "$exe" "$out/c_example.weights"
done

# README.md's C example is examples/c/minimal.c, verbatim.
if ! diff -u <(sed -n '/^```c$/,/^```$/p' README.md | sed '1d;$d') examples/c/minimal.c; then
    echo "README.md's C example differs from examples/c/minimal.c (diff above)" >&2
    exit 1
fi
