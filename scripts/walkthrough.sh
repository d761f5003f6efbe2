#!/usr/bin/env bash
# Runs the README's "A walkthrough" section as written, against the real
# binaries on SQLite, and checks each line annotated `# → x` prints x (the
# last line of its output ends with it; such a line is retried for up to
# 15 s, since events take a moment to arrive). CI runs it, so the README
# cannot fall behind the code.
#
#   KEYWARD_BIN=target/debug bash scripts/walkthrough.sh
#
# Needs curl, jq, the three binaries in KEYWARD_BIN, RabbitMQ on
# 127.0.0.1:5672, and the README's ports free (8080, 8081, 9464). The
# README's `cargo run --release -p NAME` runs "$KEYWARD_BIN/NAME" here; the
# exchange, acks queue and ingestor id are this run's own, so a shared
# broker is left as it was found.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/broker.sh
source "$root/scripts/lib/broker.sh"
bin=$(cd "${KEYWARD_BIN:-$root/target/debug}" && pwd)
for name in keyward-api keyward-sync-worker keyward-ingestor; do
  [[ -x $bin/$name ]] || { echo "walkthrough: $bin/$name is missing (cargo build --workspace --bins)" >&2; exit 1; }
done
for port in 8080 8081 9464; do
  if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "walkthrough: port $port is taken; the README's commands use it" >&2
    exit 1
  fi
done

work=$(mktemp -d)
log=$work/walkthrough.log
run_id="walkthrough-$$-$RANDOM"
export KEYWARD_EXCHANGE="$run_id.events" KEYWARD_ACKS_QUEUE="$run_id.acks" KEYWARD_INGESTOR_ID="$run_id"

cleanup() {
  local status=$?
  jobs -p | xargs -r kill 2>/dev/null || true
  wait 2>/dev/null || true
  remove_from_broker "$KEYWARD_EXCHANGE" "keyward.ingestor.$run_id" "keyward.ingestor.$run_id.dead" "$KEYWARD_ACKS_QUEUE" "$KEYWARD_ACKS_QUEUE.dead"
  if ((status != 0)); then
    echo "walkthrough failed; the processes' output:" >&2
    tail -n 60 "$log" >&2 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The README's `cargo run --release -p NAME [args]`: the built binary.
cargo() {
  [[ ${1:-} == run ]] || { echo "walkthrough: the README may only use 'cargo run'" >&2; return 1; }
  shift
  local name=""
  while (($#)); do
    case $1 in
      -p) name=$2; shift 2 ;;
      --release) shift ;;
      --) shift; break ;;
      *) break ;;
    esac
  done
  # In the background (`… &`), become the binary, so that stopping the
  # job stops it.
  if [[ $BASHPID != "$$" ]]; then
    exec "$bin/$name" "$@"
  fi
  "$bin/$name" "$@"
}

cd "$work"
# "With the API running as above and admin's password in $PW."
PW="walkthrough password $RANDOM"
KEYWARD_ADMIN_PASSWORD=$PW "$bin/keyward-api" >>"$log" 2>&1 &
for _ in $(seq 150); do
  curl -sf http://127.0.0.1:8080/healthz >/dev/null && break
  sleep 0.2
done

# The section's shell blocks, continuation lines joined.
commands() {
  awk '
    /^## A walkthrough/ { inside = 1; next }
    inside && /^## / { exit }
    inside && /^```sh/ { block = 1; next }
    inside && /^```/ { block = 0; next }
    block {
      if (sub(/\\$/, "")) { pending = pending $0; next }
      print pending $0; pending = ""
    }
  ' "$root/README.md"
}

ran=0
while IFS= read -r -u 3 line; do
  ran=$((ran + 1))
  echo "\$ $line"
  if [[ $line =~ \#\ →\ (.*)$ ]]; then
    want=${BASH_REMATCH[1]}
    deadline=$((SECONDS + 15))
    while :; do
      out=$(eval "$line" 2>>"$log") || true
      last=$(printf '%s\n' "$out" | tail -n 1 | sed 's/[[:space:]]*$//')
      [[ $last == *"$want" ]] && break
      if ((SECONDS >= deadline)); then
        echo "walkthrough: wanted '$want', got '$last'" >&2
        exit 1
      fi
      sleep 0.2
    done
    echo "$last"
  else
    eval "$line" >>"$log" 2>&1
  fi
done 3< <(commands)

((ran >= 10)) || { echo "walkthrough: only $ran commands found in the README" >&2; exit 1; }
echo "walkthrough: $ran commands, every annotated answer as the README says"
