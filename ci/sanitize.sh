#!/usr/bin/env bash
# The queue tests against a build of the native core with AddressSanitizer and
# UndefinedBehaviorSanitizer (CMake option SAGE_QUEUE_SANITIZE, set by SAGE_SANITIZE=1).
# First the core's C++ unit tests (CMake option SAGE_QUEUE_TESTS) under the same sanitizers.
# Works on a copy of the sources in a temporary directory with its own venv, so the
# in-place module of this tree is never replaced by the sanitized one.
#   ci/sanitize.sh [extra pytest arguments]      (KEEP=1 keeps the temporary directory)
# Fails if a test fails or any process (pytest, its workers, their forked children)
# wrote a sanitizer report.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
start=$(date +%s)
work="$(mktemp -d /tmp/sage-sanitize.XXXXXX)"
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "sanitize: kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

echo "== copy sources to $work/src"
mkdir "$work/src" "$work/reports"
tar -C "$repo" -cf - --exclude=.git --exclude='.venv*' --exclude=build --exclude='*.so' \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis --exclude=.tox \
    --exclude='*.egg-info' . | tar -C "$work/src" -xf -

echo "== venv"
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --disable-pip-version-check pybind11 setuptools wheel \
    pytest pytest-xdist pytest-timeout hypothesis

echo "== build the native core with ASan + UBSan"
(cd "$work/src" && SAGE_SANITIZE=1 SAGE_BUILD_NATIVE=1 SAGE_BUILD_TYPE=RelWithDebInfo \
    "$py" setup.py -q build_ext --inplace)
so="$(ls "$work"/src/sage_ext/sage_queue/python/_native*.so)"
readelf -d "$so" | grep -q 'NEEDED.*libasan' || { echo "sanitize: $so is not linked with ASan" >&2; exit 1; }

echo "== C++ unit tests of the core (ctest), with ASan + UBSan"
cmake_bin="$(command -v cmake || "$py" -c 'import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, "cmake"))')"
"$cmake_bin" -S "$work/src/sage_ext/sage_queue" -B "$work/unit" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSAGE_QUEUE_PYTHON=OFF -DSAGE_QUEUE_TESTS=ON -DSAGE_QUEUE_SANITIZE=ON > "$work/unit.log"
"$cmake_bin" --build "$work/unit" -j2 >> "$work/unit.log" || { cat "$work/unit.log"; exit 1; }
(cd "$work/unit" && ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$(dirname "$cmake_bin")/ctest" --output-on-failure)

asan="$(gcc -print-file-name=libasan.so)"
ubsan="$(gcc -print-file-name=libubsan.so)"
for lib in "$asan" "$ubsan"; do
    [ -f "$lib" ] || { echo "sanitize: $lib not found (install gcc's libasan/libubsan)" >&2; exit 1; }
done

tests=(tests/test_sage_queue.py tests/test_sage_queue_lifecycle.py tests/test_item_codec.py tests/test_sage_queue_faults.py tests/test_segment_files.py
       tests/reliability/test_crash_harness.py
       tests/reliability/test_hostile_fuzz.py tests/test_segment_trust.py tests/test_segment_corruption.py)
[ -f "$work/src/tests/reliability/test_model_fuzz.py" ] && tests+=(tests/reliability/test_model_fuzz.py)

echo "== ${tests[*]}"
# Python is not instrumented, so the runtimes are preloaded (ASan first); forked children
# inherit them. CPython leaks at exit by design: no leak checks. ASan reports go to files
# (one per process, so a killed or forked child's report is never lost); UBSan ignores
# log_path when combined with ASan, so output is not captured (-s) and its reports land in
# the log. A test stuck in a native wait cannot be interrupted by a signal: the thread
# timeout method ends its worker instead, and `timeout` bounds the whole run.
set +e
(cd "$work/src" && \
    LD_PRELOAD="$asan $ubsan" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$work/reports/asan" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    SAGE_REQUIRE_NATIVE=1 SAGE_TEST_TIME_SCALE=3 PYTHONPATH="$work/src" \
    timeout -k 10 "${SANITIZE_TIMEOUT:-1200}" \
    "$py" -m pytest -n 2 -q -s -p no:cacheprovider --timeout-method=thread "${tests[@]}" "$@") 2>&1 \
    | tee "$work/pytest.log"
status=${PIPESTATUS[0]}
set -e

reports=$(find "$work/reports" -type f | wc -l)
mentions=$(grep -cE 'ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer' \
    "$work/pytest.log" || true)
if [ "$reports" -gt 0 ]; then
    echo "== sanitizer reports"
    for f in "$work"/reports/*; do echo "--- $f"; head -60 "$f"; done
fi
result=$(grep -E '[0-9]+ (passed|failed|errors?)\b.* in [0-9.]+s' "$work/pytest.log" | tail -1 | tr -d '=' | xargs || true)
echo "sanitize: ${result:-no pytest result} | sanitizer reports: $reports files, $mentions in output | $(( $(date +%s) - start )) s"
[ "$status" -eq 0 ] && [ "$reports" -eq 0 ] && [ "$mentions" -eq 0 ]
