"""`mcp_servers` validation, the pure helpers of the tool loop, and the cold-start rule (no MCP code at import)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proxy.config import ConfigError, parse_config
from proxy.mcp.tools import public_name, result_text, truncate


def test_servers_parsed_with_defaults_and_secrets_from_env() -> None:
    config = parse_config("""
mcp_servers:
  files: {transport: stdio, command: python, args: ["-m", "srv"], env: {A: "1"}, cwd: /tmp}
  search: {transport: streamable_http, url: "https://mcp.example.com/mcp",
           headers: {Authorization: "Bearer ${SEARCH_TOKEN}"}, allowed_tools: [find], timeout_s: 5,
           max_retries: 0, max_result_bytes: 1000}
  old: {transport: sse, url: "https://legacy.example.com/sse"}
  ws: {transport: websocket, url: "wss://tools.example.com/ws"}
""", {"SEARCH_TOKEN": "tok-0123456789"})
    files, search = config.mcp_servers["files"], config.mcp_servers["search"]
    assert (files.command, files.args, files.env, files.cwd) == ("python", ("-m", "srv"), {"A": "1"}, "/tmp")
    assert (files.timeout_s, files.max_retries, files.max_result_bytes, files.allowed_tools) == (30.0, 2, 100_000, None)
    assert search.headers == {"Authorization": "Bearer tok-0123456789"} and search.allowed_tools == ("find",)
    assert (search.timeout_s, search.max_retries, search.max_result_bytes) == (5, 0, 1000)
    assert [config.mcp_servers[n].transport for n in ("old", "ws")] == ["sse", "websocket"]
    assert "Bearer tok-0123456789" in config.secrets


@pytest.mark.parametrize(("body", "problem"), [
    ("a: {transport: stdio}", "mcp_servers.a.command: required"),
    ("a: {transport: stdio, command: x, url: 'http://x'}", "mcp_servers.a.url: unknown key for transport 'stdio'"),
    ("a: {transport: streamable_http}", "mcp_servers.a.url: required"),
    ("a: {transport: sse, url: 'ftp://x'}", "mcp_servers.a.url: expected a http:// or https:// URL"),
    ("a: {transport: websocket, url: 'http://x'}", "mcp_servers.a.url: expected a ws:// or wss:// URL"),
    ("a: {transport: carrier_pigeon}", "mcp_servers.a.transport: expected one of stdio, streamable_http, sse, "
                                       "websocket, got 'carrier_pigeon'"),
    ("a: {transport: stdio, command: x, timeout_s: 0}", "mcp_servers.a.timeout_s: must be >= 0.001"),
    ("a: {transport: stdio, command: x, max_result_bytes: 0}", "mcp_servers.a.max_result_bytes: must be >= 1"),
    ("a: {transport: stdio, command: x, allowed_tools: read}", "mcp_servers.a.allowed_tools: expected a list"),
    ("a: {transport: stdio, command: x, env: [A]}", "mcp_servers.a.env: expected a mapping"),
    ("a__b: {transport: stdio, command: x}", "mcp_servers.a__b: server names use letters"),
    ("a: [stdio]", "mcp_servers.a: expected a mapping"),
])
def test_every_problem_has_its_yaml_path(body: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"mcp_servers:\n  {body}\n", {})
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_check_command_lists_mcp_problems(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("mcp_servers:\n  a: {transport: stdio}\n  b: {transport: sse, url: 'x', retries: 3}\n")
    run = subprocess.run([sys.executable, "-m", "proxy.cli", "check", "--config", str(path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1
    out = run.stdout + run.stderr
    for problem in ("mcp_servers.a.command: required", "mcp_servers.b.retries: unknown key",
                    "mcp_servers.b.url: expected a http:// or https:// URL"):
        assert problem in out


@pytest.mark.parametrize(("server", "tool", "name"), [
    ("files", "read_file", "files__read_file"),
    ("my-srv", "dotted.name/with spaces", "my-srv__dotted_name_with_spaces"),
    ("s", "ünï", "s___n_"),
])
def test_public_names(server: str, tool: str, name: str) -> None:
    assert public_name(server, tool) == name


def test_truncate_counts_bytes_and_never_splits_a_character() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("x" * 12, 10) == "x" * 10 + "\n[truncated 2 bytes]"
    assert truncate("é" * 6, 5) == "éé\n[truncated 8 bytes]"  # 12 bytes; the third é would be cut in half


def test_result_text_prefers_text_and_renders_structured_content_as_json() -> None:
    from mcp_types import ImageContent, TextContent

    assert result_text([TextContent(type="text", text="a"), TextContent(type="text", text="b")], {"x": 1}) == "a\nb"
    assert result_text([], {"x": 1, "y": [2]}) == '{"x":1,"y":[2]}'
    assert result_text([ImageContent(type="image", data="AA==", mime_type="image/png")], None) == "[image: image/png]"


def test_import_and_plain_chat_load_no_mcp_code(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("providers: {demo: {type: mock}}\nmodels: {demo: {provider: demo}}\n"
                    "mcp_servers: {local: {transport: stdio, command: python}}\n")
    code = textwrap.dedent(f"""\
        import asyncio, json, sys
        import httpx
        from proxy.app import create_app
        from proxy.config import load_config
        mods = lambda: sorted(m for m in sys.modules if m.split(".")[0] in ("mcp", "mcp_types", "httpx2",
                              "jsonschema", "websockets") or m.startswith("proxy.mcp"))
        app = create_app(load_config({str(path)!r}))
        after_app = mods()
        async def chat():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                r = await c.post("/v1/chat/completions", json={{"model": "demo", "messages": [{{"role": "user", "content": "hi"}}]}})
                return r.status_code
        status = asyncio.run(chat())
        print(json.dumps({{"app": after_app, "chat": mods(), "status": status}}))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1], check=False)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result == {"app": [], "chat": [], "status": 200}
