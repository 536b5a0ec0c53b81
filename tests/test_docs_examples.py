"""The README's examples and every walk-through in docs/examples/ run, as printed, against the shipped config.

One server is started the way a fresh checkout starts it: the repository's
`models.yaml`, no vendor keys, no gateway key (so only `demo` and
`demo-embedding` are ready). Then, with `127.0.0.1:8000` rewritten to that
server's port and the repository root as working directory:

- every ```bash and ```python block of README.md that talks to `127.0.0.1:8000`
  (or `localhost:8000`; unless the line before its fence is `<!-- untested: reason -->`);
- every `docs/examples/*.sh` and `*.py` file, and those blocks of
  `docs/examples/*.md` files.

Bash runs with `set -euo pipefail` and `curl` failing on HTTP errors
(`--fail-with-body`), Python as a script; either must exit 0. A line
`# prints: TEXT` in a block asserts that TEXT appears in its output, so the
README shows what the reader will see and the suite checks it. A new
walk-through is a new file in docs/examples/: nothing to register.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.proxy_server import RunningProxy, run_proxy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
ADDRESSES = ("127.0.0.1:8000", "localhost:8000")
_FENCE = re.compile(r"^```(bash|sh|shell|python)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_CURL_STRICT = 'curl() { command curl -sS --fail-with-body "$@"; }\n'
# Vendor credentials are removed so only the keyless `demo` models are ready, as on a fresh machine.
_SECRETS = re.compile(r"(_API_KEY|_TOKEN|_SECRET|_PROJECT_ID|_BASE_URL|^AWS_|^OMNI_LLM_)", re.IGNORECASE)


@dataclass(frozen=True)
class Example:
    where: str  # file:line, the test id
    language: str  # bash | python
    code: str

    @property
    def expected(self) -> list[str]:
        return [m.strip() for m in re.findall(r"^\s*# prints: (.+)$", self.code, re.MULTILINE)]


def markdown_examples(path: Path) -> list[Example]:
    text = path.read_text()
    found = []
    for match in _FENCE.finditer(text):
        code = match.group(2)
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if not any(a in code for a in ADDRESSES) or before.strip().startswith("<!-- untested"):
            continue
        line = text.count("\n", 0, match.start()) + 1
        language = "python" if match.group(1) == "python" else "bash"
        found.append(Example(f"{path.relative_to(ROOT)}:{line}", language, code))
    return found


def all_examples() -> list[Example]:
    examples = markdown_examples(ROOT / "README.md")
    for path in sorted(EXAMPLES.glob("*")) if EXAMPLES.is_dir() else []:
        if path.suffix == ".md":
            examples += markdown_examples(path)
        elif path.suffix in (".sh", ".py"):
            examples.append(Example(str(path.relative_to(ROOT)), "python" if path.suffix == ".py" else "bash",
                                    path.read_text()))
    return examples


def fresh_env(data_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _SECRETS.search(k)}
    env["OMNI_LLM_CONFIG"] = str(ROOT / "models.yaml")
    env["OMNI_LLM_DATA"] = data_dir
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `omni-llm` of this install
    return env


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[RunningProxy, dict[str, str]]]:
    with tempfile.TemporaryDirectory() as data:
        env = fresh_env(data)
        with run_proxy((ROOT / "models.yaml").read_text(), env=env) as running:
            yield running, env


EXAMPLE_LIST = all_examples()


def test_the_readme_has_demo_examples() -> None:
    readme = [e for e in EXAMPLE_LIST if e.where.startswith("README.md")]
    assert len(readme) >= 3 and any(e.language == "python" for e in readme)
    assert any(e.expected for e in readme), "the demo section shows (and checks) what the examples print"


@pytest.mark.parametrize("example", EXAMPLE_LIST, ids=[e.where for e in EXAMPLE_LIST])
def test_example_runs_as_printed(example: Example, server: tuple[RunningProxy, dict[str, str]]) -> None:
    proxy, env = server
    code = example.code
    for address in ADDRESSES:
        code = code.replace(address, proxy.url.removeprefix("http://"))
    if example.language == "bash":
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed (.ci/run installs it): the README's curl examples cannot run")
        command = ["bash", "-c", "set -euo pipefail\n" + _CURL_STRICT + code]
    else:
        command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{example.where} failed ({result.returncode}):\n{output}"
    for text in example.expected:
        assert text in result.stdout, f"{example.where}: expected {text!r} in the output:\n{output}"
