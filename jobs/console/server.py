"""`whystream console`: the views of jobs/console/ served over HTTP, for analysts and auditors.

A stdlib `ThreadingHTTPServer`, like the sink's query port: the pages are built on the
server (Python, the same code as the report) and drawn by plotly.js, which the server
serves from the `plotly` wheel, so the console works without any network beyond itself.

    GET  /                                  the models ClickHouse knows; find a decision by id
    GET  /model/NAME                        overview      (?window=1h&history=24h)
    GET  /model/NAME/drift                  drift         (?version=…&stratum=…&window=…&history=…)
    GET  /model/NAME/compare                champion vs challenger
    GET  /decision/ID, /decision?id=ID      one decision (printable), with the answers given about it; a
                                            decision only the decision store holds: its stored record
    POST /decision/ID/verify                recompute it (jobs/analytics/verify.py), show the verdict
    POST /decision/ID/explain               a stored decision without an explanation: explain it now (the
                                            explainer the CLI composes: `whystream explain`'s path), show it
    GET  /static/plotly.min.js              plotly.js from the plotly package
    GET, POST /login                        the token form (only with WHYSTREAM_API_TOKEN)

Every read goes through the SQL guard on a read-only session, or through a running sink's
query port (jobs/clickhouse/query_port.py, `open_query_client`); one page is built at a time.
Who may ask: jobs/console/access.py.
"""

from __future__ import annotations

import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from whystream.errors import ConfigError, WhystreamError
from whystream.jobs.clickhouse.decision_store import stored_decision
from whystream.jobs.clickhouse.sql import DEFAULT_DATABASE, one_line
from whystream.jobs.console import queries
from whystream.jobs.console.access import COOKIE, SECURITY_HEADERS, ConsoleAccess
from whystream.jobs.console.compare_page import compare_view
from whystream.jobs.console.decision_page import answers_html, decision_section, event_row, stored_section
from whystream.jobs.console.drift_page import drift_view
from whystream.jobs.console.html import esc, link, page
from whystream.jobs.console.overview import overview
from whystream.jobs.console.period import fit

PLOTLY_PATH = "/static/plotly.min.js"
MAX_FORM_BYTES = 4096
UNITS = {"m": 60, "h": 3600, "d": 86400}


class NotFound(WhystreamError):
    """A page for something ClickHouse does not hold (an unknown model or decision)."""


def seconds(text: str | None, default: int) -> int:
    """'30m', '2h', '1d' in seconds; the default for anything else.

    >>> seconds("30m", 0), seconds("2h", 0), seconds("1e9d", 60), seconds(None, 60)
    (1800, 7200, 60, 60)
    """
    if text and text[:-1].isdigit() and text[-1] in UNITS and 0 < int(text[:-1]) <= 400:
        return int(text[:-1]) * UNITS[text[-1]]
    return default


def plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


