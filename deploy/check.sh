#!/usr/bin/env bash
# Static checks of the deploy templates (called from .ci/run):
#   cfn-lint on deploy/template.yaml, and `terraform fmt -check` on deploy/terraform when terraform
#   is installed (otherwise a visible "skipped" line). Exits non-zero when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

cfn_lint=.venv/bin/cfn-lint
if [ ! -x "$cfn_lint" ]; then
    echo "deploy/check.sh: $cfn_lint not found (install the dev extra: .venv/bin/pip install -e '.[dev]')" >&2
    exit 1
fi
"$cfn_lint" deploy/template.yaml
echo "deploy/check.sh: cfn-lint deploy/template.yaml OK"

if command -v terraform >/dev/null 2>&1; then
    terraform fmt -check -recursive -diff deploy/terraform
    echo "deploy/check.sh: terraform fmt -check deploy/terraform OK"
else
    echo "deploy/check.sh: skipped: terraform not installed (terraform fmt -check deploy/terraform)"
fi
