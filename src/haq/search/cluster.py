"""Reaching the Ray cluster of ``--eval-workers``: Ray's import, the address to join and a
quick check that it takes connections. Apart from :mod:`haq.search.parallel` so that the
search's option checks can use it before any data is read (that module imports the setup)."""

from __future__ import annotations

import os
import socket
from typing import Any

from haq.errors import HaqError
from haq.search.config import SearchConfig


def check_workers(cfg: SearchConfig) -> None:
    """What can be refused about the evaluation workers before any data is read (a search
    checks it with the options): Ray not installed, a cluster address that takes no
    connection."""
    if cfg.eval_workers > 1:
        import_ray(cfg.eval_workers)
        address, source = ray_address(cfg.ray_address)
        if address:
            probe(address, f"at {address} (from {source})")


def import_ray(n: int) -> Any:
    try:
        import ray
    except ImportError as err:
        raise HaqError(
            f"--eval-workers {n} needs Ray: pip install 'haq[ray]' (or run with --eval-workers 1)"
        ) from err
    return ray


def ray_address(given: str | None) -> tuple[str | None, str]:
    """The cluster to join and where that came from: ``--ray-address``, else the
    ``RAY_ADDRESS`` environment variable (which Ray itself would read), else none."""
    if given:
        return given, "--ray-address"
    env = os.environ.get("RAY_ADDRESS", "").strip()
    return (env, "the RAY_ADDRESS environment variable") if env else (None, "")


def probe(address: str, where: str, timeout_s: float = 30.0) -> None:
    """Fail in one line, within ``timeout_s``, when a ``host:port`` address takes no
    connection (Ray itself retries for minutes); ``auto`` and other forms go to Ray."""
    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise HaqError(f"cannot reach the Ray cluster {where}: {why}") from err
