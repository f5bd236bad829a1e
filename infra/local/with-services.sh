#!/usr/bin/env bash
# Runs a command with Cairn's local AWS stand-in started: installs moto (DynamoDB, EventBridge,
# SQS, Scheduler) and cargo-lambda into .tools if missing, starts it on a free 127.0.0.1 port (one
# request at a time: see moto-serial.py), exports the
# AWS_* variables and CAIRN_TEST_AWS_ENDPOINT, runs "$@", and stops moto by its PID.
#
#   infra/local/with-services.sh cargo test --workspace
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tools="${CAIRN_TOOLS_DIR:-$root/.tools}"
venv="$("$root/infra/local/ensure-tools.sh" moto)"
cargo_lambda="$("$root/infra/local/ensure-tools.sh" cargo-lambda)"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
log="$tools/moto-$port.log"
# moto_server with one request at a time, so conditional writes are atomic as in DynamoDB.
"$venv/bin/python" "$root/infra/local/moto-serial.py" 127.0.0.1 "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/" && break
  sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/" || { echo "moto did not start:" >&2; cat "$log" >&2; exit 1; }

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_EC2_METADATA_DISABLED=true
export CAIRN_TEST_AWS_ENDPOINT="$AWS_ENDPOINT_URL" CAIRN_TOOLS_VENV="$venv" CAIRN_CARGO_LAMBDA="$cargo_lambda/bin/cargo-lambda"
echo "moto on $AWS_ENDPOINT_URL (pid $moto_pid)" >&2
"$@"
