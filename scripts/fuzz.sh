#!/usr/bin/env bash
# Builds pvh's libFuzzer targets (the Fuzz/ package, one build for all) and
# runs each for a bounded time (issue 13 item 1; docs/ARCHITECTURE.md, Fuzzing).
#
#   scripts/fuzz.sh [--seconds N] [--runs N] [--regression] [TARGET...]
#
# TARGET is a name under Fuzz/Sources without its fuzz- prefix (xenstore,
# xlconfig, devicespecs, pvhboot, hypercalls, blkif, netif, grants,
# byterings, apijson); all of them by default. Each
# target starts from its seeds in Fuzz/corpus/<target>/ and keeps what it
# finds in Fuzz/.build/corpus/<target>/ (not committed: the seeds are).
# --runs N stops each target after N executions (libFuzzer's -runs) instead
# of after 60 s; with --seconds too, whichever comes first.
# --regression runs every target over its corpora once, no new inputs.
# A crash, a failed check (precondition), an input slower than 10 s or one
# needing more than 2 GiB fails the run (exit 1); the input is kept in
# Fuzz/crashes/ and its path printed, to become a unit test's byte literal.
# Every run is bounded: a target that outlives its time by 60 s is killed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
seconds_given=0
runs=0
regression=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; seconds_given=1; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --regression) regression=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
case "$seconds$runs" in *[!0-9]*) echo "fuzz.sh: --seconds and --runs take a number" >&2; exit 2 ;; esac
# Bounded by executions only: a day at most (the kill below still applies).
if [ "$runs" -gt 0 ] && [ $seconds_given -eq 0 ]; then seconds=86400; fi
if [ ${#targets[@]} -eq 0 ]; then
    for d in Fuzz/Sources/fuzz-*/; do t=${d%/}; targets+=("${t#Fuzz/Sources/fuzz-}"); done
fi
for t in "${targets[@]}"; do
    [ -d "Fuzz/Sources/fuzz-$t" ] || { echo "fuzz.sh: no target '$t' (Fuzz/Sources/fuzz-$t)" >&2; exit 2; }
done

# -sanitize=fuzzer instruments every Swift module of this build for coverage
# and links libFuzzer; gold fails on these links (an internal error), lld
# does not.
start=$SECONDS
swift build --package-path Fuzz -c release -Xswiftc -sanitize=fuzzer -Xswiftc -use-ld=lld 2>&1 \
    | grep -v -e 'CMakeLists.txt' -e "swift-distributed-tracing'" || true
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz.sh: build failed" >&2; exit 1; }
bin=$(swift build --package-path Fuzz -c release -Xswiftc -sanitize=fuzzer -Xswiftc -use-ld=lld --show-bin-path)
echo "fuzz.sh: built in $((SECONDS - start)) s"

mkdir -p Fuzz/crashes
# Swift's own backtracer would take a failed precondition's SIGILL before
# libFuzzer's handler, which then never writes the input to Fuzz/crashes/.
export SWIFT_BACKTRACE=enable=no
failed=()
for t in "${targets[@]}"; do
    work=Fuzz/.build/corpus/$t
    mkdir -p "$work"
    log=Fuzz/.build/fuzz-$t.log
    flags=(-timeout=10 -rss_limit_mb=2048 -artifact_prefix="Fuzz/crashes/$t-" -print_final_stats=1)
    if [ $regression -eq 1 ]; then
        flags+=(-runs=0)
    else
        flags+=(-max_total_time="$seconds")
        [ "$runs" -gt 0 ] && flags+=(-runs="$runs")
    fi
    status=0
    timeout -s KILL $((seconds + 60)) "$bin/fuzz-$t" "${flags[@]}" "$work" "Fuzz/corpus/$t" >"$log" 2>&1 || status=$?
    executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    took=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 || true)
    if [ $status -eq 0 ]; then
        echo "fuzz.sh: $t: ok, ${executed:-?} executions, ${took:-?} exec/s, ${cov:-cov: ?}, ${ft:-ft: ?}"
    else
        failed+=("$t")
        echo "fuzz.sh: $t: FAILED (exit $status); the end of $log:" >&2
        tail -40 "$log" >&2
        ls -1 "Fuzz/crashes/$t-"* 2>/dev/null | sed 's/^/fuzz.sh: kept input: /' >&2 || true
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: failed: ${failed[*]}" >&2
    exit 1
fi
