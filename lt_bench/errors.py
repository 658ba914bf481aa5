"""The one exception type users see: the CLI prints its message on one line, with no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LtBenchError(Exception):
    """A problem with the user's input or set-up, explained in the message (what and how to fix)."""


def closest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
