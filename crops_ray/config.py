"""Typed configuration: one class per stage, the paper's values as defaults, loadable from YAML.

Every setting a user gives, to a pipeline or to Serve, goes through one mechanism: a class made by :func:`config`,
a pydantic dataclass whose construction coerces each value by pydantic's lax rules (YAML 1.1 reads ``5e-5`` as a
string: it becomes a float; ``[a, b]`` becomes a tuple) and refuses a wrong type or an unknown key by name.
``load_config(Cls, "cfg.yaml", {"alpha": 0.7}, ["train.lr=3e-5"])`` builds ``Cls`` from the YAML mapping (nested
sections included), then a pipeline's flags, then ``--set`` items (:func:`add_config_args`); Serve's
:class:`serve.settings.ServeSettings` is built by the same :func:`from_dict` from ``serve run``'s arguments or
pipelines/serve.py's ``--config``/``--set``. Example files for each stage are in ``configs/``.

Why a pydantic dataclass rather than a ``BaseModel`` for all: the stages hand their settings around as
dataclasses (``dataclasses.asdict`` into stats and model cards, ``replace`` for a seed or a sweep, ``fields``), and a
pydantic dataclass keeps that interface while pydantic checks every construction, ``replace`` included. Serve's
settings are made by the same decorator (their ``Field`` limits and descriptions work there too), so one kind of
object and one error message cover every setting. A field type pydantic cannot describe is an error when the class
is defined, not a value that passes unchecked. Assignment after construction is not checked (``__post_init__``
normalises some values in place). pydantic is imported here, at the top, as every config module needs it to
define its classes (about 0.2 s, once per process).
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from typing import Any, TypeVar

from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

T = TypeVar("T")

# What every configuration class shares: a key that names no setting is refused, never dropped.
CONFIG_RULES = ConfigDict(extra="forbid")


def config(cls: type[T] | None = None, /, **options: Any):
    """A configuration class: ``@config`` (or ``@config(frozen=True)``, any dataclass option) makes ``cls`` a pydantic
    dataclass under :data:`CONFIG_RULES`, so every construction coerces and checks its values."""

    def make(c: type[T]) -> type[T]:
        return pydantic_dataclass(c, config=CONFIG_RULES, **options)

    return make if cls is None else make(cls)


def is_config(cls: Any) -> bool:
    """Whether ``cls`` was made by :func:`config` (a plain dataclass would take any value unchecked)."""
    return isinstance(cls, type) and vars(cls).get("__pydantic_config__") == CONFIG_RULES


def from_dict(cls: type[T], data: dict[str, Any] | None, base: T | None = None) -> T:
    """``cls`` (a :func:`config` class) from a mapping; a nested mapping builds its section's class the same way.

    Settings the mapping leaves out keep ``base``'s values (default: the class defaults); a nested section
    starts from the field's own default, so ``train: {max_steps: 300}`` changes one setting of the
    experiment's training defaults rather than resetting the others. A value the class refuses (a wrong type, an
    unknown key, a failed check) is a ValueError naming the setting (:func:`explain`).
    """
    if not is_config(cls):
        raise TypeError(f"{getattr(cls, '__name__', cls)} is not a @config class: its settings would go unchecked")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in (data or {}).items():
        section = hints.get(key)
        if is_config(section) and isinstance(value, dict):
            value = from_dict(section, value, _section_base(cls, key, base))
        kwargs[key] = value
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except ValidationError as exc:
        raise ValueError(explain(cls, exc)) from None


def _section_base(cls: type, key: str, base: Any) -> Any:
    """What a nested section of ``cls`` starts from: ``base``'s section, else the field's default (None: its own)."""
    if base is not None:
        return getattr(base, key)
    f = next(f for f in dataclasses.fields(cls) if f.name == key)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return default if dataclasses.is_dataclass(default) else None


def explain(cls: type, exc: ValidationError) -> str:
    """pydantic's errors for ``cls`` on one line, each naming its setting (``TrainConfig.lr = 'fast': Input should be
    a valid number, ...``); unknown keys are listed with the known ones."""
    errors = exc.errors(include_url=False)
    unknown = [".".join(map(str, e["loc"])) for e in errors if e["type"] == "unexpected_keyword_argument"]
    known = sorted(f.name for f in dataclasses.fields(cls))
    parts = [f"{cls.__name__}: unknown setting(s) {unknown}; known: {known}"] if unknown else []
    for e in errors:
        where = ".".join([cls.__name__, *map(str, e["loc"])])
        if e["type"] == "unexpected_keyword_argument":
            continue
        if "error" in e.get("ctx", {}):  # a check in __post_init__: its own message
            parts.append(f"{where}: {e['ctx']['error']}")
        elif e["type"] in ("missing", "missing_argument"):
            parts.append(f"{where}: required")
        else:
            parts.append(f"{where} = {e['input']!r}: {e['msg']}")
    return "; ".join(parts)


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
    are read as YAML (``true``, ``[p1, p2]``, numbers), then coerced to the setting's type by its class."""
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
