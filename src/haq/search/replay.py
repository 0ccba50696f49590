"""Replaying the unchanged part of a network in forward passes that change one layer.

The sensitivity pass runs the same batch through the network hundreds of times, each time
with one layer quantized. Every module that runs before that layer sees exactly the inputs it
saw in the full-precision pass, so its output can be replayed instead of computed. This works
for any ``nn.Module`` tree, without tracing: a reference pass records each module call's
output keyed by the identity of its input tensors; in a pass that changes layer ``L``, every
module except ``L`` and the modules containing it returns the recorded output when it is
called with the very tensors it saw before (the replayed outputs of the modules before it),
and computes as usual otherwise (everything after ``L``).

What could make a replayed pass differ from a full one is code that changes a recorded tensor
in place after another module has read it. :class:`PrefixReplay` therefore checks the first
pass around each layer against a full pass, and turns itself off for the rest of the run at
the first difference; it also stays off when the recorded outputs would need more than
``max_bytes`` of memory. A replayed pass gives the same numbers as a full one, bit for bit on
the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

Key = tuple[Any, ...]


def _key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Key:
    """A call's inputs by identity (tensors) or value (anything else that is hashable)."""
    parts: list[Any] = []
    for value in (*args, *sorted(kwargs.items())):
        item = value[1] if isinstance(value, tuple) and len(value) == 2 else value
        if isinstance(item, Tensor):
            parts.append(("t", id(item)))
        elif isinstance(item, (int, float, bool, str, type(None))):
            parts.append(("v", item))
        else:
            parts.append(("o", id(item)))  # a fresh list or dict never matches: computed
    return tuple(parts)


def _nbytes(output: Any) -> int:
    if isinstance(output, Tensor):
        return output.numel() * output.element_size()
    if isinstance(output, (tuple, list)):
        return sum(_nbytes(o) for o in output)
    return 0


class PrefixReplay:
    """The recorded full-precision pass of ``model`` on ``x`` (see the module doc)."""

    def __init__(self, model: nn.Module, x: Tensor, max_bytes: int = 2 << 30) -> None:
        self.model, self.max_bytes = model, max_bytes
        self.calls: dict[nn.Module, dict[Key, Any]] = {}
        self._inputs: list[Any] = []  # held so that no recorded id is reused
        self._bytes = 0
        self.enabled = True
        self.checked: set[str] = set()
        hooks = [
            m.register_forward_hook(self._record, with_kwargs=True)
            for m in model.modules()
            if m is not model
        ]
        try:
            self.output = model(x)
        finally:
            for h in hooks:
                h.remove()
        if not self.enabled:
            self.calls.clear()
            self._inputs.clear()

    def _record(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if not self.enabled:
            return
        self._bytes += _nbytes(output)
        if self._bytes > self.max_bytes:
            self.enabled = False
            return
        self.calls.setdefault(module, {})[_key(args, kwargs)] = output
        self._inputs.append((args, kwargs))

    def _replayed(self, table: dict[Key, Any], forward: Callable[..., Any]) -> Callable[..., Any]:
        def replay(*args: Any, **kwargs: Any) -> Any:
            out = table.get(_key(args, kwargs))
            return forward(*args, **kwargs) if out is None else out

        return replay

    @contextmanager
    def around(self, name: str) -> Iterator[None]:
        """Within the block, forward passes of the model replay every module except the layer
        ``name`` and the modules containing it (names taken from the unmodified model)."""
        if not self.enabled:
            yield
            return
        keep = {name} | {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        patched: list[tuple[nn.Module, Any]] = []
        for mod_name, module in self.model.named_modules():
            inside = mod_name in keep or mod_name.startswith(name + ".")
            if inside or module is self.model or module not in self.calls:
                continue
            patched.append((module, module.__dict__.get("forward")))
            module.forward = self._replayed(self.calls[module], module.forward)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for module, own in patched:
                if own is None:
                    del module.forward
                else:
                    module.forward = own  # type: ignore[method-assign]

    def run(self, name: str, forward: Callable[[], Tensor]) -> Tensor:
        """``forward()`` with the layer ``name`` changed, replayed around it. The first pass
        around each layer is checked against a full pass; a difference turns replay off."""
        if not self.enabled:
            return forward()
        with self.around(name):
            out = forward()
        if name not in self.checked:
            self.checked.add(name)
            full = forward()
            same = torch.equal(out, full) if out.device.type == "cpu" else torch.allclose(out, full)
            if not same:
                self.enabled = False
                self.calls.clear()
                self._inputs.clear()
                return full
        return out
