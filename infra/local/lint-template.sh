#!/usr/bin/env bash
# Lints template.yaml offline: cfn-lint and `sam validate --lint` (both from PyPI, in their own
# venv because SAM pins a boto3 that differs from moto's).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$("$root/infra/local/ensure-tools.sh" sam)"
cd "$root"
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
"$venv/bin/cfn-lint" template.yaml
"$venv/bin/sam" validate --lint --region "$AWS_DEFAULT_REGION"
