#!/usr/bin/env bash
# The Python ingestor of examples/python-ingestor against the real system
# (keyward-api on SQLite, keyward-sync-worker, RabbitMQ): it is live (its
# heartbeats arrive), admits and refuses keys as the reference ingestor
# does, applies a revocation and an RBAC change from its queue within
# seconds, and its `applied` report completes the revocation. CI runs it, so
# docs/api.md and docs/events.md are shown to be enough for any language.
#
#   KEYWARD_BIN=target/debug bash scripts/python-ingestor.sh
#
# Needs python3 with pika and requests, curl, jq, RabbitMQ on
# 127.0.0.1:5672, and ports 18090–18092 free.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/broker.sh
source "$root/scripts/lib/broker.sh"
bin=$(cd "${KEYWARD_BIN:-$root/target/debug}" && pwd)
work=$(mktemp -d)
log=$work/processes.log
run_id="py-ingestor-$$-$RANDOM"
api=http://127.0.0.1:18090
node=http://127.0.0.1:18092
password="python ingestor password $RANDOM"
auth="admin:$password"
json='content-type: application/json'
export KEYWARD_EXCHANGE="$run_id.events" KEYWARD_ACKS_QUEUE="$run_id.acks"

cleanup() {
  local status=$?
  jobs -p | xargs -r kill 2>/dev/null || true
  wait 2>/dev/null || true
  remove_from_broker "$KEYWARD_EXCHANGE" "keyward.ingestor.$run_id" "$KEYWARD_ACKS_QUEUE" "$KEYWARD_ACKS_QUEUE.dead"
  if ((status != 0)); then
    echo "python ingestor check failed; the processes' output:" >&2
    tail -n 60 "$log" >&2 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "python ingestor check: $*" >&2; exit 1; }

# `until_true what seconds command…`: retries the command until it succeeds.
until_true() {
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    ((SECONDS < deadline)) || fail "$what: not within $seconds s"
    sleep 0.2
  done
}

status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
ingest() { status -X POST "$node/ingest/$1" -H "authorization: Bearer $2" -d '{}'; }
is() { [[ $("${@:2}") == "$1" ]]; }

cd "$work"
export KEYWARD_DATABASE_URL="sqlite://$work/keyward.db?mode=rwc"
KEYWARD_LISTEN=127.0.0.1:18090 KEYWARD_ADMIN_PASSWORD=$password "$bin/keyward-api" >>"$log" 2>&1 &
until_true "the API answers" 30 curl -sf "$api/healthz" -o /dev/null
KEYWARD_LISTEN=127.0.0.1:18091 "$bin/keyward-sync-worker" >>"$log" 2>&1 &

is 201 status -u "$auth" -X POST "$api/api/v1/tenants" -H "$json" -d '{"id":"acme"}' || fail "tenant"
is 201 status -u "$auth" -X PUT "$api/api/v1/tenants/acme/roles/shippers" -H "$json" \
  -d '{"privileges":[{"privilege":"ingestor","resource":{"stream":"clicks-*"}}]}' || fail "role"
key() {
  curl -s -u "$auth" -X POST "$api/api/v1/tenants/acme/apikeys" -H "$json" \
    -d "{\"name\":\"$1\",\"roles\":[\"shippers\"]}"
}
first=$(key first)
second=$(key second)
verifier=$(curl -s -u "$auth" -X POST "$api/api/v1/tenants/_platform/apikeys" -H "$json" \
  -d '{"name":"python","roles":["verifier"]}' | jq -r .secret)

KEYWARD_API_URL=$api KEYWARD_VERIFIER_KEY=$verifier KEYWARD_INGESTOR_ID=$run_id \
  KEYWARD_LISTEN_PORT=18092 python3 "$root/examples/python-ingestor/ingestor.py" >>"$log" 2>&1 &

node_live() {
  curl -s -u "$auth" "$api/api/v1/ingestors" |
    jq -e --arg id "$run_id" '.items[] | select(.id == $id and .live)' >/dev/null
}
until_true "the Python node is live (its heartbeats arrive)" 30 node_live

secret1=$(jq -r .secret <<<"$first"); id1=$(jq -r .keyId <<<"$first")
secret2=$(jq -r .secret <<<"$second")
is 202 ingest clicks-web "$secret1" || fail "a valid key is admitted"
is 202 ingest clicks-web "$secret2" || fail "a valid key is admitted"
is 403 ingest views "$secret1" || fail "a stream the key may not write is refused"
is 401 ingest clicks-web "kw_not_a_key" || fail "a bad key is refused"

is 202 status -u "$auth" -X DELETE "$api/api/v1/tenants/acme/apikeys/$id1" || fail "revoke"
until_true "the revocation reaches the Python node" 10 is 401 ingest clicks-web "$secret1"
applied() {
  [[ $(curl -s -u "$auth" "$api/api/v1/tenants/acme/apikeys/$id1" | jq -r .revocation.state) == applied ]]
}
until_true "the revocation is applied (the Python node's report counted)" 10 applied

is 200 status -u "$auth" -X PUT "$api/api/v1/tenants/acme/roles/shippers" -H "$json" \
  -d '{"privileges":[{"privilege":"ingestor","resource":{"stream":"other-*"}}]}' || fail "narrow the role"
until_true "the withdrawn privilege reaches the Python node" 10 is 403 ingest clicks-web "$secret2"
echo "python ingestor: live, admits and refuses, applies revocations and RBAC changes, reports applied"
