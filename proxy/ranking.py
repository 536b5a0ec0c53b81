"""Routing orders (CONTRACT §16): which member of a strategy, or deployment of a model, goes first.

Pure functions over a small `Stats` object the router feeds (latency
observations, in-flight counts, a request counter), with an injectable clock
so the orders are unit-tested without sleeping:

- `ordered`: as configured; `round_robin`: the model's weighted balancer.
- `latency`: lowest decayed-average latency first (time to first token for
  streams, whole answer otherwise). Members never measured go first, so each
  gets measured; and every `EXPLORE_EVERY`-th request puts another member
  first, so one that has recovered is measured again.
- `cost`: cheapest for this request first — prices × estimated input tokens
  plus `max_tokens` (else 1,000) output tokens; members without prices last.
- `least_busy`: fewest requests in flight.

Capability checks (`missing_capability`) skip members that cannot honour a
request before any call: images without vision, tools without tool use, a
prompt over the context window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from proxy.config import MODEL_ROUTINGS, STRATEGY_ORDERS, Deployment

__all__ = ["MODEL_ROUTINGS", "STRATEGY_ORDERS", "Stats", "Needs", "needs_of", "missing_capability", "rank"]
EXPLORE_EVERY = 50
DEFAULT_OUTPUT_TOKENS = 1000
_ALPHA = 0.3  # weight of the newest latency observation
M = TypeVar("M")


def _key(d: Deployment) -> tuple[str, str]:
    return (d.provider, d.model)


class Stats:
    """Per-deployment decayed latency and in-flight counts, per-name request counters (per process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._latency: dict[tuple[str, str], float] = {}
        self._busy: dict[tuple[str, str], int] = {}
        self._turns: dict[str, int] = {}
        # What the other instances measured, folded in by proxy/shared_routing.py when Redis is shared.
        self._others_latency: dict[tuple[str, str], float] = {}
        self._others_busy: dict[tuple[str, str], int] = {}

    def observe(self, d: Deployment, seconds: float) -> None:
        key = _key(d)
        old = self._latency.get(key)
        self._latency[key] = seconds if old is None else old + _ALPHA * (seconds - old)

    def latency(self, d: Deployment) -> float | None:
        key = _key(d)
        mine = self._latency.get(key)
        if not self._others_latency:
            return mine
        theirs = self._others_latency.get(key)
        if mine is None or theirs is None:
            return theirs if mine is None else mine
        return (mine + theirs) / 2

    def enter(self, d: Deployment) -> None:
        key = _key(d)
        self._busy[key] = self._busy.get(key, 0) + 1

    def leave(self, d: Deployment) -> None:
        key = _key(d)
        self._busy[key] = max(0, self._busy.get(key, 0) - 1)

    def busy(self, d: Deployment) -> int:
        key = _key(d)
        return self._busy.get(key, 0) + self._others_busy.get(key, 0)

    def snapshot(self) -> dict[str, str]:
        """This instance's own figures, flat, for the other instances to read."""
        flat = {f"lat|{p}|{m}": repr(v) for (p, m), v in self._latency.items()}
        flat.update({f"busy|{p}|{m}": str(n) for (p, m), n in self._busy.items() if n})
        return flat

    def absorb(self, others: list[dict[str, str]]) -> None:
        """The other instances' snapshots: their latencies averaged, their in-flight counts summed."""
        latencies: dict[tuple[str, str], list[float]] = {}
        busy: dict[tuple[str, str], int] = {}
        for snapshot in others:
            for field, value in snapshot.items():
                kind, _, rest = field.partition("|")
                provider, _, model = rest.partition("|")
                try:
                    if kind == "lat":
                        latencies.setdefault((provider, model), []).append(float(value))
                    elif kind == "busy":
                        busy[(provider, model)] = busy.get((provider, model), 0) + int(value)
                except ValueError:
                    continue  # another version's field: not ours to read
        self._others_latency = {key: sum(values) / len(values) for key, values in latencies.items()}
        self._others_busy = busy

    def turn(self, name: str) -> int:
        """How many requests `name` has routed before this one."""
        count = self._turns.get(name, 0)
        self._turns[name] = count + 1
        return count


class Needs(NamedTuple):
    """What a chat request asks of a model."""

    vision: bool
    tools: bool
    prompt_tokens: int
    output_tokens: int


def needs_of(request: Mapping[str, Any]) -> Needs:
    """Images, tools and an estimate of the prompt's tokens (about 4 characters a token, offline)."""
    chars = 0
    vision = False
    for message in request.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    if part.get("type") == "image_url":
                        vision = True
                    chars += len(part.get("text") or "")
    tools = bool(request.get("tools"))
    if tools:
        chars += sum(len(str(tool)) for tool in request["tools"])
    output = request.get("max_completion_tokens") or request.get("max_tokens")
    output = output if isinstance(output, int) and not isinstance(output, bool) else DEFAULT_OUTPUT_TOKENS
    return Needs(vision, tools, chars // 4 + 1, output)


def missing_capability(d: Deployment, needs: Needs) -> str | None:
    if needs.vision and d.vision is False:
        return "no vision (images in the request)"
    if needs.tools and d.tools is False:
        return "no tool use (tools in the request)"
    if d.context_window is not None and needs.prompt_tokens > d.context_window:
        return f"prompt of ~{needs.prompt_tokens} tokens over context_window {d.context_window}"
    return None


def request_cost(d: Deployment, needs: Needs) -> float | None:
    if d.input_cost_per_mtok is None and d.output_cost_per_mtok is None:
        return None
    return (needs.prompt_tokens * (d.input_cost_per_mtok or 0) + needs.output_tokens * (d.output_cost_per_mtok or 0)) / 1e6


def rank(
    order: str,
    members: Sequence[M],
    deployments_of: Callable[[M], Iterable[Deployment]],
    stats: Stats,
    needs: Callable[[], Needs],
    turn: int,
) -> tuple[list[M], str]:
    """`members` sorted by `order` (a member scores as its best deployment) and the reason, for the header."""
    items = list(members)
    if order == "ordered" or not items:
        return items, order
    if order == "latency":
        figures = [_latency(stats, deployments_of(m)) for m in items]
    elif order == "cost":
        wanted = needs()
        figures = [_cost(deployments_of(m), wanted) for m in items]
    elif order == "least_busy":
        figures = [float(min(stats.busy(d) for d in deployments_of(m))) for m in items]
    else:
        raise ValueError(f"unknown routing order {order!r}")
    index = sorted(range(len(items)), key=figures.__getitem__)  # stable: ties keep the configured order
    ranked = [items[i] for i in index]
    first = figures[index[0]]
    second = figures[index[1]] if len(index) > 1 else first
    if order == "latency":
        if len(index) > 1 and turn % EXPLORE_EVERY == EXPLORE_EVERY - 1:
            other = index[1 + (turn // EXPLORE_EVERY) % (len(index) - 1)]
            ranked.remove(items[other])
            ranked.insert(0, items[other])
            return ranked, f"latency explore ({_ms(figures[other])})"
        if first < 0:
            return ranked, "latency unmeasured"
        return ranked, f"latency {_ms(first)}<{_ms(second)}" if len(index) > 1 else f"latency {_ms(first)}"
    if order == "cost":
        return ranked, f"cost ${first:.6f}" if first != _NO_PRICE else "cost unknown"
    return ranked, f"least_busy {first:.0f}<={second:.0f}" if len(index) > 1 else f"least_busy {first:.0f}"


_NO_PRICE = float("inf")


def _latency(stats: Stats, deployments: Iterable[Deployment]) -> float:
    """The best measured latency; -1 (first) when a deployment was never measured."""
    best = _NO_PRICE
    for d in deployments:
        figure = stats.latency(d)
        if figure is None:
            return -1.0
        best = min(best, figure)
    return best


def _cost(deployments: Iterable[Deployment], needs: Needs) -> float:
    costs = [c for d in deployments if (c := request_cost(d, needs)) is not None]
    return min(costs) if costs else _NO_PRICE


def _ms(seconds: float) -> str:
    return "unmeasured" if seconds < 0 else f"{seconds * 1000:.0f}ms"
