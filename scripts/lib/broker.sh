# Sourced by the scripts that start the real system on the shared broker.

# `remove_from_broker EXCHANGE QUEUE…`: deletes what a run declared on the
# local RabbitMQ, best effort (`rabbitmqctl` has no command for an
# exchange, hence the eval).
remove_from_broker() {
  command -v rabbitmqctl >/dev/null || return 0
  local exchange=$1 queue
  shift
  for queue in "$@"; do
    rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
  done
  rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$exchange\">>), false, <<\"keyward-scripts\">>)." >/dev/null 2>&1 || true
}
