"""Text from producers made safe to log and to show: a feature name, a model
name or an id sent in an event is somebody else's input. `printable` escapes
every control character (no forged log lines, no terminal escape sequences)
and bounds the length (no megabyte log lines). `mask_secrets_in_logs` makes
every log record of the process go through `mask_secrets` (a client library's
error may quote a URL with its password).

    >>> printable("amount\\n2026-12-01 WARNING forged")
    'amount\\\\n2026-12-01 WARNING forged'
    >>> printable("x" * 10, limit=4)
    'xxxx... (10 characters)'
"""

from __future__ import annotations

import logging
import unicodedata

from whystream.config.secrets import mask_secrets

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


def mask_secrets_in_logs() -> None:
    """From now on every log record's message, whoever logs it, has the secrets of
    its URLs masked (mask_secrets); installed once by the command line."""
    make = logging.getLogRecordFactory()
    if getattr(make, "masks_secrets", False):
        return

    def masked_record(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (a bad format: logging reports it when the record is emitted)
            return record
        shown = mask_secrets(message)
        if shown != message:
            record.msg, record.args = shown, ()
        return record

    masked_record.masks_secrets = True
    logging.setLogRecordFactory(masked_record)
