"""Typed dataclass configs → command-line flags. File values first, explicit flags win.

A config field is declared with `opt(default, "help", ...)`; `add_flags` turns every field into a
`--kebab-case` flag (booleans get `--x/--no-x`), and `resolve` builds the dataclass from defaults,
then a file's values (e.g. a benchmark's reference configuration), then the flags the user typed.
Ranges and choices are checked in one place, so every task rejects `--batch-size 0` the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from seqnlp.errors import SeqnlpError

C = TypeVar("C")


def opt(default: Any, help: str, *, choices: Sequence[Any] | None = None, min: float | None = None,
        gt: float | None = None, max: float | None = None, flag: bool = True) -> Any:
    """A dataclass field with its flag's help text and checks (`min` <= v, `gt` < v, v <= `max`)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "min": min, "gt": gt, "max": max,
            "flag": flag}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _field_type(cls: type, f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    union = typing.get_origin(hint) in (typing.Union, getattr(types, "UnionType", None))
    return args[0] if args and union else hint


def flag_name(name: str) -> str:
    """`batch_size` → `--batch-size`."""
    return "--" + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, cls: type, *, exclude: Sequence[str] = (),
              group: str | None = None, defaults: Mapping[str, Any] | None = None,
              description: str | None = None) -> None:
    """Add one flag per field of dataclass `cls` (in argument `group` with its `description`, where given).
    Defaults are SUPPRESSed so `resolve` sees only typed flags; the help shows `defaults` (the values a task
    starts from) where given, else the field's own."""
    target = parser.add_argument_group(group, description) if group else parser
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.metadata.get("flag", True):
            continue
        typ = _field_type(cls, f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        default = (defaults or {}).get(f.name, default)
        help_text = f.metadata.get("help", "")
        if "(default" not in help_text:  # a help that explains its own default keeps it
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if typ is bool:
            target.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if typ in (int, float, str):
            kwargs["type"] = typ
            kwargs["metavar"] = {int: "N", float: "X", str: "S"}[typ] if "choices" not in kwargs else None
        target.add_argument(flag_name(f.name), **kwargs)


def check(config: Any, label: Callable[[str], str] = flag_name) -> None:
    """Check every field's range and choices; raise SeqnlpError naming the flag and the allowed values."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        m = f.metadata
        name = label(f.name)
        if value is None or (isinstance(value, bool) and _field_type(type(config), f) is bool):
            continue
        if m.get("choices") and value not in m["choices"]:
            raise SeqnlpError(f"{name} must be one of {', '.join(map(str, m['choices']))}, not {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SeqnlpError(f"{name} must be a finite number, not {value}")
        if isinstance(value, (int, float)):
            if m.get("min") is not None and value < m["min"]:
                raise SeqnlpError(f"{name} must be at least {m['min']}, not {value}")
            if m.get("gt") is not None and value <= m["gt"]:
                raise SeqnlpError(f"{name} must be greater than {m['gt']}, not {value}")
            if m.get("max") is not None and value > m["max"]:
                raise SeqnlpError(f"{name} must be at most {m['max']}, not {value}")


def resolve(cls: type[C], args: argparse.Namespace | Mapping[str, Any] | None = None,
            file_values: Mapping[str, Any] | None = None, source: str | None = None) -> C:
    """Build `cls` from its defaults, then `file_values`, then explicit flags in `args`; then `check` it.

    Unknown keys in `file_values` are an error (a typo in a config file must not be silently ignored).
    `source` names where `file_values` came from (e.g. "RUN/config.json model"), so a bad value read from a
    file is reported against that file rather than against a flag the user never typed.
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    where = f"{source}: " if source else ""
    from_file: set[str] = set()
    if file_values is not None and not isinstance(file_values, Mapping):
        # e.g. config.json with "train": [..] or "model": "big": a section must be an object of settings
        shown = repr(file_values) if len(repr(file_values)) <= 60 else repr(file_values)[:57] + "..."
        if source:
            raise SeqnlpError(f"{source}: must be a JSON object of settings, not {_kind(file_values)} {shown}")
        raise SeqnlpError(f"settings must be a mapping of names to values, not {_kind(file_values)} {shown}")
    for key, value in (file_values or {}).items():
        if not isinstance(key, str):
            raise SeqnlpError(f"{where}setting names must be strings, not {key!r}")
        key = key.replace("-", "_")
        if key not in names:
            raise SeqnlpError(f"{where}unknown setting {key!r}; known settings: {', '.join(sorted(names))}")
        values[key] = value
        from_file.add(key)
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    typed = {k: v for k, v in given.items() if k in names}
    values.update(typed)
    from_file -= set(typed)

    def label(name: str) -> str:
        # A bad value from a file is blamed on the file's key, one typed on the command line on its flag.
        return f"{where}{name}" if name in from_file and source else flag_name(name)

    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = values.get(f.name)
        if value is None:
            continue
        typ = _field_type(cls, f)
        if typ in (int, float) and isinstance(value, bool):  # bool is an int subclass: refuse true/false as sizes
            raise SeqnlpError(f"{label(f.name)} must be {typ.__name__}, not {value!r}")
        if typ is float and isinstance(value, int):
            values[f.name] = float(value)
        elif typ in (int, float, str, bool) and not isinstance(value, typ):
            raise SeqnlpError(f"{label(f.name)} must be {typ.__name__}, not {_kind(value)} {value!r}")
        elif typing.get_origin(typ) in (list, tuple, dict) and not isinstance(value, typing.get_origin(typ)):
            want = {list: "a list", tuple: "a list", dict: "an object"}[typing.get_origin(typ)]
            raise SeqnlpError(f"{label(f.name)} must be {want}, not {_kind(value)} {value!r}")
    config = cls(**values)
    check(config, label)
    return config


def _kind(value: Any) -> str:
    """How JSON would name the type of `value` (a list, a string, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def to_dict(config: Any) -> dict[str, Any]:
    """The config as a JSON-ready dict."""
    return dataclasses.asdict(config)
