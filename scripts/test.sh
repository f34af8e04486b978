#!/usr/bin/env bash
# Runs pvh's whole test suite: unit tests over mock guest memory, KVM tests
# and integration boots (the test guest through both hypercall transports,
# Debian's 6.1 and 6.12 cloud kernels). KVM tests need /dev/kvm and say so
# when they skip.
#
# A hung test must fail the run with evidence, not use up CI's clock: output
# is line-buffered (so the log ends where the run stopped), and after
# PVH_TEST_LIMIT seconds (default 2400) every thread of the test process is
# printed (gdb) and the run is killed with exit 124.
#
# After the tests, scripts/api-check.sh fuzzes the daemon's API against its
# OpenAPI document with schemathesis (about 3 minutes at most). Then every
# fuzz target runs for PVH_FUZZ_SECONDS seconds each (default 15; 0 skips fuzzing) through scripts/fuzz.sh, whose runs are
# bounded too; a crash fails the run and keeps its input in Fuzz/crashes/.
# Last, scripts/sanitize.sh builds and runs its bounded set under each
# sanitizer PVH_SANITIZERS names (comma-separated; default address,thread,
# thread measured at about 6.5 min on a lightly loaded machine; none skips): any report fails
# the run. They build in .build, whose
# dependencies the debug build above compiled, so each recompiles only
# pvh's own targets (docs/ARCHITECTURE.md, Sanitizers, has the costs); the
# debug build's pvh targets are recompiled by the next `swift build`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build
limit=${PVH_TEST_LIMIT:-2400}
deadline=$((SECONDS + limit))
# One `swift test` process, killed with its threads printed at the deadline.
run_tests() {
    setsid stdbuf -oL -eL swift test "$@" &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 5
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "test.sh: swift test still running after ${limit} s; the test process's threads:" >&2
        for p in $(pgrep -f 'PackageTests\.xctest' || true); do
            gdb -p "$p" -batch -ex 'info threads' -ex 'thread apply all bt 30' 2>&1 \
                | grep -v -e '^\[New LWP' -e '^warning:' >&2 || true
        done
        kill -KILL -- -"$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        exit 124
    fi
    wait "$pid"
}
if [ "$#" -gt 0 ]; then
    run_tests "$@"
else
    # The API tests are async: each waits for its in-process server on
    # Swift's cooperative pool, one thread per core, which the integration
    # tests' blocking waits (a guest's boot, a daemon's answer) can hold
    # for minutes on a 2-core machine, until the API tests' 60 s bounds
    # expire. They run in a process of their own, after the rest.
    run_tests --skip PVHAPITests
    run_tests --skip-build --filter PVHAPITests
fi
# The API against docs/api/openapi.json (schemathesis; bounded, see the script).
bash scripts/api-check.sh
fuzz_seconds=${PVH_FUZZ_SECONDS:-15}
if [ "$fuzz_seconds" -gt 0 ]; then
    bash scripts/fuzz.sh --seconds "$fuzz_seconds"
fi
sanitizers=${PVH_SANITIZERS:-address,thread}
if [ "$sanitizers" != none ]; then
    IFS=, read -ra chosen <<<"$sanitizers"
    for s in "${chosen[@]}"; do
        PVH_SANITIZE_SCRATCH=.build bash scripts/sanitize.sh "$s"
    done
fi
