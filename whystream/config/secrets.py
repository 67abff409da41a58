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


# Every place a URL carries a secret, as RFC 3986 and the clients' parsers read it:
# the password of the userinfo (up to the authority's last `@`, as urlsplit takes
# it), a query or fragment parameter whose name says secret (`?password=`,
# `&token=`, `#access_token=`, redis-py's `?password=`), and any fragment.
_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^/\s]+)@")
_SECRET_PARAM = re.compile(r"(?i)(?<![\w.%-])(?P<key>[\w.-]*(?:pass|pwd|secret|token|key|auth|credential|sig|session)"
                           r"[\w.-]*)=(?P<value>[^&#;\s'\"]*)")
_URL_FRAGMENT = re.compile(r"(?P<url>[A-Za-z][A-Za-z0-9+.-]*://[^\s#'\"]*)#(?P<fragment>[^\s'\"]+)")
MASK = "***"


def mask_secrets(text: str) -> str:
    """`text` with every secret of every URL in it replaced by ***: userinfo
    passwords, secret-named parameters (also outside a URL, as clients print
    `/?user=a&password=...` in their errors) and fragments.

    >>> mask_secrets("http://h:8123/?user=a&password=S3cret and redis://u:p@ss@h:1/0#x")
    'http://h:8123/?user=a&password=*** and redis://u:***@h:1/0#***'
    """
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", str(text))
    text = _URL_FRAGMENT.sub(lambda m: f"{m['url']}#{MASK}", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}={MASK}", text)


def has_secret(url: str | None) -> bool:
    """Whether `url` carries a secret mask_secrets would hide (a command line must not)."""
    return bool(url) and mask_secrets(url) != url


def prefixed(environ: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The variables of `environ` starting with `prefix`, each `<VAR>_FILE` read as
    the value of `<VAR>` (a mounted secret; `<VAR>` itself wins): for the
    sections whose every variable is a client property (WHYSTREAM_KAFKA_*,
    WHYSTREAM_SCHEMA_REGISTRY_*), never passed on as a property `....file`."""
    values = {}
    for var in sorted(environ):
        if var.startswith(prefix) and var.endswith("_FILE") and len(var) > len(prefix) + len("_FILE"):
            values[var[:-len("_FILE")]] = from_file(var[:-len("_FILE")], environ)
    values.update((var, value) for var, value in environ.items() if var.startswith(prefix) and not var.endswith("_FILE"))
    return {var: value for var, value in sorted(values.items()) if value is not None}


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
