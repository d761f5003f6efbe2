#!/usr/bin/env bash
# Loads the API's reference page (GET /docs) in headless Chromium, as a
# browser renders it, and checks that every operation of the server's
# OpenAPI document is on it. With --screenshot FILE, also saves a picture
# of the page (docs/api-reference.png was made so). CI runs it.
#
#   KEYWARD_BIN=target/debug bash scripts/docs-page.sh [--screenshot FILE]
#
# Needs Debian's chromium, curl, jq and port 18095 free.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${KEYWARD_BIN:-$root/target/debug}" && pwd)
screenshot=""
if [[ ${1:-} == --screenshot ]]; then
  screenshot=$(realpath -m "$2")
fi
work=$(mktemp -d)
trap 'jobs -p | xargs -r kill 2>/dev/null || true; rm -rf "$work"' EXIT
url=http://127.0.0.1:18095

KEYWARD_DATABASE_URL="sqlite://$work/k.db?mode=rwc" KEYWARD_LISTEN=127.0.0.1:18095 \
  KEYWARD_ADMIN_PASSWORD="docs page password" "$bin/keyward-api" >"$work/api.log" 2>&1 &
for _ in $(seq 150); do
  curl -sf "$url/healthz" -o /dev/null && break
  sleep 0.2
done

# The flags a root user on a closed network needs (no sandbox, no calls home).
browser=(chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --user-data-dir="$work/profile" --virtual-time-budget=10000)
"${browser[@]}" --dump-dom "$url/docs" >"$work/dom.html" 2>"$work/chromium.log"
grep -q 'data-rendered="yes"' "$work/dom.html" || {
  tail -n 20 "$work/chromium.log" >&2
  echo "docs page: not rendered" >&2
  exit 1
}
missing=0
operations=0
while IFS= read -r op; do
  operations=$((operations + 1))
  grep -qF "id=\"$op\"" "$work/dom.html" || { echo "docs page: missing $op" >&2; missing=1; }
done < <(curl -s "$url/api/v1/openapi.json" |
  jq -r '.paths | to_entries[] | .key as $p | .value | keys[] | select(. != "parameters") | "\(.) \($p)"')
((missing == 0)) || exit 1
((operations > 30)) || { echo "docs page: only $operations operations in the document" >&2; exit 1; }
if [[ -n $screenshot ]]; then
  "${browser[@]}" --hide-scrollbars --window-size=1280,1800 --screenshot="$screenshot" "$url/docs" \
    2>>"$work/chromium.log" >/dev/null
  echo "docs page: screenshot in $screenshot"
fi
echo "docs page: all $operations operations rendered"
