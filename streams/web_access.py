"""Who may ask the worker's web server for what.

`/metrics` and `/health` stay open, as Prometheus and load balancers expect;
they reveal counts and reachability, never settings or feature values (so
does Faust's index page `/`, `{"status": "OK"}`). Faust's other pages
(`/router/`, `/table/`, `/graph/`, statistics, `/performance/`) are switched
off (FAUST_PAGES_OFF). `/explain/{id}` returns feature values, scores and
reasons, so it is guarded:

- the server binds 127.0.0.1 unless `--web-bind` says otherwise, and
  advertises the address it binds;
- bound beyond loopback, a worker refuses to start without
  WHYSTREAM_API_TOKEN (16 characters or more, no blanks; a token set but
  blank is refused wherever the server binds), and `/explain` then wants `Authorization: Bearer
  <token>`; with a token set, it wants it on loopback too.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from dataclasses import dataclass
from typing import Mapping

from whystream.errors import ConfigError

TOKEN_VAR = "WHYSTREAM_API_TOKEN"
MIN_TOKEN_LENGTH = 16
# Faust's settings for its own pages (faust/web/base.py BLUEPRINT_FLAGS), all off.
FAUST_PAGES_OFF = {"web_router_enabled": False, "web_tables_enabled": False, "web_graph_enabled": False,
                   "web_stats_enabled": False, "web_metrics_enabled": False}


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebAccess:
    bind: str = "127.0.0.1"
    token: str | None = None

    @classmethod
    def configure(cls, bind: str, environ: Mapping[str, str], flag: str = "--web-bind",
                  exposes: str = "/explain (feature values, scores)") -> "WebAccess":
        """The access rules for a server bound to `bind`, with the token of `environ`
        (Settings.environ); ConfigError when a non-loopback bind has no (or a too short) token.
        `flag` and `exposes` name the bind option and what it would expose, for that error
        (the worker's web server by default; `whystream console` too)."""
        token = environ.get(TOKEN_VAR)
        if token is not None and (len(token) < MIN_TOKEN_LENGTH or any(ch.isspace() for ch in token)):
            raise ConfigError(TOKEN_VAR, f"at least {MIN_TOKEN_LENGTH} characters and no blanks, please "
                                         "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        if not is_loopback(bind) and token is None:
            raise ConfigError(TOKEN_VAR, f"{flag} {bind} makes {exposes} reachable from other machines; set "
                                         f"{TOKEN_VAR} to a secret that callers send as "
                                         "`Authorization: Bearer <token>`, or bind 127.0.0.1")
        return cls(bind, token)

    @property
    def advertised_host(self) -> str:
        """The address others reach the server at: the bind address, or the
        host's name when bound to every interface."""
        return socket.gethostname() if self.bind in ("0.0.0.0", "::", "") else self.bind

    def may_explain(self, authorization: str | None) -> bool:
        if self.token is None:
            return True
        return hmac.compare_digest((authorization or "").encode(), f"Bearer {self.token}".encode())
