"""The shipped model table (`proxy/data/catalog.json`): capabilities and list prices of well-known models.

A model entry in `models.yaml` may declare `context_window`, `vision`, `tools`
and prices itself; where it does not, the table fills them in for the upstream
model ids it knows. Ids match exactly or by their longest prefix that ends at
a separator (`gpt-4o-2024-08-06` → `gpt-4o`); Bedrock's cross-region prefixes
(`us.`, `eu.`, `apac.`, `global.`) are ignored. The table is dated (`as_of`):
prices change, so a deployment that bills should set its own.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

_REGION_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.")
_SEPARATORS = "-.:@/"


@functools.cache
def _data() -> dict[str, Any]:
    return json.loads((Path(__file__).parent / "data" / "catalog.json").read_text())  # type: ignore[no-any-return]


def table() -> dict[str, dict[str, Any]]:
    """Every entry: upstream model id (or family prefix) -> its capabilities and prices."""
    return _data()["models"]  # type: ignore[no-any-return]


def as_of() -> str:
    return str(_data()["as_of"])


@functools.lru_cache(maxsize=1024)  # ids come from clients too (PROVIDER/MODEL): bounded
def lookup(model_id: str) -> dict[str, Any]:
    """What the table knows about an upstream model id (an empty dict when nothing)."""
    model = model_id.rsplit("/", 1)[-1]  # "models/gemini-2.5-flash", "openai/gpt-4o" on OpenAI-compatible routers
    for prefix in _REGION_PREFIXES:
        if model.startswith(prefix):
            model = model[len(prefix):]
            break
    known_models = table()
    if model in known_models:
        return known_models[model]
    best = ""
    for known in known_models:
        if len(known) > len(best) and model.startswith(known) and model[len(known)] in _SEPARATORS:
            best = known
    return known_models[best] if best else {}
