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
example value for each.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

_MISSING: Any = dataclasses.MISSING


def opt(
    default: Any = _MISSING,
    help: str = "",
    *,
    factory: Any = None,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    show_default: bool = True,
    budget: dict[str, str] | None = None,
) -> Any:
    """A dataclass field with its command-line description."""
    meta = {
        "help": help,
        "flag": flag,
        "choices": choices,
        "show_default": show_default,
        "budget": budget or {},
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp: Any) -> Any:
    """``int | None`` -> int; other types unchanged."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def _default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _comma_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One flag per documented field of ``cls`` (and of its nested dataclasses); flags that
    are not typed stay absent from the parsed namespace (``default=SUPPRESS``)."""
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
        default = _default(f)
        help_text = meta["help"]
        if meta["show_default"]:
            shown = ",".join(default) if isinstance(default, list) else default
            help_text += f" (default: {shown})"
        kwargs: dict[str, Any] = {"dest": prefix + f.name, "default": argparse.SUPPRESS}
        if tp is not bool and not meta["choices"]:
            kwargs["metavar"] = {int: "N", float: "X"}.get(tp, "TEXT")
        if tp is bool:
            kwargs["action"] = "store_true"
        elif typing.get_origin(tp) is list:
            kwargs["type"] = _comma_list
        else:
            kwargs["type"] = tp
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        flag = meta["flag"] or f.name.replace("_", "-")
        parser.add_argument(f"--{flag}", help=help_text, **kwargs)


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
