#!/bin/sh
# Run rpc_server and rpc_client together (the "example-rpc" test):
#   run_rpc.sh RPC_SERVER RPC_CLIENT [N]
# The broker URI comes from $MM_URI, else $MM_TEST_URI (the test harness).
# The server starts in the background; the client waits for it with
# mm_wait_service (no start-up delay), sends N sums + 1 bad + 1 slow request,
# and checks every answer. The server stops by itself after those N + 2
# requests. Passes when both exit 0. If the client fails, the server is
# stopped with SIGINT (its graceful path) so nothing is left running.
set -u
server=$1 client=$2 n=${3:-3}
uri=${MM_URI:-${MM_TEST_URI:-}}

"$server" "$uri" $((n + 2)) &
server_pid=$!
"$client" "$uri" "$n"
client_rc=$?
if [ "$client_rc" -ne 0 ]; then
    echo "run_rpc: client failed ($client_rc): stopping the server" >&2
    kill -INT "$server_pid" 2>/dev/null
fi
wait "$server_pid"
server_rc=$?
echo "run_rpc: client exit $client_rc, server exit $server_rc"
[ "$client_rc" -eq 0 ] && [ "$server_rc" -eq 0 ]