class Console:
    """The pages, from a ClickHouse reader that `connect()` opens (and opens again when a
    sink's query port it read through has gone away)."""

    def __init__(self, connect: Callable[[], object], database: str = DEFAULT_DATABASE, verifier=None,
                 now_ms: Callable[[], int] | None = None, explainer=None):
        from whystream.jobs.analytics.drift import wall_ms

        self.connect = connect
        self.database = database
        self.verifier = verifier  # (client, prediction_id) -> Verdicts (None: no registry, no button)
        self.explainer = explainer  # (client, prediction_id) -> ExplanationEvent or None (None: no button)
        self.now_ms = now_ms or wall_ms
        self._client = None
        self._lock = threading.Lock()

    def render(self, path: str, query: dict[str, str], method: str = "GET") -> str:
        """The HTML of one page; NotFound for an unknown page, model or decision."""
        with self._lock:
            try:
                return self._render(path, query, method)
            except ConfigError:
                self._client = None  # the sink (its query port) went away: reconnect next time
                raise

    @property
    def client(self):
        if self._client is None:
            self._client = self.connect()
        return self._client

    def _render(self, path: str, query: dict[str, str], method: str) -> str:
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if not parts:
            return self.index()
        if parts[0] == "model" and len(parts) in (2, 3):
            return self.model_page(parts[1], parts[2] if len(parts) == 3 else "overview", query)
        if parts == ["decision"] and query.get("id") and method == "GET":
            return self.decision_page(query["id"])
        if parts[0] == "decision" and len(parts) == 2 and method == "GET":
            return self.decision_page(parts[1])
        if parts[0] == "decision" and len(parts) == 3 and parts[2] == "verify" and method == "POST":
            return self.decision_page(parts[1], verify=True)
        if parts[0] == "decision" and len(parts) == 3 and parts[2] == "explain" and method == "POST":
            return self.decision_page(parts[1], explain=True)
        raise NotFound(f"no page {path}")

    def nav(self, model: str | None = None, here: str = "") -> str:
        items = [("/", "models")]
        if model:
            base = "/model/" + urllib.parse.quote(model, safe="")
            items += [(base, "overview"), (base + "/drift", "drift"), (base + "/compare", "champion vs challenger")]
        return "<nav>" + "".join(f"<a href='{esc(h)}'{' class=here' if t == here else ''}>{esc(t)}</a>"
                                 for h, t in items) + "</nav>"

    def _page(self, title: str, body: str, model: str | None = None, here: str = "") -> str:
        return page(f"whystream console: {title}", body, f"<script src='{PLOTLY_PATH}'></script>",
                    self.nav(model, here))

    def index(self) -> str:
        models = queries.known_models(self.client, self.database)
        items = "".join(f"<li>{link('/model/' + urllib.parse.quote(m, safe=''), m)}</li>" for m in models)
        body = ("<h1>whystream console</h1><h2>Models</h2>"
                + (f"<ul>{items}</ul>" if items else "<p class='empty'>no explanations in ClickHouse yet</p>")
                + "<h2>A decision</h2><form method='get' action='/decision'><input name='id' size='40' "
                "placeholder='prediction_id'> <button type='submit'>show</button></form>")
        return self._page("models", body, here="models")

    def model_page(self, model: str, view: str, query: dict[str, str]) -> str:
        if model not in queries.known_models(self.client, self.database):
            raise NotFound(f"unknown model {model!r}")
        period = fit(self.client, model, self.now_ms(), seconds(query.get("window"), 3600),
                     seconds(query.get("history"), 86400), self.database)

        def decision_href(prediction_id: str) -> str:
            return "/decision/" + urllib.parse.quote(prediction_id, safe="")

        if view == "overview":
            return self._page(f"{model} overview", overview(self.client, model, period, decision_href, self.database),
                              model, "overview")
        if view == "drift":
            def href(**changed) -> str:
                keep = {k: v for k, v in {**query, **changed}.items() if v}
                return f"/model/{urllib.parse.quote(model, safe='')}/drift?" + urllib.parse.urlencode(keep)

            body = drift_view(self.client, model, period, self.database, query.get("version") or None,
                              query.get("stratum") or None, href)
            return self._page(f"{model} drift", body, model, "drift")
        if view == "compare":
            return self._page(f"{model} champion vs challenger",
                              compare_view(self.client, model, decision_href, self.database), model,
                              "champion vs challenger")
        raise NotFound(f"no view {view!r} of a model")

    def decision_page(self, prediction_id: str, verify: bool = False, explain: bool = False) -> str:
        found = queries.decision(self.client, prediction_id, self.database)
        if not found:
            return self.stored_page(prediction_id, explain)
        verdicts = {}
        if verify and self.verifier is not None:
            verdicts = {(v.stored.model_name if v.stored else ""): v for v in self.verifier(self.client, prediction_id)}
        action = (f"/decision/{urllib.parse.quote(prediction_id, safe='')}/verify" if self.verifier else None)
        body = "".join(decision_section(r, verdicts.get(r["model_name"]), action,
                                        anchor=f"model-{r['model_name']}" if len(found) > 1 else "")
                       for r in found)  # one id per model's charts where one decision id has several
        body += answers_html(queries.answers(self.client, prediction_id, self.database))
        return self._page(f"decision {prediction_id}", body, found[0]["model_name"])

    def stored_page(self, prediction_id: str, explain: bool) -> str:
        """A decision only the decision store holds: its record with the "Explain now" button, or
        (`explain`) the explanation computed now."""
        stored = stored_decision(self.client, prediction_id, self.database)
        if stored is None:
            raise NotFound(f"no stored explanation of decision {prediction_id!r}, and the decision store "
                           "does not hold it")
        audit = answers_html(queries.answers(self.client, prediction_id, self.database))
        action = (f"/decision/{urllib.parse.quote(prediction_id, safe='')}/explain" if self.explainer else None)
        failed = ""
        if explain and self.explainer is not None:
            event = self.explainer(self.client, prediction_id)
            if event is not None:
                return self._page(f"decision {prediction_id}", decision_section(event_row(event), stored=False) + audit,
                                  stored["model_name"])
            failed = ("Could not explain it now: its stored features are incomplete (some were redacted before "
                      "storing), or the registry no longer holds the version it was scored by; the console's log "
                      "says which.")
        return self._page(f"decision {prediction_id}", stored_section(stored, action, failed) + audit,
                          stored["model_name"])


