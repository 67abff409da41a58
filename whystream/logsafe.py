"""Text from producers made safe to log and to show: a feature name, a model
name or an id sent in an event is somebody else's input. `printable` escapes
every control character (no forged log lines, no terminal escape sequences)
and bounds the length (no megabyte log lines).

    >>> printable("amount\\n2026-12-01 WARNING forged")
    'amount\\\\n2026-12-01 WARNING forged'
    >>> printable("x" * 10, limit=4)
    'xxxx... (10 characters)'
"""

from __future__ import annotations

import unicodedata

LIMIT = 200


def _escaped(ch: str) -> str:
    if ch in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch]
    if ch == "\\" or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        return "\\\\" if ch == "\\" else ch.encode("unicode_escape").decode("ascii")
    return ch


def printable(text: object, limit: int = LIMIT) -> str:
    """`text` with control and format characters escaped, cut to `limit` characters."""
    text = str(text)
    shown = "".join(map(_escaped, text[:limit]))
    return shown if len(text) <= limit else f"{shown}... ({len(text):,} characters)"
