#!/usr/bin/env bash
# Walk one access request through the API: submit, verify by hand, wait, download the ZIP.
# Usage: scripts/demo-access-request.sh [BASE_URL] TOKEN [EMAIL]   (LOCALE=en for the English answer)
set -euo pipefail
if [ $# -eq 1 ]; then set -- http://127.0.0.1:5000 "$1"; fi
base=${1:?base URL}; token=${2:?DPO API token (printed by make demo)}; email=${3:-max.mustermann@example.com}
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

created=$(curl -fsS -X POST "$base/api/v1/requests" -H 'Content-Type: application/json' \
  -d "{\"type\": \"access\", \"email\": \"$email\", \"locale\": \"${LOCALE:-de}\"}")
id=$(json '["id"]' <<<"$created")
echo "submitted $(json '["reference"]' <<<"$created"), due $(json '["due_at"]' <<<"$created")"

curl -fsS -X POST "$base/api/v1/requests/$id/verify" -H "Authorization: Bearer $token" >/dev/null
echo "identity verified by hand; waiting for the worker..."
for _ in $(seq 1 60); do
  status=$(curl -fsS "$base/api/v1/requests/$id" -H "Authorization: Bearer $token" | json '["status"]')
  [ "$status" = completed ] || [ "$status" = failed ] && break
  sleep 1
done
echo "status: $status"
[ "$status" = completed ] || exit 1

artifacts=$(curl -fsS "$base/api/v1/requests/$id/artifacts" -H "Authorization: Bearer $token")
url=$(json '[0]["download_url"]' <<<"$artifacts")
name=$(json '[0]["filename"]' <<<"$artifacts")
curl -fsS -o "$name" "$url"
echo "downloaded $name ($(json '[0]["size"]' <<<"$artifacts") bytes, sha256 $(json '[0]["sha256"]' <<<"$artifacts"))"
sha256sum "$name"
python3 -m zipfile -l "$name"
