#!/usr/bin/env bash
# Builds pvh and its tests under a sanitizer and runs a bounded set of them
# (issue 13 item 7; docs/ARCHITECTURE.md, Sanitizers).
#
#   scripts/sanitize.sh address|thread [--filter REGEX ...] [--list]
#
# address is AddressSanitizer (heap/stack overflows, use-after-free),
# thread is ThreadSanitizer (data races). Both build pvh's own targets, C
# shims included, instrumented (the package traits AddressSanitizer and
# ThreadSanitizer, Package.swift) and its dependencies as a debug build does,
# in the scratch path PVH_SANITIZE_SCRATCH (default .build/sanitize, shared
# by both: a second run or the other sanitizer recompiles only pvh's
# targets; scripts/test.sh passes .build, whose dependencies its debug build
# has compiled). PVH_SANITIZE_DEPENDENCIES=1 instruments the dependencies
# too (SwiftPM's --sanitize; slower, a scratch path of its own). Without --filter the default set runs: the unit tests that drive the
# state machines from several threads and the unsafe-pointer layers, and
# three KVM integration boots (the test guest, block, net); --list prints
# it. Any report stops the test process (halt_on_error) and fails the run
# (exit 1); so does a build failure. The run is bounded: after
# PVH_SANITIZE_LIMIT seconds (default 900) it is killed (exit 124).
# ThreadSanitizer reads scripts/tsan-suppressions.txt (every entry says why).
set -euo pipefail
cd "$(dirname "$0")/.."

# Unit test targets: the lock, rings, the device runtime's threads, the backends with
# their engines and links, the state machines, the pointer layers.
units=(LockingTests XenRingTests DeviceRuntimeTests BlockBackendTests NetBackendTests EventChannelsTests GrantTablesTests
       XenStoreTests HostIOTests ConsoleBackendTests ToolstackTests GuestMemoryTests KVMTests)
# Integration: one test-guest boot (every core scenario, vCPU and device
# threads), every blkfront scenario, user networking through passt.
integration=('IntegrationTests\.TestGuestBootTests/hypercallPage\('
             'IntegrationTests\.BlockDeviceScenarioTests/scenarios\('
             'IntegrationTests\.NetworkScenarioTests/userNetworking\(')

sanitizer=${1:-}
# The trait instruments pvh's targets (Package.swift); ThreadSanitizer also
# enables TSanAnnotations: Lock annotates its lock and unlock
# (Sources/Locking: TSan cannot see Synchronization.Mutex's futex).
case "$sanitizer" in
    address) traits=(--traits AddressSanitizer) ;;
    thread) traits=(--traits ThreadSanitizer,TSanAnnotations) ;;
    -h|--help|"") sed -n '2,21p' "$0"; [ -n "$sanitizer" ]; exit $? ;;
    *) echo "sanitize.sh: unknown sanitizer '$sanitizer' (address or thread)" >&2; exit 2 ;;
esac
shift
filters=()
list=0
while [ $# -gt 0 ]; do
    case "$1" in
        --filter) filters+=("$2"); shift 2 ;;
        --list) list=1; shift ;;
        *) echo "sanitize.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ ${#filters[@]} -eq 0 ]; then
    filters=("^($(IFS='|'; echo "${units[*]}"))\\." "${integration[@]}")
fi
if [ $list -eq 1 ]; then printf '%s\n' "${filters[@]}"; exit 0; fi
scratch=${PVH_SANITIZE_SCRATCH:-.build/sanitize}
# PVH_SANITIZE_DEPENDENCIES=1: SwiftPM's --sanitize instead, which
# instruments the dependencies too (SwiftNIO, Hummingbird, BoringSSL); a
# scratch path of its own, as it shares nothing with a debug build.
if [ "${PVH_SANITIZE_DEPENDENCIES:-0}" = 1 ]; then
    case "$sanitizer" in
        address) traits=(--sanitize=address) ;;
        thread) traits=(--sanitize=thread --traits TSanAnnotations) ;;
    esac
    scratch=${PVH_SANITIZE_SCRATCH:-.build/sanitize-all-$sanitizer}
fi

start=$SECONDS
# nice: a sanitizer build is heavy and CI's two cores are shared.
# (pipefail: the pipeline fails when the build does, whatever grep finds.)
if ! nice -n 10 swift build --build-tests "${traits[@]}" --scratch-path "$scratch" 2>&1 \
        | { grep -v -e 'CMakeLists.txt' -e "swift-distributed-tracing'" || true; }; then
    echo "sanitize.sh: $sanitizer build failed" >&2
    exit 1
fi
echo "sanitize.sh: $sanitizer: built in $((SECONDS - start)) s"

bin=$(swift build "${traits[@]}" --scratch-path "$scratch" --show-bin-path)
# The integration tests that start pvh start this build's.
export PVH_BINARY=$bin/pvh
# Swift's backtracer would take the signal a report ends with first.
export SWIFT_BACKTRACE=enable=no
symbolizer=$(dirname "$(readlink -f "$(command -v swift)")")/llvm-symbolizer
# LeakSanitizer is off: process-lifetime caches (Foundation, the Swift
# runtime's metadata, the test library) would be reported at exit; leaks
# are not what this run is for (pvh-bench toolstack measures RSS).
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=0:external_symbolizer_path=$symbolizer"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:external_symbolizer_path=$symbolizer:suppressions=$PWD/scripts/tsan-suppressions.txt"

args=()
for f in "${filters[@]}"; do args+=(--filter "$f"); done
limit=${PVH_SANITIZE_LIMIT:-900}
run_start=$SECONDS
status=0
# timeout signals its whole process group: swift test and the test process.
timeout -s KILL "$limit" stdbuf -oL -eL swift test --skip-build "${traits[@]}" --scratch-path "$scratch" "${args[@]}" \
    || status=$?
if [ $status -eq 137 ]; then
    echo "sanitize.sh: $sanitizer: tests still running after ${limit} s; killed" >&2
    exit 124
fi
if [ $status -ne 0 ]; then
    echo "sanitize.sh: $sanitizer: FAILED (exit $status) after $((SECONDS - run_start)) s" >&2
    exit 1
fi
echo "sanitize.sh: $sanitizer: clean, tests took $((SECONDS - run_start)) s"
