"""The web console (`/ui`) in a real browser: headless Chromium driven by selenium against `omni-llm serve`.

Screenshots of every page go to tests/artifacts/console/ (or $OMNI_TEST_ARTIFACTS/console); with
OMNI_CONSOLE_DOCS=1 they also replace the README's images in docs/console/.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.proxy_server import RunningProxy, run_proxy

MASTER = "master-key-0123456789"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("OMNI_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts") / "console"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="SKIPPED LOUDLY: the console browser test needs Debian's chromium and chromium-driver (.ci/run installs them)")


def config_yaml(db: str, rag_db: str) -> str:
    return f"""
server: {{api_keys: ["{MASTER}"]}}
providers:
  demo: {{type: mock, chunk_delay_ms: 40}}
models:
  demo: {{provider: demo, model: mock-1, input_cost_per_mtok: 1000, output_cost_per_mtok: 2000}}
state:
  database: "sqlite:///{db}"
mcp_servers:
  calc: {{transport: stdio, command: python, args: ["{ROOT}/docs/examples/mcp/calc_server.py"]}}
rag:
  store: {{type: sqlite, path: "{rag_db}"}}
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    tmp = tmp_path_factory.mktemp("console")
    with run_proxy(config_yaml(f"{tmp}/state.db", f"{tmp}/rag.db")) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy (the DOM settles asynchronously); fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except Exception:  # an element not there yet, or replaced while reading it
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    if os.environ.get("OMNI_CONSOLE_DOCS") == "1":
        (ROOT / "docs" / "console").mkdir(exist_ok=True)
        shutil.copy(ARTIFACTS / f"{name}.png", ROOT / "docs" / "console" / f"{name}.png")


