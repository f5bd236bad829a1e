#!/usr/bin/env bash
# Installs the local tools Cairn's tests and builds use, each in its own venv under .tools
# (override with CAIRN_TOOLS_DIR), if missing; prints nothing else on stdout but the venv path.
#   infra/local/ensure-tools.sh moto          # moto[server] + awscli  -> .tools/venv
#   infra/local/ensure-tools.sh sam           # aws-sam-cli + cfn-lint -> .tools/sam
#   infra/local/ensure-tools.sh cargo-lambda  # cargo-lambda (+ zig)   -> .tools/cl
#   infra/local/ensure-tools.sh chromium      # Debian's chromium (apt) and playwright-core (npm) for the dashboard test
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tools="${CAIRN_TOOLS_DIR:-$root/.tools}"
if [ "${1:-}" = chromium ]; then
  if ! command -v chromium >/dev/null; then
    echo "installing Debian's chromium (apt)" >&2
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2
  fi
  dashboard="$root/infra/dev/tests/dashboard"
  if [ ! -d "$dashboard/node_modules/playwright-core" ]; then
    (cd "$dashboard" && npm install --no-audit --no-fund --silent >&2)
  fi
  command -v chromium
  exit 0
fi
case "${1:?which tools: moto, sam, cargo-lambda or chromium}" in
  moto) venv="$tools/venv"; check="$venv/bin/moto_server"; packages=('moto[server]==5.2.5' 'awscli==1.46.3') ;;
  sam) venv="$tools/sam"; check="$venv/bin/cfn-lint"; packages=('aws-sam-cli==1.170.0' 'cfn-lint==1.58.0') ;;
  cargo-lambda) venv="$tools/cl"; check="$venv/bin/cargo-lambda"; packages=('cargo-lambda==1.9.2') ;;
  *) echo "unknown tool set: $1" >&2; exit 2 ;;
esac
if [ ! -x "$check" ]; then
  echo "installing ${packages[*]} into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${packages[@]}" >&2
fi
echo "$venv"
