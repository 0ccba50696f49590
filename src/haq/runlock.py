"""One writer per run directory: a lock file ``.haq.lock`` holding the owner's pid, host and
command, locked with ``fcntl.flock`` for as long as the owner works in the directory.

The kernel releases the lock when its process dies, however it dies, so a lock file left by a
killed process is stale by construction: the next owner takes it over and says so. A second
writer while the owner lives gets one clear error. ``flock`` is per host: on a shared network
file system two hosts may not see each other's locks (the message names the host for that).
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from haq.errors import HaqError

LOCK_NAME = ".haq.lock"


@contextmanager
def run_lock(
    run_dir: str | Path, command: str, create: bool = False, shared: bool = False
) -> Iterator[None]:
    """Hold the lock of ``run_dir`` (``create``: made if absent) while the block runs.
    ``shared``: a reader's lock (``haq export``): readers do not exclude each other, a writer
    excludes them all."""
    path = Path(run_dir) / LOCK_NAME
    if not create and not Path(run_dir).is_dir():
        raise HaqError(f"run directory {str(run_dir)!r} not found")
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")  # noqa: SIM115 (held open for the duration of the block)
    except OSError as err:
        raise HaqError(f"cannot lock run directory {str(run_dir)!r}: {err.strerror}") from err
    try:
        try:
            fcntl.flock(fh, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError as err:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            raise HaqError(
                f"run directory {run_dir} is in use by {owner}; wait for it to finish or stop it"
            ) from err
        if shared:
            yield
            return
        _own(fh, command)
        try:
            yield
        finally:  # a clean exit empties the file: content found later means a dead owner
            fh.seek(0)
            fh.truncate()
    finally:
        fh.close()


def _own(fh: Any, command: str) -> None:
    """Write this process into the lock file (saying so when a dead owner's is replaced)."""
    fh.seek(0)
    stale = fh.read().strip()
    if stale:
        print(f"note: took over the lock of {stale}, which is no longer running", file=sys.stderr)
    fh.seek(0)
    fh.truncate()
    fh.write(
        f"pid {os.getpid()} on host {socket.gethostname()} ({command}, since "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n"
    )
    fh.flush()
