"""The worker's web-server access rules, without a worker: a token is at least
16 characters and holds no blank, wherever the server binds (issue 24: 16
spaces were accepted for a 0.0.0.0 bind)."""

from __future__ import annotations

import pytest

from whystream.errors import ConfigError
from whystream.streams.web_access import FAUST_PAGES_OFF, WebAccess


@pytest.mark.parametrize("token", [" " * 16, "\t" * 20, "", "a" * 15, "sixteen chars ok"])
def test_blank_or_short_api_tokens_are_refused_for_any_bind(token):
    for bind in ("0.0.0.0", "127.0.0.1"):
        with pytest.raises(ConfigError, match="WHYSTREAM_API_TOKEN"):
            WebAccess.configure(bind, {"WHYSTREAM_API_TOKEN": token})
    assert WebAccess.configure("0.0.0.0", {"WHYSTREAM_API_TOKEN": "x" * 16}).token == "x" * 16


def test_faust_pages_are_all_switched_off():
    """Every page Faust would add (faust/web/base.py BLUEPRINT_FLAGS) has its setting off."""
    from faust.web.base import BLUEPRINT_FLAGS

    assert set(BLUEPRINT_FLAGS.values()) <= set(FAUST_PAGES_OFF) and not any(FAUST_PAGES_OFF.values())
