"""Pure routing: model name -> chain of (public name, deployments), deployment order, health.

Nothing here does I/O, so it is unit-tested without the app and with an
injectable clock. The I/O loop that walks a chain lives in `proxy.router`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from proxy.config import Config, Deployment, RouterConfig, with_catalog_defaults
from proxy.errors import InvalidRequest, ModelNotFound

Link = tuple[str, tuple[Deployment, ...]]  # (public model name, its deployments)


# A client's model name reaches upstream URLs and response headers: no control characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def resolve_model(config: Config, name: str, param: str = "model") -> list[Link]:
    """A model name, a strategy name, or PROVIDER/UPSTREAM_MODEL."""
    if name in config.models:
        return [(name, config.models[name])]
    if name in config.strategies:
        return [(member, config.models[member]) for member in config.strategies[name]]
    if _CONTROL.search(name):
        raise InvalidRequest(f"{param} must not contain control characters (CR, LF, NUL...): {name!r}", param=param)
    provider, slash, upstream = name.partition("/")
    if slash and upstream and provider in config.providers:
        return [(name, (with_catalog_defaults(Deployment(name=name, provider=provider, model=upstream)),))]
    known = [m for m in config.models if not config.providers[config.models[m][0].provider].not_ready]
    known += list(config.strategies)
    hint = f"; available models include: {', '.join(known[:8])}" if known else ""
    raise ModelNotFound(f"The model '{name}' does not exist{hint}", param="model")


def resolve_chain(config: Config, request: Mapping[str, object]) -> list[Link]:
    """The requested model, then `fallback_strategy`'s chain, then `fallbacks`, each model once."""
    chain = resolve_model(config, str(request["model"]))
    strategy = request.get("fallback_strategy")
    if strategy is not None:
        if not isinstance(strategy, str) or strategy not in config.strategies:
            raise InvalidRequest(f"unknown fallback_strategy {strategy!r}", param="fallback_strategy")
        chain += resolve_model(config, strategy, "fallback_strategy")
    fallbacks = request.get("fallbacks") or []
    if not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks):
        raise InvalidRequest("fallbacks must be a list of model names", param="fallbacks")
    for i, name in enumerate(fallbacks):
        chain += resolve_model(config, name, f"fallbacks[{i}]")
    seen: set[str] = set()
    return [link for link in chain if not (link[0] in seen or seen.add(link[0]))]


@dataclass
class _Circuit:
    failures: list[float] = field(default_factory=list)
    open_until: float = 0.0


class Health:
    """Per-deployment circuit breaker: N failures within a window -> skipped for a cooldown.

    After the cooldown the deployment is tried again (the probe); a success
    closes the circuit, a failure reopens it. State is per process.
    """

    def __init__(self, config: RouterConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._circuits: dict[tuple[str, str], _Circuit] = {}

    @staticmethod
    def key(deployment: Deployment) -> tuple[str, str]:
        return (deployment.provider, deployment.model)

    def available(self, deployment: Deployment) -> bool:
        if not self._circuits:  # nothing has ever failed: the common case, kept cheap
            return True
        circuit = self._circuits.get(self.key(deployment))
        return circuit is None or circuit.open_until <= self._clock()

    def record_success(self, deployment: Deployment) -> None:
        circuit = self._circuits.get(self.key(deployment))
        if circuit is not None:
            circuit.failures.clear()
            circuit.open_until = 0.0

    def record_failure(self, deployment: Deployment) -> None:
        now = self._clock()
        circuit = self._circuits.setdefault(self.key(deployment), _Circuit())
        circuit.failures = [t for t in circuit.failures if now - t < self._config.cooldown_window_s] + [now]
        if len(circuit.failures) >= self._config.cooldown_failures:
            circuit.open_until = now + self._config.cooldown_s
            circuit.failures.clear()

    def snapshot(self) -> dict[tuple[str, str], bool]:
        now = self._clock()
        return {key: circuit.open_until <= now for key, circuit in self._circuits.items()}


class Balancer:
    """Smooth weighted round-robin over a model's deployments (equal weights: plain round-robin)."""

    def __init__(self) -> None:
        self._current: dict[str, list[float]] = {}

    def order(self, name: str, deployments: tuple[Deployment, ...]) -> list[Deployment]:
        if len(deployments) == 1:
            return list(deployments)
        current = self._current.setdefault(name, [0.0] * len(deployments))
        total = sum(d.weight for d in deployments)
        for i, d in enumerate(deployments):
            current[i] += d.weight
        first = max(range(len(deployments)), key=current.__getitem__)
        current[first] -= total
        return [deployments[first], *(d for i, d in enumerate(deployments) if i != first)]
