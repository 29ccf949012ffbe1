"""Typed configuration: one dataclass per stage, the paper's values as defaults, loadable from YAML.

``load_config(Cls, "cfg.yaml", {"alpha": 0.7})`` builds ``Cls`` from the YAML mapping (nested dataclasses
included), then applies command-line overrides. Unknown keys raise, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build dataclass ``cls`` from a mapping, recursing into fields whose type is itself a dataclass."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown setting(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)
        elif hint is tuple or typing.get_origin(hint) is tuple:
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def load_config(cls: type[T], path: str | None = None, overrides: dict[str, Any] | None = None) -> T:
    """``cls`` from a YAML file (optional), with ``overrides`` (None values ignored) applied on top."""
    data: dict[str, Any] = {}
    if path:
        import yaml

        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_dict(cls, data)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
