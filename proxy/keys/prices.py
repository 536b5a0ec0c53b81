"""The shipped price table (proxy/data/prices.json, dated by its `as_of`) for models without configured prices.

A deployment's own `input_cost_per_mtok` / `output_cost_per_mtok` always win.
Upstream ids match exactly, else by the longest table entry that prefixes them
(dated snapshots such as `gpt-4o-2024-08-06` or `...-v1:0` price as their family).
"""

from __future__ import annotations

import functools
from pathlib import Path

import orjson

from proxy.config import Deployment

PRICES_PATH = Path(__file__).resolve().parent.parent / "data" / "prices.json"


@functools.cache
def price_table() -> tuple[str, dict[str, tuple[float, float]]]:
    """(as_of, {upstream model id: (input, output) USD per 1M tokens})."""
    raw = orjson.loads(PRICES_PATH.read_bytes())
    return raw["as_of"], {name: (float(i), float(o)) for name, (i, o) in raw["models"].items()}


@functools.cache
def shipped_price(model: str) -> tuple[float, float] | None:
    table = price_table()[1]
    if model in table:
        return table[model]
    matches = [name for name in table if model.startswith(name)]
    return table[max(matches, key=len)] if matches else None


def prices_of(deployment: Deployment) -> tuple[float, float] | None:
    """USD per 1M (input, output) tokens: configured, else shipped, else None (spend counts as 0)."""
    if deployment.input_cost_per_mtok is not None or deployment.output_cost_per_mtok is not None:
        return deployment.input_cost_per_mtok or 0.0, deployment.output_cost_per_mtok or 0.0
    return shipped_price(deployment.model)


def cost_of(deployment: Deployment, prompt_tokens: int, completion_tokens: int) -> float:
    prices = prices_of(deployment)
    if prices is None:
        return 0.0
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6
