"""Config loading, expansion, validation with YAML paths, readiness."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, expand, parse_config

VALID = """
server:
  api_keys: ["${GW_KEY:-}"]
  max_request_bytes: 1000
providers:
  openai: {type: openai, api_key: "${OPENAI_API_KEY:-}"}
  local: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
  demo: {type: mock, chunk_delay_ms: 5}
  vertex: {type: vertex, project: "${GOOGLE_PROJECT_ID:-}", api_key: "${VERTEX_KEY:-}"}
models:
  gpt: {provider: openai, model: gpt-4o, input_cost_per_mtok: 2.5, output_cost_per_mtok: 10}
  pair:
    - {provider: local, model: a, weight: 3}
    - {provider: demo, model: b}
  demo: {provider: demo, response: "fixed"}
strategies:
  s: [gpt, demo]
"""


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, ("x", ["A"])),
        ("${A:-d}", {}, ("d", ["A"])),
        ("${A:-d}", {"A": ""}, ("d", ["A"])),
        ("pre-${A}-${B:-b}", {"A": "1"}, ("pre-1-b", ["A", "B"])),
        ("${A}", {}, ("", ["A"])),
        ("plain $A {A}", {"A": "x"}, ("plain $A {A}", [])),
    ],
)
def test_expand(text: str, env: dict[str, str], expected: tuple[str, list[str]]) -> None:
    assert expand(text, env) == expected


def test_valid_config_and_readiness() -> None:
    config = parse_config(VALID, {"GW_KEY": "k1"})
    assert config.server.api_keys == ("k1",)
    assert config.server.max_request_bytes == 1000
    assert config.providers["openai"].not_ready == "missing api_key (set OPENAI_API_KEY)"
    assert config.providers["local"].not_ready is None
    assert config.providers["demo"].not_ready is None
    assert "GOOGLE_PROJECT_ID" in config.providers["vertex"].not_ready
    assert [d.weight for d in config.models["pair"]] == [3, 1.0]
    assert config.models["demo"][0].model == "demo" and config.models["demo"][0].options == {"response": "fixed"}
    assert config.strategies["s"] == ("gpt", "demo")
    ready = parse_config(VALID, {"OPENAI_API_KEY": "sk-1", "VERTEX_KEY": "v"})
    assert ready.providers["openai"].not_ready is None and ready.providers["vertex"].not_ready is None
    assert ready.server.api_keys == ()  # "${GW_KEY:-}" empty -> no auth


def test_secrets_collected_for_scrubbing() -> None:
    config = parse_config(VALID, {"OPENAI_API_KEY": "sk-secret-1234"})
    assert "sk-secret-1234" in config.secrets


@pytest.mark.parametrize(
    ("yaml_text", "problem"),
    [
        ("providers: {openai: {type: opnai}}", "providers.openai.type: unknown provider type 'opnai'"),
        ("providers: {p: {type: mock}}\nmodels: {gpt-4o: {provider: opnai, model: x}}",
         "models.gpt-4o.provider: unknown provider 'opnai'"),
        ("providers: {p: {type: mock, colour: red}}", "providers.p.colour: unknown key for provider type 'mock'"),
        ("providers: {p: {type: openai, api_key: k, region: x}}", "providers.p.region: unknown key for provider type 'openai'"),
        ("server: {max_request_bytes: lots}", "server.max_request_bytes: expected a number, got 'lots'"),
        ("server: {drop_unsupported_params: maybe}", "server.drop_unsupported_params: expected true or false"),
        ("server: {api_keys: secret}", "server.api_keys: expected a list, got a string"),
        ("server: {bogus: 1}", "server.bogus: unknown key"),
        ("server: {upstream_max_connections: 0}", "server.upstream_max_connections: must be > 0"),
        ("server: {upstream_read_timeout_s: soon}", "server.upstream_read_timeout_s: expected a number"),
        ("server: {max_response_bytes: 1.5}", "server.max_response_bytes: expected an integer"),
        ("providers: {p: {type: mock}}\nmodels: {m: {provider: p, mode: chatty}}",
         "models.m.mode: expected chat, embedding or rerank"),
        ("providers: {p: {type: openai, api_key: k}}\nmodels: {m: {provider: p, model: x, mode: rerank}}",
         "models.m.mode: provider type 'openai' cannot serve rerank models (rerank works with: mock, bedrock, cohere)"),
        ("providers: {p: {type: groq, api_key: k}}\nmodels: {m: [{provider: p, model: x, mode: rerank}]}",
         "models.m[0].mode: provider type 'groq' cannot serve rerank models"),
        ("providers: {p: {type: openai, api_key: k}}\nmodels: {m: {provider: p}}", "models.m.model: required"),
        ("providers: {p: {type: mock}}\nmodels: {m: [{provider: p}, {provider: q}]}", "models.m[1].provider: unknown provider 'q'"),
        ("providers: {p: {type: mock}}\nmodels: {m: {provider: p}}\nstrategies: {s: [m, nope]}", "strategies.s[1]: unknown model 'nope'"),
        ("providers: {p: {type: mock}}\nmodels: {m: {provider: p}}\nstrategies: {m: [m]}", "strategies.m: 'm' is already a model name"),
        ("providers: {p: {type: mock, max_retries: -1}}", "providers.p.max_retries: must be >= 0"),
        ("colour: red", "colour: unknown key"),
        ("providers: [a, b]", "providers: expected a mapping, got a list"),
        ("providers: {p: {type: mock}}\nmodels: {m: {provider: p, weight: heavy}}", "models.m.weight: expected a number"),
        # What would otherwise fail only at request time (issue 14): bad base_url, non-string keys, duplicates.
        ("providers: {p: {type: openai_compatible, base_url: 127.0.0.1:8000/v1}}",
         "providers.p.base_url: expected an http:// or https:// URL with a host"),
        ("providers: {p: {type: openai_compatible, base_url: 'ftp://host/v1'}}",
         "providers.p.base_url: expected an http:// or https:// URL"),
        ("providers: {p: {type: openai_compatible, base_url: 'http://host:port/v1'}}", "providers.p.base_url: not a valid URL"),
        ("providers: {p: {type: openai_compatible, base_url: 8000}}", "providers.p.base_url: expected a string, got a number"),
        ("providers: {p: {type: openai_compatible, base_url: [http://a]}}", "providers.p.base_url: expected a string, got a list"),
        ("providers: {p: {type: openai, api_key: 12345}}", "providers.p.api_key: expected a string, got a number"),
        ("providers: {p: {type: anthropic, api_key: true}}", "providers.p.api_key: expected a string, got a boolean"),
        ("providers: {p: {type: bedrock, region: r, aws_secret_access_key: 1}}",
         "providers.p.aws_secret_access_key: expected a string"),
        ("providers:\n  p: {type: mock}\n  p: {type: openai}\n", "providers.p: duplicate key (line 3; first on line 2)"),
        ("providers: {p: {type: mock, type: openai}}", "providers.p.type: duplicate key"),
        ("server: {api_keys: [a]}\nserver: {api_keys: [b]}", "server: duplicate key (line 2; first on line 1)"),
        ("providers: {p: {type: mock}}\nmodels: {m: [{provider: p, model: a, model: b}]}", "models.m[0].model: duplicate key"),
    ],
)
def test_every_problem_has_its_yaml_path(yaml_text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text, {})
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_base_url_from_an_unset_variable_is_not_a_problem() -> None:
    config = parse_config('providers: {p: {type: openai_compatible, base_url: "${UNSET_URL:-}"}}', {})
    assert config.providers["p"].not_ready == "missing base_url (set UNSET_URL)"
    bad = 'providers: {p: {type: openai_compatible, base_url: "${URL}"}}'
    with pytest.raises(ConfigError):
        parse_config(bad, {"URL": "localhost:11434"})  # expanded values are checked too


def test_upstream_limits_reach_every_provider() -> None:
    text = ("server: {upstream_max_connections: 7, upstream_read_timeout_s: 30, max_response_bytes: 1000}\n"
            "providers: {a: {type: openai, api_key: k}, b: {type: mock}}")
    config = parse_config(text, {})
    for provider in config.providers.values():
        assert (provider.limits.max_connections, provider.limits.read_timeout_s,
                provider.limits.max_response_bytes) == (7, 30, 1000)
    assert parse_config("providers: {a: {type: mock}}", {}).providers["a"].limits.read_timeout_s == 120


def test_all_problems_reported_at_once() -> None:
    text = "server: {bogus: 1}\nproviders: {a: {type: nope}, b: {type: mock, x: 1}}\nmodels: {m: {provider: zz, model: q}}"
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    assert len(info.value.problems) == 4


def test_invalid_yaml() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("providers: {a: [", {})
    assert info.value.problems[0].startswith("invalid YAML")


def test_shipped_models_yaml_is_valid_and_demo_ready() -> None:
    from proxy.config import default_config_path, load_config

    config = load_config(default_config_path(), env={})
    assert config.providers["demo"].not_ready is None
    assert {"performance_optimized", "cost_optimized", "quality_optimized", "balanced"} <= set(config.strategies)
    assert all(p.not_ready for name, p in config.providers.items() if name not in ("demo", "bedrock", "local"))
