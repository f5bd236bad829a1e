#!/usr/bin/env bash
# `cairn new` end to end, as a user runs it, on a scratch copy of this project (the repository
# itself is never touched): `cairn new nightly-report` regenerates template.yaml, the new
# crate's own test passes, the template check and the template tests pass with it, the dev
# server installs its schedules, clippy is clean, and `cairn dev --watch` runs it: an event sent to the dev server completes a run.
# The scratch copy builds into target/scaffold: its first run compiles the dependencies once.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cargo="${CARGO:-cargo}"
scratch="$(mktemp -d)"
# The dev server's database and log live outside the scratch project: `cargo lambda watch`
# rebuilds on any change inside it.
state="$(mktemp -d)"
dev_pid=""
cleanup() {
  if [ -n "$dev_pid" ]; then
    kill -TERM -- "-$dev_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$dev_pid" 2>/dev/null || true
  fi
  rm -rf "$scratch" "$state"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cd "$root"
# The working tree as it is: tracked and new files, not those deleted but not yet committed.
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' file; do if [ -e "$file" ]; then printf '%s\0' "$file"; fi; done |
  tar --null -T - -cf - | tar -xf - -C "$scratch"
# A target directory of its own: the scratch crates get the same artifact names as this
# project's (cargo hashes workspace paths relatively), and sharing one directory would leave this
# project's test binaries built from the scratch copy, with its paths compiled in.
export CARGO_TARGET_DIR="$root/target/scaffold"
cd "$scratch"
# Every build here resolves the same dependency features (`--workspace -F cairn-tests/watch`, which
# `cargo lambda watch` gets too through CAIRN_WATCH_FEATURES), so the dependencies compile once.
features=(--workspace -F cairn-tests/watch)
export CAIRN_WATCH_FEATURES=cairn-tests/watch
echo "test-scaffold: cairn new nightly-report in $scratch"
$cargo build -q "${features[@]}" --bins
"$CARGO_TARGET_DIR/debug/cairn" new nightly-report
$cargo build -q "${features[@]}" --bins
"$CARGO_TARGET_DIR/debug/cairn" template --check
$cargo test -q "${features[@]}" --test nightly_report --test template
# The dev server installs every schedule of the regenerated template, the new reconciler included.
$cargo test -q "${features[@]}" --test api -- bad_schedules_get_aws_shaped_errors
$cargo clippy -q -p nightly-report -p cairn-functions --all-targets -- -D warnings
grep -q "NightlyReportFunction:" template.yaml

# make dev: the dev server routes the new event to the new function under cargo lambda watch.
port="$(free_port)"
lambda_port="$(free_port)"
url="http://127.0.0.1:$port"
PATH="$("$root/infra/local/ensure-tools.sh" cargo-lambda)/bin:$PATH" \
  setsid "$CARGO_TARGET_DIR/debug/cairn" dev --watch --port "$port" --lambda-url "http://127.0.0.1:$lambda_port" \
  --db "$state/dev.db" > "$state/dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 100); do curl -sf "$url/api/runs" > /dev/null && break; sleep 0.2; done
"$CARGO_TARGET_DIR/debug/cairn" send app/nightly-report.requested --data '{"userId": "u1"}' --url "$url" --no-wait
for _ in $(seq 600); do
  runs="$("$CARGO_TARGET_DIR/debug/cairn" runs --function nightly-report --json --url "$url" || true)"
  if grep -q '"status": *"completed"' <<<"$runs"; then
    grep -q 'hello, u1' <<<"$runs" || { echo "test-scaffold: the run completed with the wrong output: $runs" >&2; exit 1; }
    echo "test-scaffold: ok (cairn new, its test, the template, and a run under cairn dev)"
    exit 0
  fi
  sleep 1
done
echo "test-scaffold: no completed nightly-report run after 10 minutes; cairn dev's log:" >&2
tail -50 "$state/dev.log" >&2
exit 1
