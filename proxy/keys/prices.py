"""Spend prices: a deployment's own, else the shipped model table's (proxy/catalog.py, dated by `as_of`).

Config loading already fills a deployment's missing prices from the table;
`shipped_price` looks up ids that never went through the config (a
`PROVIDER/MODEL` name is filled as it resolves, too). One table serves spend,
the `cost` routing order and the capability checks.
"""

from __future__ import annotations

from proxy.catalog import as_of, lookup, table
from proxy.config import Deployment


def price_table() -> tuple[str, dict[str, tuple[float, float]]]:
    """(as_of, {upstream model id: (input, output) USD per 1M tokens}) of every priced entry."""
    return as_of(), {name: (float(entry["input_cost_per_mtok"]), float(entry.get("output_cost_per_mtok", 0.0)))
                     for name, entry in table().items() if "input_cost_per_mtok" in entry}


def shipped_price(model: str) -> tuple[float, float] | None:
    entry = lookup(model)
    if "input_cost_per_mtok" not in entry:
        return None
    return float(entry["input_cost_per_mtok"]), float(entry.get("output_cost_per_mtok", 0.0))


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
