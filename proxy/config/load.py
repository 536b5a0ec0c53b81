"""Find, read and parse `models.yaml` (duplicate keys are an error), then check it (validate.py)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from proxy.config.checks import expand
from proxy.config.schema import _DEFAULT_DATABASE, Config, ConfigError, StateConfig
from proxy.config.validate import Validator


def state_of(config: Config) -> StateConfig:
    """The `state` section, or its default (the database under `$OMNI_LLM_DATA` or ./.omni)."""
    return config.state or StateConfig(database=expand(_DEFAULT_DATABASE, os.environ)[0])


def default_config_path() -> Path:
    """The `models.yaml` shipped with the package (or the checkout's, in development)."""
    here = Path(__file__).resolve().parent.parent  # proxy/
    for candidate in (here / "models.yaml", here.parent / "models.yaml"):
        if candidate.exists():
            return candidate
    return here / "models.yaml"


def resolve_config_path(explicit: str | None = None) -> Path:
    """`--config`, else `$OMNI_LLM_CONFIG`, else `./models.yaml`, else the shipped default."""
    if explicit:
        return Path(explicit)
    if os.environ.get("OMNI_LLM_CONFIG"):
        return Path(os.environ["OMNI_LLM_CONFIG"])
    if Path("models.yaml").exists():
        return Path("models.yaml")
    return default_config_path()


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    path = resolve_config_path(str(path) if path else None)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from exc
    config = parse_config(text, env if env is not None else os.environ)
    return dataclasses.replace(config, path=str(path))


def parse_config(text: str, env: Mapping[str, str]) -> Config:
    try:
        duplicates = duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"invalid YAML: {exc}"]) from exc
    if duplicates:  # YAML lets the last one win silently: a typo'd copy would hide the first
        raise ConfigError(duplicates)
    return Validator(env).config(raw if raw is not None else {})


def duplicate_keys(node: yaml.Node | None, path: str = "") -> list[str]:
    """Every mapping key that appears twice in the same mapping, with its YAML path and line."""
    found: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            where = f"{path}.{key}" if path else key
            line = key_node.start_mark.line + 1
            if key in seen:
                found.append(f"{where}: duplicate key (line {line}; first on line {seen[key]})")
            else:
                seen[key] = line
            found += duplicate_keys(value_node, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += duplicate_keys(item, f"{path}[{i}]")
    return found

