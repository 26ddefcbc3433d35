#!/usr/bin/env bash
# Build bnfast with AddressSanitizer + UndefinedBehaviorSanitizer into a fresh
# virtual environment and run the test suite (or the pytest arguments given)
# against it.
#
#   tools/sanitize.sh [--dir DIR] [--reuse] [--torch] [--] [PYTEST ARGS...]
#
#   --dir DIR  put the venv and the build tree in DIR (default: a new
#              temporary directory, removed after a clean run)
#   --reuse    keep the venv and build of an earlier run in DIR: only
#              rebuild what changed, do not reinstall the dependencies
#   --torch    also install the pinned PyTorch (the parity oracle; without
#              it the torch tests are skipped)
#
# Examples:
#   tools/sanitize.sh                                # the whole suite
#   tools/sanitize.sh --dir /tmp/asan tests/test_fuzz.py tests/test_kernels.py
#   BNFAST_FUZZ_EXAMPLES=200 tools/sanitize.sh --dir /tmp/asan --reuse tests/test_fuzz.py
#
# The flags reach CMake through scikit-build-core (no CMakeLists.txt change):
# every C++ file is compiled with -fsanitize=address,undefined and UBSan stops
# at the first error (-fno-sanitize-recover=undefined). The interpreter is not
# instrumented, so the ASan runtime is preloaded into it (LD_PRELOAD, also
# inherited by the child processes the tests start), Python allocates with
# malloc (PYTHONMALLOC=malloc) so that ASan sees its buffers too, and leak
# detection is off (CPython leaks by design at exit). Exit status: pytest's
# (non-zero on the first sanitizer report, which ends the process).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR=""
REUSE=0
TORCH=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) DIR="$2"; shift 2 ;;
        --dir=*) DIR="${1#--dir=}"; shift ;;
        --reuse) REUSE=1; shift ;;
        --torch) TORCH=1; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
TEMP_DIR=0
if [[ -z "$DIR" ]]; then
    DIR="$(mktemp -d "${TMPDIR:-/tmp}/bnfast-sanitize.XXXXXX")"
    TEMP_DIR=1
fi
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
VENV="$DIR/venv"
PY="$VENV/bin/python"

CXX="${CXX:-c++}"
SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
LIBASAN="$("$CXX" -print-file-name=libasan.so)"
if [[ ! -e "$LIBASAN" ]]; then
    echo "sanitize.sh: $CXX has no libasan.so (install the compiler's sanitizer runtime)" >&2
    exit 2
fi

if [[ $REUSE -eq 0 || ! -x "$PY" ]]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install -q --disable-pip-version-check --upgrade pip
    # The build backend and its tools once, then builds without isolation (so
    # that --reuse only recompiles what changed).
    "$PY" -m pip install -q --disable-pip-version-check "scikit-build-core>=0.10" "pybind11>=2.12"
    if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
        "$PY" -m pip install -q --disable-pip-version-check "cmake>=3.18" ninja
    fi
fi
if [[ $TORCH -eq 1 ]] && ! "$PY" -c "import torch" 2>/dev/null; then
    # The CPU build of the version CI pins (.ci/run).
    "$PY" -m pip install -q --disable-pip-version-check torch==2.13.0 \
        --index-url https://download.pytorch.org/whl/cpu
fi

echo "== building bnfast with ASan + UBSan into $VENV"
# RelWithDebInfo: -O2 -g, line numbers in the reports (and pybind11 neither
# strips the module nor adds LTO for it).
"$PY" -m pip install -q --disable-pip-version-check --no-build-isolation \
    "$ROOT[test]" \
    -Ccmake.build-type=RelWithDebInfo \
    -Ccmake.define.CMAKE_CXX_FLAGS="$SAN_FLAGS" \
    -Ccmake.define.CMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
    -Cbuild-dir="$DIR/build"

# (Located without importing it: that needs the preloaded runtime.)
MODULE="$("$PY" -c 'import glob, importlib.util, os
package = importlib.util.find_spec("bnfast").submodule_search_locations[0]
print(glob.glob(os.path.join(package, "_core*.so"))[0])')"
if ! ldd "$MODULE" | grep -q libasan; then
    echo "sanitize.sh: $MODULE is not linked with libasan: the flags did not reach the build" >&2
    exit 2
fi
echo "== instrumented: $MODULE"

# Reports go to files: pytest captures the test's stderr, and a process the
# sanitizer aborts never prints what was captured.
REPORTS="$DIR/reports"
rm -rf "$REPORTS"
mkdir -p "$REPORTS"
export LD_PRELOAD="$LIBASAN${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:strict_init_order=1:detect_stack_use_after_return=1:log_path=$REPORTS/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$REPORTS/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONMALLOC=malloc
"$PY" -c "import bnfast; bnfast.show_config()"

# Deselected: the CLI's peak-memory test measures a child's peak RSS, which
# ASan's shadow memory and quarantine inflate far beyond its bound by design.
DESELECT=(--deselect "tests/cli/test_cli_main.py::test_peak_memory_bounded_by_chunk_size")
if [[ $# -eq 0 ]]; then
    set -- tests
fi
cd "$ROOT"
status=0
"$PY" -m pytest -q -p no:cacheprovider "${DESELECT[@]}" "$@" || status=$?
shopt -s nullglob
reports=("$REPORTS"/*)
if [[ ${#reports[@]} -gt 0 ]]; then
    for report in "${reports[@]}"; do
        echo "== sanitizer report $report" >&2
        cat "$report" >&2
    done
    [[ $status -ne 0 ]] || status=1
    echo "sanitize.sh: ${#reports[@]} sanitizer report(s)" >&2
else
    echo "== no sanitizer report"
fi
if [[ $status -eq 0 && $TEMP_DIR -eq 1 ]]; then
    rm -rf "$DIR"
elif [[ $TEMP_DIR -eq 1 ]]; then
    echo "sanitize.sh: kept $DIR (rerun with --dir $DIR --reuse)" >&2
fi
exit $status
