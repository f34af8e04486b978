#!/usr/bin/env bash
# The API against its OpenAPI document with schemathesis (issue 12, "Done
# when": an API test client finds no server error and no response that
# breaks the schema). A `pvh daemon` runs on temporary sockets with two
# test guests (testguest/build/testguest.elf, `make -C testguest`), named
# apicheck and apicheck2, which a background loop creates again whenever
# the fuzzer has destroyed or shut one down (every 2 s, while it runs);
# every {name} parameter is apicheck (schemathesis' parameters setting,
# the config written below), so the per-domain operations reach their
# logic rather than 404. socat forwards a loopback TCP port to its Unix
# API socket (schemathesis speaks TCP only); schemathesis fuzzes every
# operation, with every check it has, for at most PVH_API_CHECK_SECONDS
# (default 150).
#
# Answers may take up to 20 s (--max-response-time): with live guests some
# routes wait, bounded at 10 s, for a guest the fuzzer just restarted to
# introduce its domain (memory, vCPUs) or for a dying one's process to be
# reaped (DELETE); schemathesis' own 10 s limit fell a few ms short of that.
#
# The ?wait routes are bounded by their timeout parameter (at most 600 s
# in the document); a fuzzed wait for a guest that does not shut down
# would still take the request timeout (30 s), so the guests run the
# control scenario, which powers off at once when asked (and comes back:
# on_poweroff/on_reboot/on_crash = "restart").
#
# Left out: the endless streams (GET /v1/events, GET
# /v1/xenstore-watch/{path} and GET /v1/domains/{name}/console, whose
# follow=false the fuzzer would not always send), which a fuzzer would
# hold open until its request timeout; PVHAPITests reads them and checks
# them against the same document. POST /v1/domains is fuzzed: with no kernel file at any
# path it makes up, no generated config starts a guest.
#
# Also left out: the paths whose every operation the document gives only a
# 501 answer (documented, not built yet; found from the document, so they
# are fuzzed once built), and the check positive_data_acceptance: a
# schema-valid create request is refused when its xl config means nothing
# (no name, no kernel file), which no schema can say.
#
# schemathesis comes from scripts/setup.sh's venv (pinned; PVH_SCHEMATHESIS_VENV).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PVH_SCHEMATHESIS_VENV:-.build/schemathesis-venv}
seconds=${PVH_API_CHECK_SECONDS:-150}
pvh=.build/debug/pvh
[ -x "$pvh" ] || { echo "api-check: $pvh is missing (swift build)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/pvh-api-check.XXXXXX)
pids=()
cleanup() {
    # The re-create loop and socat first, so that nothing makes a guest again.
    for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]:1}"; do wait "$p" 2>/dev/null || true; done
    # Guests outlive their daemon (a restarted daemon adopts them), so they
    # are destroyed through it, every one the fuzzer left (under any name),
    # before it goes.
    if [ -S "$tmp/api.sock" ] && kill -0 "${pids[0]}" 2>/dev/null; then
        curl -s --max-time 10 --unix-socket "$tmp/api.sock" http://localhost/v1/domains |
            python3 -c 'import json, sys; [print(d["name"]) for d in json.load(sys.stdin)]' 2>/dev/null |
            while read -r name; do
                curl -s --max-time 30 --unix-socket "$tmp/api.sock" -o /dev/null -X DELETE "http://localhost/v1/domains/$name" || true
            done
    fi
    [ "${#pids[@]}" -gt 0 ] && { kill "${pids[0]}" 2>/dev/null || true; wait "${pids[0]}" 2>/dev/null || true; }
    # What a failed destroy left: each guest's command line names its
    # reattach socket and exit record, both in this run's directory.
    pkill -KILL -f -- "$tmp/" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
guest=testguest/build/testguest.elf
make -s -C testguest || { echo "api-check: the test guest does not build" >&2; exit 1; }
PVH_RUNTIME_DIR=$tmp PVH_LOG_DIR=$tmp "$pvh" daemon --foreground --api-socket "$tmp/api.sock" \
    --xenstore-socket "$tmp/xenstored.sock" >"$tmp/daemon.out" 2>"$tmp/daemon.err" &
