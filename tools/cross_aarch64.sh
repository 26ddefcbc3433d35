#!/usr/bin/env bash
# The aarch64 baseline: cross-compiles the kernels (scalar ISA: NEON through
# the GCC vector extensions), the thread pool and tools/kernel_check.cpp with
# Debian's g++-aarch64-linux-gnu, and runs the check under qemu-aarch64.
# (No aarch64 Python here: the Python suite on aarch64 runs in the wheel
# workflow, on an aarch64 runner.)
#
#   apt-get install -y g++-aarch64-linux-gnu qemu-user cmake ninja-build
#   tools/cross_aarch64.sh [BUILD_DIR]      (default build/cross-aarch64)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/cross-aarch64}
CXX=${CXX_AARCH64:-aarch64-linux-gnu-g++}
SYSROOT=${QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}
for tool in "$CXX" qemu-aarch64 cmake; do
  command -v "$tool" >/dev/null || { echo "missing $tool (see the header of $0)" >&2; exit 2; }
done
GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)

mkdir -p "$BUILD"
cat > "$BUILD/toolchain.cmake" <<TOOLCHAIN
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_CXX_COMPILER $CXX)
set(CMAKE_FIND_ROOT_PATH $SYSROOT)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
TOOLCHAIN
cmake -S . -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_TOOLCHAIN_FILE="$BUILD/toolchain.cmake" \
  -DCMAKE_BUILD_TYPE=Release -DBNFAST_KERNEL_CHECK=ON -DBNFAST_WERROR=ON
cmake --build "$BUILD" --target bnfast_kernel_check
file "$BUILD/bnfast_kernel_check" | grep -q "ARM aarch64" || { echo "not an aarch64 binary" >&2; exit 1; }
QEMU_LD_PREFIX=$SYSROOT qemu-aarch64 "$BUILD/bnfast_kernel_check"