def go(driver: Any, page: str, ready_css: str) -> None:
    from selenium.webdriver.common.by import By

    driver.execute_script("location.hash = arguments[0]", page)
    try:
        until(lambda: driver.find_element(By.ID, "page").get_attribute("data-page") == page
              and driver.find_elements(By.CSS_SELECTOR, ready_css), f"the {page} page ({ready_css})")
    except AssertionError as error:
        raise AssertionError(f"{error}; the page shows: {driver.find_element(By.ID, 'page').text[:500]!r}") from None


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def test_console_pages_in_a_browser(proxy: RunningProxy, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, css = browser, (lambda sel: browser.find_element(By.CSS_SELECTOR, sel))
    # Without a key: the static shell loads, no data does.
    assert httpx.get(proxy.url + "/admin/health").status_code == 401
    assert httpx.get(proxy.url + "/ui/../admin/health").status_code == 401
    assert httpx.get(proxy.url + "/ui/secret.txt").status_code == 401
    driver.get(proxy.url + "/ui")
    until(lambda: css("#login-form").is_displayed(), "the login page")
    assert not css("#shell").is_displayed()
    shot(driver, "login")

    css("#login-key").send_keys("wrong-key")
    css("#login-button").click()
    until(lambda: "rejected" in css("#login-error").text, "the login error")
    assert not css("#shell").is_displayed()
    css("#login-key").clear()
    css("#login-key").send_keys(MASTER)
    css("#login-button").click()

    # Models: demo, ready, with its deployment.
    go(driver, "models", "#models-table tr[data-model='demo']")
    row = css("tr[data-model='demo']")
    assert row.find_element(By.CSS_SELECTOR, ".status").text == "ready"
    assert "demo/mock-1" in row.text and "healthy" in row.text
    shot(driver, "models")

    # Playground: the answer grows chunk by chunk, then the x-omni-* headers show.
    go(driver, "playground", "#pg-send")
    Select(css("#pg-model")).select_by_value("demo")
    css("#pg-system").send_keys("You are terse.")
    prompt = css("#pg-prompt")
    prompt.clear()
    prompt.send_keys("one two three four five six seven eight nine ten eleven twelve thirteen fourteen")
    css("#pg-send").click()
    lengths: list[int] = []

    def grown_to_the_end() -> bool:
        text = css("#pg-answer").text
        if text and (not lengths or len(text) != lengths[-1]):
            lengths.append(len(text))
        return text.endswith("fourteen")

    until(grown_to_the_end, "the streamed answer")
    assert css("#pg-answer").text.startswith("You said: one two")
    assert len(lengths) >= 3 and lengths == sorted(lengths), f"the answer did not grow in steps: {lengths}"
    until(lambda: css("dd[data-header='x-omni-cost-usd']"), "the cost header")
    assert css("dd[data-header='x-omni-provider']").text == "demo"
    assert css("dd[data-header='x-omni-attempts']").text
    assert int(css("dd[data-header='x-omni-latency-ms']").text) >= 0
    shot(driver, "playground")
    # The structured_output toggle: the streamed answer is JSON of the given format.
    css("#pg-so").click()
    css("#pg-send").click()
    structured = until(lambda: _json_or_none(css("#pg-answer").text), "a structured answer")
    assert isinstance(structured.get("answer"), str)

    # Keys: create (shown once), use, see the spend, revoke.
    go(driver, "keys", "#key-create")
    css("#key-name").send_keys("browser-test")
    css("#key-budget").send_keys("5")
    css("#key-rpm").send_keys("100")
    css("#key-create").click()
    token = until(lambda: css("#new-key").text, "the new key")
    assert token.startswith("sk-omni-")
    key_row = until(lambda: [r for r in driver.find_elements(By.CSS_SELECTOR, "#keys-table tr[data-key]")
                             if "browser-test" in r.text], "the key's row")[0]
    key_id = key_row.get_attribute("data-key")
    client = openai.OpenAI(base_url=proxy.v1, api_key=token, max_retries=0)
    for word in ("alpha", "beta", "gamma"):
        answer = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": word}])
        assert answer.choices[0].message.content == f"You said: {word}"
    driver.execute_script("location.hash = 'models'")
    go(driver, "keys", f"tr[data-key='{key_id}'] .bar")
    assert "of $5" in css(f"tr[data-key='{key_id}']").text
    shot(driver, "keys")
    css(f"tr[data-key='{key_id}'] .revoke").click()
    until(lambda: css(f"tr[data-key='{key_id}'] .key-status").text == "revoked", "the revoked status")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "after revoke"}])

    # Usage: charts with data from the usage log.
    go(driver, "usage", "#usage-charts")
    bars = driver.find_elements(By.CSS_SELECTOR, "#usage-charts svg rect.bar-rect")
    assert bars, "no bars in the usage charts"
    assert "browser key" not in css("#usage-charts").text
    assert key_id in css("#usage-charts").text and "demo" in css("#usage-charts").text
    assert int(css("#usage-total").text.split()[0]) >= 4  # the playground's stream and the key's three
    shot(driver, "usage")

    # Tools: the example MCP server's tools.
    go(driver, "tools", ".mcp-server[data-server='calc'], #tools-empty")
    assert "calc__add" in css(".mcp-server[data-server='calc']").text
    shot(driver, "tools")

    # Collections: upload a file into a new collection, then find it by search.
    go(driver, "collections", "#col-upload")
    doc = ARTIFACTS / "handbook.txt"
    doc.write_text("The zebrafish regrows its fins. Omni-LLM serves many providers.\n")
    css("#col-new").send_keys("handbook")
    css("#col-file").send_keys(str(doc))
    css("#col-upload").click()
    until(lambda: driver.find_element(By.ID, "page").get_attribute("data-page") == "collections"
          and "handbook" in css("#col-pick").text, "the uploaded collection")
    css("#col-query").send_keys("zebrafish fins")
    css("#col-search").click()
    chunk = until(lambda: css("#col-results .chunk"), "a search result")
    assert "handbook.txt" in chunk.text and "zebrafish" in chunk.text and "score" in chunk.text
    shot(driver, "collections")

    # The playground's rag and mcp fields: the sources and the tool calls show beside the answer.
    go(driver, "playground", "#pg-send")
    Select(css("#pg-model")).select_by_value("demo")
    prompt = css("#pg-prompt")
    prompt.clear()
    prompt.send_keys("What regrows its fins? Count the words with calc__word_count.")
    css("#pg-rag").send_keys("handbook")
    css("#pg-mcp").send_keys("calc")
    css("#pg-send").click()
    source = until(lambda: css("#pg-sources li.source"), "the rag sources")
    assert "handbook.txt" in source.text and "zebrafish" in source.text
    call = until(lambda: css("#pg-trace li.tool-call"), "the MCP tool call")
    assert call.text.startswith("calc.word_count(")
    until(lambda: css("#pg-send").is_enabled() and css("dd[data-header='x-omni-provider']"), "the end of the stream")
    assert "calc__word_count returned: 9" in css("#pg-answer").text
    shot(driver, "playground-rag-mcp")

    # Signing out forgets the key: the login page again.
    css("#logout").click()
    until(lambda: css("#login-form").is_displayed(), "the login page after sign-out")
    assert driver.execute_script("return sessionStorage.length") == 0


def test_console_is_not_imported_until_requested() -> None:
    import subprocess

    code = ("import sys, proxy.app\nproxy.app.create_app()\n"
            "assert not [m for m in sys.modules if m.startswith('proxy.console')], 'console imported eagerly'")
    env = {**os.environ, "OMNI_LLM_CONFIG": str(ROOT / "models.yaml")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=60)
