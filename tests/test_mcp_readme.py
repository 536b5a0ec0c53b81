"""The README's MCP worked example, run as written (its config with this interpreter, its shipped server)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from proxy.config import parse_config
from proxy.mcp.manager import McpManager

ROOT = Path(__file__).resolve().parents[1]


def readme_mcp_config() -> str:
    section = ROOT.joinpath("README.md").read_text().split("## MCP tools (any model)")[1].split("\n## ")[0]
    yaml_block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert yaml_block, "the README's MCP section shows its config"
    # `.venv/bin/python` is the quick start's interpreter; the tests run in whichever has the extras.
    return yaml_block.group(1).replace(".venv/bin/python", sys.executable)


async def test_readme_example_server_lists_and_runs_its_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(readme_mcp_config(), {})
    assert list(config.mcp_servers) == ["calc"]
    monkeypatch.chdir(ROOT)  # the example's paths are relative to the checkout, as in the README
    manager = McpManager(config.mcp_servers)
    try:
        catalog = await manager.catalog(["calc"])
        assert sorted(catalog.entries) == ["calc__add", "calc__word_count"]
        outcome = await manager.call(catalog.entries["calc__add"], {"a": 2, "b": 3})
        assert (outcome.result, outcome.is_error) == ("5.0", False)
    finally:
        await manager.aclose()
