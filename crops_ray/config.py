"""Typed configuration: one dataclass per stage, the paper's values as defaults, loadable from YAML.

``load_config(Cls, "cfg.yaml", {"alpha": 0.7})`` builds ``Cls`` from the YAML mapping (nested dataclasses
included), then applies command-line overrides. Unknown keys raise, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, base: T | None = None) -> T:
    """Build dataclass ``cls`` from a mapping, recursing into fields whose type is itself a dataclass.

    Settings the mapping leaves out keep ``base``'s values (default: the class defaults); a nested section
    starts from the field's own default, so ``train: {max_steps: 300}`` changes one setting of the
    experiment's training defaults rather than resetting the others.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown setting(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            f = fields[key]
            inner = (
                getattr(base, key)
                if base is not None
                else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            )
            value = from_dict(hint, value, inner if dataclasses.is_dataclass(inner) else None)
        elif hint is not None:
            value = _coerce(cls, key, hint, value)
        kwargs[key] = value
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _coerce(cls: type, key: str, hint: Any, value: Any) -> Any:
    """The value as its field's type, by pydantic's lax rules: YAML's ``lr: 5e-5`` (a string to YAML 1.1) becomes
    a float, ``[a, b]`` a tuple; a value that cannot be one is a ValueError naming the setting."""
    from pydantic import TypeAdapter, ValidationError

    try:
        adapter = TypeAdapter(hint)
    except Exception:  # a type pydantic cannot describe: left as given
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise ValueError(
            f"{cls.__name__}.{key}: {value!r} is not a valid {getattr(hint, '__name__', hint)} "
            f"({exc.errors()[0]['msg']})"
        ) from None


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
