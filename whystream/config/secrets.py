"""Secrets in settings: URLs with passwords masked for printing, values read from
mounted secret files (`<VAR>_FILE`), and files only their owner can read."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from whystream.errors import ConfigError


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds connection settings or a
    token): created 0600 under a temporary name, then renamed into place, so
    it is never readable by others, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(partial, path)


_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")


def mask_secrets(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))


def has_password(url: str | None) -> bool:
    return bool(url) and _URL_PASSWORD.search(url) is not None


def from_file(var: str, environ: Mapping[str, str]) -> str | None:
    """The value of `var` read from the file named by `<var>_FILE` in `environ` (as
    container secrets are mounted), stripped of the trailing newline; None when unset."""
    path = environ.get(f"{var}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as exc:
        raise ConfigError(f"{var}_FILE", f"cannot read {path}: {exc.strerror}") from None
