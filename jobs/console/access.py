"""Who may ask the console for what.

The console shows feature values, scores and reasons of single decisions, so it follows the
rules of the worker's web server (streams/web_access.py, whose `WebAccess.configure` the CLI
applies before the console starts): it binds 127.0.0.1 unless told otherwise, and bound
beyond loopback it will not start without WHYSTREAM_API_TOKEN (from the environment only).
With a token every request needs it, as `Authorization: Bearer <token>` (scripts) or as the
session cookie that `POST /login` sets (browsers; HttpOnly, SameSite=Strict, holding an
HMAC of the token, never the token).

Beyond the token, what a browser on the same machine could be tricked into:

- bound to loopback, the `Host` must name a loopback address and this port: a DNS-rebinding
  page (evil.example resolving to 127.0.0.1) is refused;
- a POST (the verify button) must come from the console's own pages: an `Origin` other than
  the console's own is refused, so another site cannot make the browser run recomputations;
- responses forbid framing and inline content from elsewhere (Content-Security-Policy).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from http.cookies import SimpleCookie

COOKIE = "whystream_console"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' "
                               "'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make a form POST's Origin "null"
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConsoleAccess:
    bind: str
    port: int
    token: str | None = None

    def session(self) -> str:
        """The cookie value a browser holds after logging in (not the token itself)."""
        return hmac.new((self.token or "").encode(), b"whystream-console-session", hashlib.sha256).hexdigest()

    def authorized(self, headers) -> bool:
        if self.token is None:
            return True
        given = headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("Cookie", ""))
        except Exception:  # a malformed cookie header is no session
            return False
        held = cookie.get(COOKIE)
        return held is not None and hmac.compare_digest(held.value.encode(), self.session().encode())

    def valid_token(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def refusal(self, method: str, path: str, headers) -> tuple[int, str] | None:
        """(status, reason) for a request the console must not answer; None to answer it."""
        host = headers.get("Host", "")
        if is_loopback(self.bind) and host not in {f"{name}:{self.port}" for name in LOOPBACK_NAMES}:
            return 403, "Host must be this machine's loopback address and the console's port"
        origin = headers.get("Origin")
        if method == "POST" and origin is not None and origin != f"http://{host}":
            return 403, "requests from other sites' pages are refused"
        if path.split("?")[0] != "/login" and not self.authorized(headers):
            return 401, "this console needs its token: log in at /login"
        return None