pids+=($!)
for _ in $(seq 600); do
    grep -q '^pvh daemon: ready' "$tmp/daemon.out" 2>/dev/null && break
    kill -0 "${pids[0]}" 2>/dev/null || { echo "api-check: the daemon exited:" >&2; cat "$tmp/daemon.err" >&2; exit 1; }
    sleep 0.1
done
grep -q '^pvh daemon: ready' "$tmp/daemon.out" || { echo "api-check: the daemon was not ready within 60 s" >&2; exit 1; }
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$tmp/api.sock" &
pids+=($!)
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v1/host" >/dev/null && break
    sleep 0.1
done
# The guests: created now, and again whenever one is gone.
create() {
    local name=$1 config
    config=$(printf 'type = "pvh"\nname = "%s"\nkernel = "%s"\nmemory = 32\nextra = "pvh.scenarios=control"\non_poweroff = "restart"\non_reboot = "restart"\non_crash = "restart"\n' \
        "$name" "$PWD/$guest")
    curl -s --max-time 30 --unix-socket "$tmp/api.sock" -o /dev/null -w '%{http_code}' \
        -H 'Content-Type: application/json' --data-binary "$(python3 -c 'import json, sys; print(json.dumps({"xl_config": sys.argv[1]}))' "$config")" \
        http://localhost/v1/domains
}
for name in apicheck apicheck2; do
    code=$(create "$name")
    [ "$code" = 201 ] || { echo "api-check: creating $name answered $code" >&2; cat "$tmp/daemon.err" >&2; exit 1; }
done
recreated=$tmp/recreated
: >"$recreated"
(
    end=$((SECONDS + seconds + 90))
    while [ "$SECONDS" -lt "$end" ]; do
        sleep 2
        for name in apicheck apicheck2; do
            code=$(curl -s --max-time 10 --unix-socket "$tmp/api.sock" -o /dev/null -w '%{http_code}' "http://localhost/v1/domains/$name") || continue
            if [ "$code" = 404 ]; then [ "$(create "$name")" = 201 ] && echo "$name" >>"$recreated"; fi
        done
    done
) &
pids+=($!)
unbuilt=()
while read -r path; do unbuilt+=(--exclude-path "$path"); done < <(python3 - docs/api/openapi.json <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for path, item in doc["paths"].items():
    ops = [op for m, op in item.items() if m in ("get", "put", "post", "delete", "patch")]
    if ops and all(set(op["responses"]) == {"501"} for op in ops):
        print(path)
PY
)
status=0
# Run from the temporary directory: schemathesis keeps a cache (.schemathesis/) where it runs.
repo=$PWD
case "$venv" in /*) ;; *) venv=$repo/$venv ;; esac
# Every {name} is a live guest's (schemathesis 4's parameters setting).
printf '[parameters]\n"path.name" = "apicheck"\n' >"$tmp/schemathesis.toml"
(cd "$tmp" && timeout --kill-after=10 $((seconds + 60)) "$venv/bin/schemathesis" --no-color run "$repo/docs/api/openapi.json" \
    --url "http://127.0.0.1:$port" --checks all --max-time "$seconds" --workers 1 --request-timeout 30 \
    --exclude-path /v1/events --exclude-path /v1/xenstore-watch/{path} "${unbuilt[@]}" \
    --exclude-name "GET /v1/domains/{name}/console" \
    --exclude-checks positive_data_acceptance --max-response-time 20 \
    --seed "${PVH_API_CHECK_SEED:-12}") || status=$?
# The daemon must have survived it.
if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "api-check: the daemon died under the fuzzer:" >&2
    tail -50 "$tmp/daemon.err" >&2
    status=1
elif [ "$status" -ne 0 ]; then
    # The daemon's side of a failure (its log goes with the temporary directory).
    echo "api-check: the daemon's last 80 lines:" >&2
    tail -80 "$tmp/daemon.err" >&2
fi
echo "api-check: guests created again after the fuzzer removed them: $(wc -l <"$recreated")"
exit "$status"
