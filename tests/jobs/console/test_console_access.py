"""Who may ask the console for what (jobs/console/access.py), attacked over real HTTP: a foreign
Host (DNS rebinding), a cross-site POST, a missing or wrong token, the login form's cookie; and
`whystream console` refusing a non-loopback bind without a token. Against an empty database:
every refusal happens before a page is built."""

from __future__ import annotations

import http.client

import pytest

from whystream.jobs.clickhouse.query_port import open_query_client
from whystream.jobs.console.access import COOKIE, ConsoleAccess
from whystream.jobs.console.server import Console, ConsoleServer

TOKEN = "s3cret-token-of-the-console-0123456789"


@pytest.fixture
def serve(stack, db):
    _, database = db
    servers = []

    def start(token: str | None = None, explainer=None) -> int:
        console = Console(lambda: open_query_client(stack, database), database, explainer=explainer)
        server = ConsoleServer(console, ConsoleAccess("127.0.0.1", 0, token)).start()
        servers.append(server)
        return server.port

    yield start
    for server in servers:
        server.stop()


def ask(port: int, path: str = "/", method: str = "GET", body: str = "", **headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers.setdefault("Host", f"127.0.0.1:{port}")
    if body:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body.encode() or None, headers=headers)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read().decode()


def test_loopback_without_a_token(serve):
    port = serve()
    status, headers, page = ask(port)
    assert status == 200 and "whystream console" in page and "no explanations in ClickHouse yet" in page
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    # DNS rebinding: a page of evil.example resolving to 127.0.0.1 names its own host
    assert ask(port, Host="evil.example")[0] == 403
    assert ask(port, Host=f"evil.example:{port}")[0] == 403
    assert ask(port, Host=f"localhost:{port}")[0] == 200
    # another site's page cannot make the browser post (the verify button)
    assert ask(port, "/decision/x/verify", "POST", Origin="http://evil.example")[0] == 403
    assert ask(port, "/decision/x/verify", "POST", Origin="null")[0] == 403
    status, _, page = ask(port, "/decision/x/verify", "POST", Origin=f"http://127.0.0.1:{port}")
    assert status == 404 and "no stored explanation of decision" in page  # let through, and nothing there
    assert ask(port, "/model/nosuch")[0] == 404
    js = ask(port, "/static/plotly.min.js")
    assert js[0] == 200 and js[1]["Content-Type"].startswith("application/javascript") and len(js[2]) > 1_000_000


def test_explain_now_is_a_post_under_the_same_rules_as_verify(serve):
    asked = []  # the explainer (our own seam) must not run for any refused or unknown request
    port = serve(TOKEN, explainer=lambda client, prediction_id: asked.append(prediction_id))
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert ask(port, "/decision/x/explain", "POST")[0] == 401  # no token
    assert ask(port, "/decision/x/explain", "POST", Origin="http://evil.example", **bearer)[0] == 403
    assert ask(port, "/decision/x/explain", "POST", Origin="null", **bearer)[0] == 403
    assert ask(port, "/decision/x/explain", "GET", **bearer)[0] == 404  # a link cannot trigger it
    status, _, page = ask(port, "/decision/x/explain", "POST", Origin=f"http://127.0.0.1:{port}", **bearer)
    assert status == 404 and "the decision store does not hold it" in page
    assert asked == []


def test_a_token_guards_every_page_and_the_login_sets_a_session(serve):
    port = serve(TOKEN)
    status, headers, _ = ask(port)
    assert status == 303 and headers["Location"] == "/login"  # a browser is sent to the form
    assert ask(port, "/static/plotly.min.js")[0] == 303
    assert ask(port, "/decision/x/verify", "POST")[0] == 401
    assert ask(port, Authorization="Bearer wrong-token-wrong-token")[0] == 303
    assert ask(port, Authorization=f"Bearer {TOKEN}")[0] == 200  # scripts
    assert ask(port, Cookie=f"{COOKIE}={TOKEN}")[0] == 303  # the cookie holds no token, nor accepts one
    assert ask(port, Cookie='garbage="')[0] == 303
    status, _, page = ask(port, "/login", "POST", body="token=wrong")
    assert status == 401 and "wrong token" in page
    status, headers, _ = ask(port, "/login", "POST", body=f"token={TOKEN}")
    cookie = headers["Set-Cookie"]
    assert status == 303 and "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    session = cookie.split(";")[0]
    assert ask(port, Cookie=session)[0] == 200
    assert ask(port, Cookie=session, Host="evil.example")[0] == 403  # the session does not lift the Host rule


def test_the_session_is_bound_to_the_token():
    one, other = ConsoleAccess("127.0.0.1", 1, TOKEN), ConsoleAccess("127.0.0.1", 1, TOKEN + "x")
    assert one.session() != other.session() and TOKEN not in one.session()
    assert ConsoleAccess("0.0.0.0", 1, TOKEN).refusal("GET", "/", {"Host": "anything:1"}) is not None  # no token
    assert ConsoleAccess("0.0.0.0", 1, TOKEN).refusal("GET", "/", {"Host": "anything:1",
                                                                    "Authorization": f"Bearer {TOKEN}"}) is None


def test_a_console_bound_beyond_loopback_needs_a_token(tmp_path):
    from typer.testing import CliRunner

    from whystream.cli import app
    from whystream.errors import ConfigError

    result = CliRunner().invoke(app, ["--home", str(tmp_path), "console", "--bind", "0.0.0.0"],
                                env={"WHYSTREAM_API_TOKEN": None})  # None: unset
    assert isinstance(result.exception, ConfigError)  # main() prints it as one line, exit 2
    message = str(result.exception)
    assert "WHYSTREAM_API_TOKEN" in message and "--bind 0.0.0.0" in message and "the console" in message
    for bad in ("short", "", " " * 20):  # too short, or set but blank: refused wherever it binds
        short = CliRunner().invoke(app, ["--home", str(tmp_path), "console"], env={"WHYSTREAM_API_TOKEN": bad})
        assert isinstance(short.exception, ConfigError) and "16 characters" in str(short.exception)
