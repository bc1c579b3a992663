#!/usr/bin/env bash
# Private RabbitMQ node for one test run: broker.sh COMMAND [ARGS...]
#
# Starts a node with its own name, free loopback ports and its own data/log
# directory in a temp dir, waits (bounded) until it accepts AMQP connections,
# exports MM_TEST_URI, MM_TEST_NODE, MM_TEST_CTL (a rabbitmqctl wrapper for
# fault tests: "$MM_TEST_CTL stop_app"), MM_TEST_BROKER_PID (the Erlang VM,
# for tests that freeze it with SIGSTOP), MM_TEST_TLS_URI and MM_TEST_TLS_CA
# (a TLS listener with a private CA), runs COMMAND, then stops the node and
# removes its files, also on failure or Ctrl-C. Exits with COMMAND's status.
#
# If MM_TEST_URI is already set, that broker is used and nothing is started.
#
# Debian's /usr/sbin/rabbitmq* wrappers switch user and lose the environment,
# so the scripts in /usr/lib/rabbitmq/bin are called directly.
set -u

if [ "$#" -eq 0 ]; then
    echo "usage: broker.sh COMMAND [ARGS...]" >&2
    exit 64
fi

if [ -n "${MM_TEST_URI:-}" ]; then
    exec "$@"
fi

RMQ_BIN=${RMQ_BIN:-/usr/lib/rabbitmq/bin}
START_TIMEOUT=${MM_BROKER_START_TIMEOUT:-90}

if [ ! -x "$RMQ_BIN/rabbitmq-server" ]; then
    echo "broker.sh: $RMQ_BIN/rabbitmq-server not found (apt-get install rabbitmq-server)" >&2
    exit 69
fi

port_is_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 30000))
        if port_is_free "$p" && port_is_free $((p + 10000)); then
            echo "$p"
            return 0
        fi
    done
    return 1
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/mmbroker.XXXXXX")
node="mmtest-$$@localhost"
amqp_port=$(free_port) || { echo "broker.sh: no free port" >&2; exit 69; }
dist_port=$(free_port) || { echo "broker.sh: no free port" >&2; exit 69; }
server_pid=""
# epmd is shared by every Erlang node on the host: stop it only if we started it.
epmd_was_running=0
pgrep -x epmd >/dev/null 2>&1 && epmd_was_running=1

ctl() {
    HOME="$dir/home" RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        "$RMQ_BIN/rabbitmqctl" -n "$node" "$@"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # A fault test may have left the broker frozen.
    [ -n "${MM_TEST_BROKER_PID:-}" ] && kill -CONT "$MM_TEST_BROKER_PID" 2>/dev/null
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        ctl stop >/dev/null 2>&1 || true
        for _ in $(seq 1 100); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    # The node's Erlang VM may outlive the shell script that started it.
    pkill -KILL -f -- "-sname $node" 2>/dev/null || true
    pkill -KILL -f -- "$dir" 2>/dev/null || true
    if [ "$epmd_was_running" = 0 ] && ! pgrep -x beam.smp >/dev/null 2>&1; then
        pkill -x epmd 2>/dev/null || true
    fi
    rm -rf "$dir"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$dir/home" "$dir/mnesia" "$dir/log" "$dir/tls"
tls_port=$(free_port) || { echo "broker.sh: no free port" >&2; exit 69; }

# A private CA and a server certificate for localhost, for the TLS listener.
make_certs() {
    local t="$dir/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=micromsg test CA" \
        -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null &&
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
            -keyout "$t/server.key" -out "$t/server.csr" 2>/dev/null &&
        printf 'subjectAltName=DNS:localhost\n' >"$t/ext.cnf" &&
        openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" \
            -CAcreateserial -days 2 -extfile "$t/ext.cnf" -out "$t/server.pem" 2>/dev/null &&
        chmod 644 "$t"/*
}
make_certs || { echo "broker.sh: cannot make TLS certificates (openssl)" >&2; exit 69; }
: >"$dir/rabbitmq-env.conf"
echo "[]." >"$dir/enabled_plugins"
cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$amqp_port
listeners.ssl.default = 127.0.0.1:$tls_port
ssl_options.cacertfile = $dir/tls/ca.pem
ssl_options.certfile = $dir/tls/server.pem
ssl_options.keyfile = $dir/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
loopback_users = none
log.console = false
log.file.level = info
EOF

export HOME="$dir/home"
export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
export RABBITMQ_NODENAME="$node"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="$amqp_port"
export RABBITMQ_DIST_PORT="$dist_port"
export RABBITMQ_MNESIA_BASE="$dir/mnesia"
export RABBITMQ_LOG_BASE="$dir/log"
export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
export RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
# Erlang distribution and epmd on loopback only, like the AMQP listener.
# MM_BROKER_ERL_ARGS adds emulator flags (the benchmark turns scheduler
# busy-waiting off so that the broker's CPU figures are its real work).
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} ${MM_BROKER_ERL_ARGS:-}"
export ERL_EPMD_ADDRESS=127.0.0.1

t0=$(date +%s.%N)
"$RMQ_BIN/rabbitmq-server" >"$dir/log/stdout.log" 2>&1 &
server_pid=$!

if ! ctl wait --timeout "$START_TIMEOUT" "$RABBITMQ_PID_FILE" >/dev/null 2>&1 ||
    ! ctl await_startup --timeout "$START_TIMEOUT" >/dev/null 2>&1; then
    echo "broker.sh: node $node did not start within ${START_TIMEOUT}s; log tail:" >&2
    tail -n 30 "$dir/log/stdout.log" "$dir"/log/*.log >&2 2>/dev/null
    exit 69
fi
# await_startup returns once the app runs; make sure the listener accepts too.
for _ in $(seq 1 100); do
    port_is_free "$amqp_port" || break
    sleep 0.1
done
t1=$(date +%s.%N)

cat >"$dir/ctl" <<EOF
#!/bin/sh
HOME="$dir/home" RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" exec "$RMQ_BIN/rabbitmqctl" -n "$node" "\$@"
EOF
chmod +x "$dir/ctl"

export MM_TEST_URI="amqp://guest:guest@127.0.0.1:$amqp_port"
export MM_TEST_NODE="$node"
# TLS: the same broker through its TLS listener; the CA that signed its certificate.
export MM_TEST_TLS_URI="amqps://guest:guest@localhost:$tls_port"
export MM_TEST_TLS_CA="$dir/tls/ca.pem"
export MM_TEST_CTL="$dir/ctl"
# The Erlang VM's pid, for tests that freeze the broker (SIGSTOP/SIGCONT).
MM_TEST_BROKER_PID=$(cat "$RABBITMQ_PID_FILE")
export MM_TEST_BROKER_PID
printf 'broker.sh: node %s on 127.0.0.1:%s up in %.1f s\n' "$node" "$amqp_port" \
    "$(awk "BEGIN { print $t1 - $t0 }")" >&2

"$@"
