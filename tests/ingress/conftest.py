"""One gateway for the ingress tests, in front of the OpenAI, Bedrock, Gemini and Anthropic fakes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import anthropic as fake_anthropic
from tests.fakes import bedrock as fake_bedrock
from tests.fakes import google as fake_google
from tests.fakes import openai as fake_openai
from tests.fakes.server import Recorder, serve_app
from tests.proxy_server import RunningProxy, run_proxy

GATEWAY_KEY = "gw-key-0123456789"


@pytest.fixture(scope="package")
def fakes() -> Iterator[dict[str, tuple[str, Recorder]]]:
    apps = {"oai": fake_openai, "aws": fake_bedrock, "gem": fake_google, "ant": fake_anthropic}
    recorders = {name: Recorder() for name in apps}
    with serve_app(apps["oai"].make_app(recorders["oai"])) as oai, \
            serve_app(apps["aws"].make_app(recorders["aws"])) as aws, \
            serve_app(apps["gem"].make_app(recorders["gem"])) as gem, \
            serve_app(apps["ant"].make_app(recorders["ant"])) as ant:
        yield {"oai": (oai, recorders["oai"]), "aws": (aws, recorders["aws"]), "gem": (gem, recorders["gem"]),
               "ant": (ant, recorders["ant"])}


def config(fakes: dict[str, tuple[str, Recorder]]) -> str:
    return f"""
server:
  api_keys: ["{GATEWAY_KEY}"]
providers:
  oai: {{type: openai, api_key: sk-up, base_url: "{fakes['oai'][0]}/v1", max_retries: 0}}
  aws: {{type: bedrock, region: us-east-1, aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: s3cr3t,
         base_url: "{fakes['aws'][0]}", max_retries: 0}}
  gem: {{type: gemini, api_key: AIza-up, base_url: "{fakes['gem'][0]}", max_retries: 0}}
  ant: {{type: anthropic, api_key: sk-ant-up, base_url: "{fakes['ant'][0]}", max_retries: 0}}
models:
  gpt: {{provider: oai, model: gpt-4o}}
  gpt-tools: {{provider: oai, model: tools}}
  gpt-midstream: {{provider: oai, model: midstream-error}}
  gpt-limited: {{provider: oai, model: fail-429}}
  gpt-endless: {{provider: oai, model: endless}}
  bedrock: {{provider: aws, model: "us.anthropic.claude-sonnet-4-5-v1:0"}}
  bedrock-tools: {{provider: aws, model: tools}}
  gemini: {{provider: gem, model: gemini-echo}}
  gemini-tools: {{provider: gem, model: tools}}
  gemini-think: {{provider: gem, model: thinker}}
  claude: {{provider: ant, model: claude-sonnet-5}}
  claude-tools: {{provider: ant, model: tools}}
  claude-thinking: {{provider: ant, model: thinking}}
  claude-broken: {{provider: ant, model: fail-500}}
  claude-midstream: {{provider: ant, model: midstream-error}}
  claude-truncated: {{provider: ant, model: truncated}}
"""


@pytest.fixture(scope="package")
def proxy(fakes: dict[str, tuple[str, Recorder]]) -> Iterator[RunningProxy]:
    with run_proxy(config(fakes)) as running:
        yield running


