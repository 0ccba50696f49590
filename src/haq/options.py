"""Options defined once: a dataclass field carries its default and help text, and the command
line flags, their defaults in ``--help`` and the saved ``config.json`` all come from it.

    @dataclass
    class Cfg:
        lr: float = opt(0.01, "finetune learning rate")

    add_arguments(parser, Cfg)          # --lr, help "finetune learning rate (default 0.01)"
    given = given_options(args, Cfg)    # only the flags the user typed: {"lr": 0.1}

A field whose metadata has no help text is not a flag. A nested dataclass field contributes
its own flags, and its given values come back as a nested dict. ``flag`` renames a flag,
``budget`` marks a dict field whose keys are flags of their own (``--latency 0.5x``), with an
example value for each. ``low``/``high`` bound a number (inclusive), ``above`` excludes its
value: the flag refuses an out-of-range or non-finite value as it is parsed, and
``check_bounds`` applies the same bounds to a loaded configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

_MISSING: Any = dataclasses.MISSING
SEED_MAX = 2**32 - 1  # what numpy and torch both accept as a seed
MAX_WORKERS = 256  # loader processes


def opt(
    default: Any = _MISSING,
    help: str = "",
    *,
    factory: Any = None,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    show_default: bool = True,
    budget: dict[str, str] | None = None,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
) -> Any:
    """A dataclass field with its command-line description."""
    meta = {
        "help": help,
        "flag": flag,
        "choices": choices,
        "show_default": show_default,
        "budget": budget or {},
        "bounds": (low, high, above),
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def bound_error(
    value: float, low: float | None = None, high: float | None = None, above: float | None = None
) -> str | None:
    """Why ``value`` breaks the bounds (or is not finite), or None when it is fine."""
    if not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if above is not None and value <= above:
        return f"must be > {above}, got {value}"
    if low is not None and value < low:
        return f"must be >= {low}, got {value}"
    if high is not None and value > high:
        return f"must be <= {high}, got {value}"
    return None


def number(
    cast: type, low: float | None = None, high: float | None = None, above: float | None = None
) -> Any:
    """An argparse ``type``: parses with ``cast`` (int or float) and checks the bounds."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError as err:
            kind = "an integer" if cast is int else "a number"
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from err
        why = bound_error(value, low, high, above)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    parse.__name__ = cast.__name__
    return parse


def check_bounds(obj: Any) -> str | None:
    """The first bounds violation among the number fields of dataclass ``obj`` (and of its
    nested dataclasses), as ``--flag must be ...``; None when all hold."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            why = check_bounds(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            why = bound_error(value, *f.metadata.get("bounds", (None, None, None)))
            if why:
                why = f"--{f.metadata.get('flag') or f.name.replace('_', '-')} {why}"
        else:
            why = None
        if why:
            return why
    return None


def type_error(cls: type, data: dict[str, Any], prefix: str = "") -> str | None:
    """The first value in ``data`` (a loaded configuration of dataclass ``cls``) whose type is
    not the field's (``bool`` is not a number; numbers must be finite), as ``field 'x' must
    be ...``; nested dataclasses are checked inside their dicts. None when all hold."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, tp = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            why = type_error(tp, value, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            why = _value_error(value, tp)
            why = why and f"field '{prefix}{f.name}' {why}"
        if why:
            return why
    return None


def _value_error(value: Any, tp: Any) -> str | None:
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        if value is None and type(None) in args:
            return None
        return _value_error(value, _base_type(tp))
    origin = typing.get_origin(tp) or tp
    if dataclasses.is_dataclass(tp):
        return f"must be an object (got {value!r})"  # a dict is checked by type_error
    if tp is bool:
        return None if isinstance(value, bool) else f"must be true or false (got {value!r})"
    if tp in (int, float):
        number = isinstance(value, int if tp is int else int | float)
        if not number or isinstance(value, bool):
            kind = "an integer" if tp is int else "a number"
            return f"must be {kind} (got {value!r})"
        return None if math.isfinite(value) else f"must be finite (got {value!r})"
    if tp is str:
        return None if isinstance(value, str) else f"must be a string (got {value!r})"
    if origin is list:
        ok = isinstance(value, list) and all(_value_error(v, args[0]) is None for v in value)
        return (
            None
            if ok
            else f"must be a list of {getattr(args[0], '__name__', args[0])} (got {value!r})"
        )
    if origin is dict:
        ok = isinstance(value, dict) and all(
            _value_error(k, args[0]) is None and _value_error(v, args[1]) is None
            for k, v in value.items()
        )
        return None if ok else f"must be an object of {args[1].__name__} values (got {value!r})"
    return None


def _base_type(tp: Any) -> Any:
    """``int | None`` -> int; other types unchanged."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def _default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc,operator]


def _comma_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One flag per documented field of ``cls`` (and of its nested dataclasses); flags that
    are not typed stay absent from the parsed namespace (``default=SUPPRESS``). A field
    without a default is a required flag; a default of None or a bool is not shown."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        if dataclasses.is_dataclass(tp):
            add_arguments(parser, tp, prefix=f"{prefix}{f.name}.")  # type: ignore[arg-type]
            continue
        meta = f.metadata
        if not meta.get("help"):
            continue
        if meta["budget"]:
            for metric, example in meta["budget"].items():
                parser.add_argument(
                    f"--{metric}", dest=f"{prefix}{f.name}:{metric}", default=argparse.SUPPRESS,
                    metavar="LIMIT", help=meta["help"].format(metric=metric, example=example),
                )  # fmt: skip
            continue
        required = f.default is _MISSING and f.default_factory is _MISSING
        default = None if required else _default(f)
        help_text = meta["help"]
        if meta["show_default"] and default is not None and not isinstance(default, bool):
            shown = ",".join(default) if isinstance(default, list) else default
            help_text += f" (default: {shown})"
        kwargs: dict[str, Any] = {"dest": prefix + f.name, "default": argparse.SUPPRESS}
        if required:
            kwargs["required"] = True
        if tp is not bool and not meta["choices"]:
            kwargs["metavar"] = {int: "N", float: "X"}.get(tp, "TEXT")
        if tp is bool:
            kwargs["action"] = "store_false" if default else "store_true"
        elif typing.get_origin(tp) is list:
            kwargs["type"] = _comma_list
        elif tp in (int, float):
            kwargs["type"] = number(tp, *meta["bounds"])
        else:
            kwargs["type"] = tp
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        flag = meta["flag"] or f.name.replace("_", "-")
        if tp is bool and default:
            flag = f"no-{flag}"  # an option on by default is turned off
        parser.add_argument(f"--{flag}", help=help_text, **kwargs)


def options_from(args: argparse.Namespace, cls: type[T]) -> T:
    """The dataclass ``cls`` filled from a command line parsed with ``add_arguments``: the
    typed flags, the field defaults for the rest (flat dataclasses)."""
    return cls(**given_options(args, cls))


def given_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options typed on the command line, as a (nested) dict of field values."""
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        path, _, key = dest.partition(":")
        parts = path.split(".")
        if parts[0] not in names:
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if key:  # a budget flag: one entry of a dict field
            node.setdefault(parts[-1], {})[key] = value
        else:
            node[parts[-1]] = value
    return out