class ConsoleServer:
    """The console's HTTP server on `access.bind`; `port` 0 picks a free one."""

    def __init__(self, console: Console, access: ConsoleAccess):
        self.console = console
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "whystream-console"
            sys_version = ""

            def do_GET(self):  # noqa: N802 (http.server's naming)
                self._answer("GET")

            def do_POST(self):  # noqa: N802
                self._answer("POST")

            def _answer(self, method: str):
                url = urllib.parse.urlsplit(self.path)
                refused = server.access.refusal(method, url.path, self.headers)
                if refused:
                    status, reason = refused
                    if status == 401 and method == "GET":
                        return self._send(303, b"", "text/plain", {"Location": "/login"})
                    return self._send(status, reason.encode(), "text/plain; charset=utf-8")
                if url.path == "/login":
                    return self._login(method)
                if url.path == "/favicon.ico":
                    return self._send(204, b"", "text/plain")
                if url.path == PLOTLY_PATH and method == "GET":
                    return self._send(200, server.plotly, "application/javascript; charset=utf-8",
                                      {"Cache-Control": "public, max-age=86400"})
                if method == "POST":
                    self._form()  # read (and bound) the body; the verify button sends none of use
                query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
                try:
                    html = server.console.render(url.path, query, method)
                    self._send(200, html.encode(), "text/html; charset=utf-8")
                except NotFound as exc:
                    self._send(404, server.message("not found", str(exc)), "text/html; charset=utf-8")
                except Exception as exc:  # the page says what failed; the console keeps serving
                    self._send(500, server.message("error", one_line(exc)), "text/html; charset=utf-8")

            def _form(self) -> dict[str, str]:
                length = self.headers.get("Content-Length", "0")
                size = int(length) if length.isdigit() else 0
                if size > MAX_FORM_BYTES:
                    return {}
                body = self.rfile.read(size).decode("utf-8", "replace")
                return {k: v[-1] for k, v in urllib.parse.parse_qs(body).items()}

            def _login(self, method: str):
                if server.access.token is None:
                    return self._send(303, b"", "text/plain", {"Location": "/"})
                if method == "POST" and server.access.valid_token(self._form().get("token", "")):
                    cookie = f"{COOKIE}={server.access.session()}; HttpOnly; SameSite=Strict; Path=/"
                    return self._send(303, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
                wrong = "<p class='alert'>wrong token</p>" if method == "POST" else ""
                form = ("<h1>whystream console</h1>" + wrong + "<form method='post' action='/login'>"
                        "<label>token (WHYSTREAM_API_TOKEN) <input type='password' name='token' size='40'></label> "
                        "<button type='submit'>log in</button></form>")
                self._send(401 if wrong else 200, page("whystream console: log in", form, "").encode(),
                           "text/html; charset=utf-8")

            def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None):
                self.send_response(status)
                headers = {**SECURITY_HEADERS, "Content-Type": content_type, "Content-Length": str(len(body)),
                           **(extra or {})}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((access.bind, access.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.access = ConsoleAccess(access.bind, self.port, access.token)
        self.plotly = plotly_js()
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="whystream-console", daemon=True)

    def message(self, title: str, text: str) -> bytes:
        return page(f"whystream console: {title}", f"<h1>{esc(title)}</h1><p>{esc(text)}</p>"
                    "<p><a href='/'>the models</a></p>", "", self.console.nav()).encode()

    def start(self) -> "ConsoleServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
