"""Code a user plugs in by name: ``package.module:function`` or ``path/to/file.py:function``
(a model factory, a timing runner). Torch-free, so the hardware side can use it."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from haq.errors import HaqError


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """The function ``spec`` names; ``what`` it is for goes into every error."""
    target, sep, func = spec.rpartition(":")
    if not sep or not target or not func:
        raise HaqError(f"{what} {spec!r}: give 'package.module:function' or 'file.py:function'")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise HaqError(f"{what} file {target!r} not found (spec {spec!r})")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        if mod_spec is None or mod_spec.loader is None:
            raise HaqError(f"cannot import {what} file {target!r}")
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as err:
            raise HaqError(f"importing {target!r} failed: {err}") from err
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise HaqError(f"cannot import module {target!r} (spec {spec!r}): {err}") from err
    fn = getattr(module, func, None)
    if not callable(fn):
        raise HaqError(f"{target!r} has no callable {func!r} (spec {spec!r})")
    return fn  # type: ignore[no-any-return]
