#!/usr/bin/env bash
# Static checks of the deploy templates (called from .ci/run):
#   cfn-lint on deploy/template.yaml, and `terraform fmt -check` on deploy/terraform when terraform
#   is installed, plus `terraform validate` when `terraform init` can install the AWS provider (otherwise
#   a visible "skipped" line for each). Exits non-zero when a check fails.
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
    # validate needs the AWS provider: in a scratch copy, and only when `terraform init` can get it.
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    cp deploy/terraform/*.tf "$scratch/"
    if (cd "$scratch" && terraform init -backend=false -input=false >init.log 2>&1); then
        (cd "$scratch" && terraform validate)
        echo "deploy/check.sh: terraform validate deploy/terraform OK"
    else
        echo "deploy/check.sh: skipped: terraform validate (terraform init could not install the AWS provider)"
    fi
else
    echo "deploy/check.sh: skipped: terraform not installed (terraform fmt -check deploy/terraform)"
fi
