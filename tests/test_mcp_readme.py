"""The README's MCP worked example, run as printed against `demo` with its snippet added to the shipped config.

(The generic README runner, tests/test_docs_examples.py, starts the shipped
`models.yaml` as is, so it leaves this block to this test.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy_server import RunningProxy, run_proxy

ROOT = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```(yaml|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_section() -> dict[str, str]:
    section = ROOT.joinpath("README.md").read_text().split("## MCP tools (any model)")[1].split("\n## ")[0]
    return {kind: code for kind, code in _FENCE.findall(section)}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningProxy]:
    config = ROOT.joinpath("models.yaml").read_text() + "\n" + readme_section()["yaml"]
    with run_proxy(config) as running:  # run_proxy's working directory is the checkout, as in the README
        yield running


def test_readme_mcp_example_runs_as_printed(server: RunningProxy) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (.ci/run installs it): the README's curl example cannot run")
    code = readme_section()["bash"]
    expected = [line.strip() for line in re.findall(r"^\s*# prints: (.+)$", code, re.MULTILINE)]
    assert len(expected) >= 3
    script = 'set -euo pipefail\ncurl() { command curl -sS --fail-with-body --max-time 60 "$@"; }\n' + \
        code.replace("127.0.0.1:8000", server.url.removeprefix("http://"))
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for text in expected:
        assert text in result.stdout, f"expected {text!r} in:\n{result.stdout}"
