#!/usr/bin/env bash
# The whole test suite, as `make check` and CI run it. Each stage is one
# make target; all run even when one fails, and the closing line counts them.
set -u
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
passed=0 failed=0 failures=()

stage() {
	local name=$1; shift
	local t0=$SECONDS
	echo
	echo "=================== $name: $*"
	if "$@"; then
		passed=$((passed + 1))
		echo "=================== $name: ok ($((SECONDS - t0)) s)"
	else
		failed=$((failed + 1))
		failures+=("$name")
		echo "=================== $name: FAILED ($((SECONDS - t0)) s)"
	fi
}

stage build         $MAKE -j"$JOBS" all
stage header-test   $MAKE header-test
stage install-test  $MAKE install-test
stage unit          $MAKE -j"$JOBS" unit
stage pid1          $MAKE pid1
stage sim           $MAKE sim-test
stage integration   $MAKE integration
stage examples      $MAKE examples-test
stage san-build     $MAKE -j"$JOBS" SAN=1 all
stage san-unit      $MAKE -j"$JOBS" SAN=1 unit
stage san-pid1      $MAKE SAN=1 pid1
stage san-integration $MAKE SAN=1 integration
stage valgrind-pid1 $MAKE pid1-valgrind
stage valgrind-integration $MAKE integration-valgrind
stage lint          $MAKE lint
stage fuzz          $MAKE fuzz FUZZ_TIME=${FUZZ_TIME:-30}
stage alloc-torture $MAKE torture
stage layer         $MAKE layer-test
stage image         $MAKE image-test

echo
if [ "$failed" -gt 0 ]; then
	echo "failed stages: ${failures[*]}"
fi
echo "check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
