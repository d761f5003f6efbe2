#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, beside the broker the tests
# use (5672): nodes kw-cluster-1..3@localhost on AMQP ports 5701..5703,
# each with its own data directory and no plugins (the default node's
# management port stays its own). For `scale cluster` (issue #17, item 4).
#
#   scripts/rabbitmq-cluster.sh start   # start and join the three nodes
#   scripts/rabbitmq-cluster.sh kill N  # kill -9 node N (1..3)
#   scripts/rabbitmq-cluster.sh revive N
#   scripts/rabbitmq-cluster.sh stop    # stop all three, delete their data
#   scripts/rabbitmq-cluster.sh urls    # KEYWARD_AMQP_URL for all three
#   scripts/rabbitmq-cluster.sh connections N  # client connections on node N
#
# Runs the Debian package's rabbitmq-server as the rabbitmq user (as root)
# or as the current user; the nodes share the invoking user's Erlang cookie.
set -euo pipefail

BASE="${KW_CLUSTER_DIR:-/tmp/kw-rabbitmq-cluster}"
NODES=(1 2 3)
BIN=/usr/lib/rabbitmq/bin

node() { echo "kw-cluster-$1@localhost"; }
port() { echo $((5700 + $1)); }

as_broker_user() { # command...
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
    su rabbitmq -s /bin/sh -c "$*"
  else
    sh -c "$*"
  fi
}

ctl() { # node-number args...
  local n=$1; shift
  as_broker_user "HOME=/var/lib/rabbitmq $BIN/rabbitmqctl -n $(node "$n") $*"
}

start_node() {
  local n=$1 dir="$BASE/$1"
  mkdir -p "$dir/mnesia" "$dir/log"
  echo "[]." > "$dir/enabled_plugins"
  [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1 && chown -R rabbitmq:rabbitmq "$BASE"
  as_broker_user "HOME=/var/lib/rabbitmq \
    RABBITMQ_NODENAME=$(node "$n") RABBITMQ_NODE_PORT=$(port "$n") \
    RABBITMQ_DIST_PORT=$((25700 + n)) \
    RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log \
    RABBITMQ_PID_FILE=$dir/pid RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins \
    RABBITMQ_CONFIG_FILE=$dir/none \
    $BIN/rabbitmq-server -detached"
  ctl "$n" wait "$dir/pid" --timeout 120 >/dev/null
}

case "${1:-}" in
  start)
    for n in "${NODES[@]}"; do start_node "$n"; done
    for n in 2 3; do
      ctl "$n" stop_app >/dev/null
      ctl "$n" join_cluster "$(node 1)" >/dev/null
      ctl "$n" start_app >/dev/null
    done
    ctl 1 cluster_status | grep -A4 -i "running nodes" || true
    ;;
  kill)
    kill -9 "$(cat "$BASE/${2:?node number}/pid")"
    ;;
  revive)
    start_node "${2:?node number}"
    ;;
  stop)
    for n in "${NODES[@]}"; do
      [ -f "$BASE/$n/pid" ] && kill "$(cat "$BASE/$n/pid")" 2>/dev/null || true
    done
    sleep 2
    rm -rf "$BASE"
    ;;
  connections)
    ctl "${2:?node number}" list_connections -q name | grep -c . || true
    ;;
  urls)
    urls=()
    for n in "${NODES[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$(port "$n")/%2f"); done
    (IFS=,; echo "${urls[*]}")
    ;;
  *)
    sed -n '2,15p' "$0"; exit 2
    ;;
esac
