"""Typed configuration: one dataclass per stage, the paper's values as defaults, loadable from YAML.

One configuration system for every pipeline and Serve: ``load_config(Cls, "cfg.yaml", {"alpha": 0.7},
["train.lr=3e-5"])`` builds ``Cls`` from the YAML mapping (nested dataclasses included), then a pipeline's flags,
then ``--set`` items (:func:`add_config_args`). Values are coerced by pydantic's lax rules and checked; unknown
keys raise, so a typo never passes silently. Example files for each stage are in ``configs/``.
"""

from __future__ import annotations

import copy
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


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"train.lr": 3e-5, "alpha": 0.7}`` -> ``{"train": {"lr": 3e-5}, "alpha": 0.7}``; None values are dropped."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        if value is None:
            continue
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"setting {path!r}: {p!r} is a value, not a section")
        node[leaf] = copy.deepcopy(value)  # never share (and later extend) a caller's nested mapping
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, section by section (a nested mapping is merged, any other value replaced)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_sets(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as a nested mapping; dotted keys reach nested settings (``train.lr=3e-5``), values
    are read as YAML (``true``, ``[p1, p2]``, numbers), then coerced to the setting's type by :func:`from_dict`."""
    import yaml

    flat = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        flat[key.strip()] = yaml.safe_load(value)
    return nested(flat)


def read_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def settings(
    path: str | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The settings every pipeline reads, later winning: ``defaults`` (e.g. a world scale), the YAML file at
    ``path``, ``overrides`` (a pipeline's own flags; dotted keys, None ignored), then ``--set`` items."""
    data = merge(nested(defaults or {}), read_yaml(path))
    return merge(merge(data, nested(overrides or {})), parse_sets(sets))


def load_config(
    cls: type[T],
    path: str | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
) -> T:
    """``cls`` from :func:`settings` (YAML file, flags, ``--set``), every value coerced and checked."""
    return from_dict(cls, settings(path, overrides, sets, defaults))


def pipeline_config(
    parser,
    cls: type[T],
    args,
    overrides: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> T:
    """:func:`load_config` from a pipeline's ``--config`` and ``--set``: a bad or unknown setting, or a missing
    YAML file, is a usage error (the message and exit code 2, as argparse gives), not a traceback."""
    try:
        return load_config(cls, args.config, overrides, args.set, defaults)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))


def add_config_args(parser, what: str) -> None:
    """``--config`` and ``--set``, the same in every pipeline."""
    parser.add_argument("--config", help=f"YAML of {what} settings (examples in configs/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting, dotted for nested ones (e.g. train.lr=3e-5); wins over --config and the other flags",
    )


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
