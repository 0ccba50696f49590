"""User-facing errors.

Every mistake a user can make (unknown model, malformed TOML, bits out of range, ...) raises
:class:`HaqError` with a one-line message that says what was wrong and what to do. The CLI
prints that line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class HaqError(Exception):
    """An error caused by the user's input, with a message fit to print as is."""
