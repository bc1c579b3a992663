#!/usr/bin/env bash
# The demo's transcript (scripts/demo.sh runs it inside a private broker:
# tests/harness/broker.sh exports MM_TEST_URI): demo-steps.sh BUILD_DIR
# An RPC server answering mmctl, a worker pool sharing tasks, three replicas
# electing a leader and electing another when it is killed; then everything
# it started is stopped.
set -uo pipefail
build=$1
export MM_URI=$MM_TEST_URI
mmctl=$build/tools/mmctl
work=$(mktemp -d "${TMPDIR:-/tmp}/mmdemo-run.XXXXXX")
declare -A pid

cleanup() {
    for p in "${pid[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
show() {
    local shown=() a
    for a in "$@"; do # as one would type it
        a=${a/#$mmctl/mmctl}
        a=${a/#$build\//}
        [[ $a =~ [[:space:]\"] ]] && a="'$a'"
        shown+=("$a")
    done
    printf '$ %s\n' "${shown[*]}"
    "$@"
    local rc=$?
    [ "$rc" -eq 0 ] || printf '(exit %d)\n' "$rc"
    return "$rc"
}

# serve NAME ARGS...: a serving mmctl in the background, once it consumes.
serve() {
    local name=$1
    shift
    "$mmctl" "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pid[$name]=$!
    for _ in $(seq 1 200); do # bounded: 10 s
        grep -q "mmctl: ready" "$work/$name.err" && return 0
        sleep 0.05
    done
    echo "demo: $name did not start: $(cat "$work/$name.err")" >&2
    exit 1
}

step "1. An RPC server (mmctl reply) and requests to it"
serve clock reply demo-clock now '{"time": "12:00", "zone": "UTC"}'
echo "$ mmctl reply demo-clock now '{\"time\": \"12:00\", \"zone\": \"UTC\"}' &"
show "$mmctl" request demo-clock now || exit 1
show "$mmctl" request demo-clock now '{"who": "demo"}' --json || exit 1
show "$mmctl" request demo-clock tomorrow # nobody handles it: exit 4

step "2. A worker pool: 3 forked workers share a task queue; one crashes holding a task"
show "$build/examples/worker_pool" || exit 1

step "3. Three replicas of demo-replicas elect a leader"
for i in 1 2 3; do
    serve "replica$i" join demo-replicas
    echo "$ mmctl join demo-replicas &    # $(sed -n 's/.*as //p' "$work/replica$i.err")"
done
leader=$("$mmctl" leader demo-replicas --timeout 20000) || exit 1
echo "$ mmctl leader demo-replicas"
echo "$leader"
show "$mmctl" status demo-replicas || exit 1

step "4. The leader is killed (SIGKILL): another one takes over"
for i in 1 2 3; do
    grep -q "$leader" "$work/replica$i.err" && victim=replica$i
done
echo "$ kill -9 ${pid[$victim]}    # $victim, the leader"
kill -9 "${pid[$victim]}"
wait "${pid[$victim]}" 2>/dev/null
unset "pid[$victim]"
for _ in $(seq 1 100); do # bounded: each call waits up to 2 s
    next=$("$mmctl" leader demo-replicas --timeout 2000) && [ "$next" != "$leader" ] && break
done
echo "$ mmctl leader demo-replicas"
echo "$next"
[ "$next" != "$leader" ] || { echo "demo: no new leader" >&2; exit 1; }
show "$mmctl" status demo-replicas || exit 1

step "5. Stop: the servers and replicas get SIGTERM, the broker is stopped"
