#!/usr/bin/env bash
# Walk one erasure request (Art. 17) through the API: submit, verify by hand, wait for the preview,
# show it, approve it as the DPO, wait, tell the recipients that a person tells (Art. 19, notify: manual),
# download the confirmation letter (PDF).
# Usage: scripts/demo-erasure-request.sh [BASE_URL] TOKEN [EMAIL]   (LOCALE=en for the English letter)
set -euo pipefail
if [ $# -eq 1 ]; then set -- http://127.0.0.1:5000 "$1"; fi
base=${1:?base URL}; token=${2:?DPO API token (printed by make demo)}; email=${3:-max.mustermann@example.com}
locale=${LOCALE:-de}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
status() { curl -fsS "$base/api/v1/requests/$id" -H "Authorization: Bearer $token" | json '["status"]'; }
wait_for() {  # until the status is one of the arguments (or 60 s passed)
  for _ in $(seq 1 60); do
    s=$(status); for want in "$@"; do [ "$s" = "$want" ] && return 0; done; sleep 1
  done
  return 1
}

created=$(curl -fsS -X POST "$base/api/v1/requests" -H 'Content-Type: application/json' \
  -d "{\"type\": \"erasure\", \"email\": \"$email\", \"locale\": \"$locale\"}")
id=$(json '["id"]' <<<"$created")
echo "submitted $(json '["reference"]' <<<"$created"), due $(json '["due_at"]' <<<"$created")"

curl -fsS -X POST "$base/api/v1/requests/$id/verify" -H "Authorization: Bearer $token" >/dev/null
echo "identity verified by hand; waiting for the preview..."
wait_for awaiting_approval completed failed || true
echo "status: $(status)"
DETAIL=$(curl -fsS "$base/api/v1/requests/$id" -H "Authorization: Bearer $token") python3 - <<'PY'
import json, os
preview = json.loads(os.environ["DETAIL"])["preview"] or {}
print(f"contract ended: {preview.get('contract_ended')}; over the bound: {preview.get('over_bound') or 'none'}")
for store, plan in preview.get("stores", {}).items():
    print(f"  {store} (by {plan['by']})")
    for table, t in plan["tables"].items():
        print(f"    {table:<22} {t['method']:<9} found {t['found']:>5}  deleted {t['deleted']:>5}  "
              f"changed {t['changed']:>5}  kept {t['retained']:>5}  {t['until'] or ''}")
PY

if [ "$(status)" = awaiting_approval ]; then
  curl -fsS -X POST "$base/api/v1/requests/$id/approve" -H "Authorization: Bearer $token" >/dev/null
  echo "approved; waiting for the stores..."
fi
# Art. 19: recipients told by e-mail or through their store are told by the workers (without
# DSR_SMTP_URL the mails are in instance/mail/); those told by hand wait for the DPO office.
for _ in $(seq 1 60); do
  s=$(status); [ "$s" = completed ] || [ "$s" = failed ] && break
  waiting=$(curl -fsS "$base/api/v1/requests/$id" -H "Authorization: Bearer $token" | python3 -c '
import json, sys
tasks = json.load(sys.stdin)["tasks"]
if all(t["status"] in ("done", "failed") for t in tasks if t["action"] != "notify"):
    print(" ".join("{}:{}".format(t["id"], t["store"]) for t in tasks
                   if t["action"] == "notify" and t["status"] == "waiting"))')
  for task in $waiting; do
    curl -fsS -X POST "$base/api/v1/requests/$id/tasks/${task%%:*}/complete" -H "Authorization: Bearer $token" \
      -F "note=demo: told ${task#*:} of the erasure by letter" >/dev/null
    echo "notice to ${task#*:} completed by hand (Art. 19)"
  done
  sleep 1
done
wait_for completed failed || true
final=$(status)
echo "status: $final"
[ "$final" = completed ] || exit 1

artifacts=$(curl -fsS "$base/api/v1/requests/$id/artifacts" -H "Authorization: Bearer $token")
url=$(json '[0]["download_url"]' <<<"$artifacts")
name=$(json '[0]["filename"]' <<<"$artifacts")
curl -fsS -o "$name" "$url"
echo "downloaded $name ($(json '[0]["size"]' <<<"$artifacts") bytes, sha256 $(json '[0]["sha256"]' <<<"$artifacts"))"
sha256sum "$name"
