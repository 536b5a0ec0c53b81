"""The checks every section is made of: `${VAR}` expansion, scalars with their YAML paths, flat sections."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from proxy.config.schema import kind

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def expand(value: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand `${VAR}` and `${VAR:-default}`; also return the variable names referenced."""
    names: list[str] = []

    def sub(match: re.Match[str]) -> str:
        names.append(match.group(1))
        found = env.get(match.group(1), "")
        return found if found else (match.group(2) or "")

    return _VAR.sub(sub, value), names


class Checks:
    """Collects every problem with its YAML path, so `omni-llm check` can list them all."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.orders: dict[str, str] = {}

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")
    # -- scalar helpers ------------------------------------------------------
    def string(self, value: Any, path: str) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.fail(path, f"expected a string, got {kind(value)}")
            return None
        return expand(str(value), self.env)[0]

    def number(self, value: Any, path: str, *, integer: bool = False, minimum: float = 0) -> float | None:
        if isinstance(value, str):
            expanded = expand(value, self.env)[0]
            try:
                value = int(expanded) if integer else float(expanded)
            except ValueError:
                self.fail(path, f"expected a number, got {value!r}")
                return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            self.fail(path, f"expected {'an integer' if integer else 'a number'}, got {kind(value)}")
            return None
        if value < minimum:
            self.fail(path, f"must be >= {minimum}")
            return None
        return value

    def boolean(self, value: Any, path: str) -> bool | None:
        if isinstance(value, str):
            value = {"true": True, "false": False}.get(expand(value, self.env)[0].strip().lower(), value)
        if not isinstance(value, bool):
            self.fail(path, f"expected true or false, got {kind(value)}")
            return None
        return value

    def strings(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, list):
            self.fail(path, f"expected a list, got {kind(value)}")
            return []
        items = [self.string(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [v for v in items if v is not None]

    def url(self, value: str, path: str) -> None:
        """An upstream base URL: http(s), a host, nothing that would fail only at request time."""
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            self.fail(path, f"not a valid URL ({exc}): {value!r}")
            return
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.fail(path, f"expected an http:// or https:// URL with a host, got {value!r}")
        elif _CONTROL.search(value) or " " in value:
            self.fail(path, f"URL contains spaces or control characters: {value!r}")

    # -- sections ------------------------------------------------------------
    def section(self, raw: Any, path: str, cls: type) -> dict[str, Any]:
        """A flat section whose keys, types and defaults are those of dataclass `cls`."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping, got {kind(raw)}")
            return {}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            where = f"{path}.{key}"
            default = defaults.get(key)
            if key not in defaults:
                self.fail(where, "unknown key")
            elif isinstance(default, tuple):
                items = self.strings(value, where)
                out[key] = tuple(v for v in items if v)  # "" from an unset ${VAR:-} means "none"
            elif isinstance(default, bool):
                out[key] = self.boolean(value, where)
            elif isinstance(default, (int, float)):
                out[key] = self.number(value, where, integer=isinstance(default, int))
            elif isinstance(default, str):
                out[key] = self.string(value, where)
        return {k: v for k, v in out.items() if v is not None}

