"""The docs stand alone and their config examples work as printed.

Every ```yaml block in README.md, docs/**/*.md and deploy/README.md is a
`models.yaml` that `omni-llm check` accepts, exactly as printed. A block that
is only part of a config says so on the line before its fence:

    <!-- config: fragment -->   checked merged over the shipped models.yaml
    <!-- config: none -->       not an Omni-LLM config (a CloudFormation snippet...)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import ConfigError, default_config_path, parse_config

ROOT = Path(__file__).resolve().parent.parent
_FENCE = re.compile(r"^```yaml[^\n]*\n(.*?)^```", re.S | re.M)
_MARKER = re.compile(r"<!--\s*config:\s*(fragment|none)\s*-->\s*$")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "deploy" / "README.md"]


def yaml_blocks() -> list[tuple[str, str, str]]:
    """(where: file:line, marker, block text) of every ```yaml block."""
    found = []
    for path in doc_files():
        if not path.exists():
            continue
        text = path.read_text()
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = _MARKER.search(before)
            found.append((f"{path.relative_to(ROOT)}:{line}", marker.group(1) if marker else "", match.group(1)))
    return found


def _merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in extra.items()}}
    return extra


BLOCKS = yaml_blocks()


def test_the_docs_have_config_examples() -> None:
    assert len([b for b in BLOCKS if b[1] != "none"]) >= 3


@pytest.mark.parametrize(("where", "marker", "block"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_every_yaml_block_passes_check_as_printed(where: str, marker: str, block: str) -> None:
    if marker == "none":
        yaml.safe_load(block)  # still valid YAML
        return
    text = block
    if marker == "fragment":
        shipped = yaml.safe_load(default_config_path().read_text())
        text = yaml.safe_dump(_merge(shipped, yaml.safe_load(block)))
    try:
        parse_config(text, {})
    except ConfigError as exc:
        problems = "\n".join(f"  {p}" for p in exc.problems)
        pytest.fail(f"the ```yaml block at {where} fails `omni-llm check`"
                    f"{' (merged over models.yaml)' if marker else ''}:\n{problems}\n--- block ---\n{block}"
                    "--- (mark a partial example with <!-- config: fragment --> on the line before its fence)")


_ELSEWHERE = re.compile(r"CONTRACT(?:\.md| §)|WIRE\.md|\.\./shared|shared/")


def test_docs_cite_nothing_outside_the_repository() -> None:
    files = [*doc_files(), ROOT / ".ci" / "run", ROOT / "Dockerfile"]
    cited = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in files if path.exists()
             for n, line in enumerate(path.read_text().splitlines(), 1) if _ELSEWHERE.search(line)]
    assert not cited, "the docs cite documents that are not in the repository:\n" + "\n".join(cited)


def test_license_file_matches_pyproject() -> None:
    license_text = (ROOT / "LICENSE").read_text()
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
