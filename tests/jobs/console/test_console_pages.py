"""The console's pages and the report in a real browser (headless chromium), against one data
set in chDB (tests/support/console_data.py): every chart drawn with the marks its data asks
for, a decision page with the decision's own principal and adverse reasons, the score check
and the answers given about it, a decision only the decision store holds, the verify button,
the report opening from a file with nothing to fetch. Screenshots: tests/support/browser.py."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from support import console_data
from support.browser import charts_drawn, marks, overlapping_labels, save_page, wait_for
from support.chdb import MINUTE_MS
from whystream.cli.console import NowExplainer
from whystream.jobs.analytics import drift_sql
from whystream.jobs.analytics.verify import verify_ids
from whystream.jobs.clickhouse import connection as ch
from whystream.jobs.clickhouse.query_port import open_query_client
from whystream.jobs.console.access import ConsoleAccess
from whystream.jobs.console.drift_page import OVER_TIME, STATISTICS, ranked_features
from whystream.jobs.console.period import fit
from whystream.jobs.console.report import build_report
from whystream.jobs.console.server import Console, ConsoleServer

BARS, POINTS, WATERFALL = ".barlayer .point", ".scatterlayer .points path", ".waterfalllayer .point"
BAR_TEXT = ".waterfalllayer .point text"


@pytest.fixture(scope="module")
def data(stack, tmp_path_factory):
    database = f"t_{uuid.uuid4().hex[:10]}"
    client = ch.connect(stack, database)
    end = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    built = console_data.build(client, database, tmp_path_factory.mktemp("console"), end)
    yield built, client
    client.command(f"DROP DATABASE IF EXISTS {database} SYNC")


@pytest.fixture(scope="module")
def console(stack, data):
    built, _ = data

    def verify(client, prediction_id):
        return verify_ids(client, stack, built.registry, [prediction_id], database=built.database)

    explainer = NowExplainer(stack.with_(registry=built.registry.root), built.database)  # as the CLI composes it
    server = ConsoleServer(Console(lambda: open_query_client(stack, built.database), built.database, verify,
                                   now_ms=lambda: built.end_ms + MINUTE_MS, explainer=explainer),
                           ConsoleAccess("127.0.0.1", 0)).start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()
    explainer.close()


def load(browser, url: str) -> int:
    browser.get(url)
    return charts_drawn(browser)


def test_overview(browser, console, data, screenshots):
    built, _ = data
    assert load(browser, f"{console}/model/credit?window=10m") == 3  # health, latency, reasons
    text = browser.find_element("tag name", "main").text
    # "fallback" is defined where it first appears; latency is measured from broker receipt (received_at)
    first = text.lower().index("fallback")
    assert text[first:first + 60].startswith("Fallback: when live TreeSHAP fails")
    assert "when the broker received the decision" in text and "Replayed event times" not in text
    assert "latency from receipt p50" in text and "event time (latency_ms)" not in text
    # score consistency: the champion's mismatched producer scores of the period, counted; an alert (≈10% > 1%)
    period = fit(data[1], "credit", built.end_ms + MINUTE_MS, 600, 86400, built.database)
    mismatched = sum(e["score_mismatch"] for e in built.events if period.start_ms <= e["event_time"] < period.end_ms)
    [row] = browser.find_elements("css selector", "table.score-consistency tbody tr")
    cells = [c.text for c in row.find_elements("tag name", "td")]
    assert cells[0] == built.model.version and cells[2] == f"{mismatched:,}" and mismatched > 0
    assert cells[5] == "ALERT"
    codes = {r["code"] for e in built.events for r in e["principal_reasons"]}
    assert marks(browser, "fig-reasons", BARS) == len(codes) > 1
    adverse = [e for e in built.events if e["principal_reasons"]]
    links = browser.find_elements("css selector", "table.adverse tbody a")
    assert len(links) == min(50, len(adverse))
    newest = max(adverse, key=lambda e: (e["event_time"], e["prediction_id"]))  # ties: the page's order differs
    assert any(a.text == newest["prediction_id"] for a in links[:5])
    save_page(browser, screenshots, "overview")


def test_drift(browser, console, data, screenshots):
    built, client = data
    drawn = load(browser, f"{console}/model/credit/drift?window=10m")
    assert drawn == 5 + 2 + 1  # a histogram per feature, statistics and mean |SHAP| over time, input drift
    rows = browser.find_elements("css selector", "table.drift tbody tr")
    assert rows[0].text.startswith("amount") and "psi" in rows[0].text  # the shifted feature, alerted
    # the champion's drift by default; the challenger's shadow explanations (same decisions, same weights) one
    # click away, named as such
    assert f"Per feature, version {built.model.version}" in browser.find_element("tag name", "main").text
    shadow = browser.find_element("link text", f"{built.challenger.version} (challenger's shadow)")
    assert f"version={built.challenger.version}" in shadow.get_attribute("href")
    end = built.end_ms
    hist = drift_sql.window_histograms(client, "credit", built.model.version, ["amount"], end - 10 * MINUTE_MS, end,
                                       built.database)["amount"]
    filled = sum(1 for r, w in zip(hist["reference"], hist["window"]) if r > 0 or w > 0)
    assert marks(browser, "fig-hist-amount", BARS) == 2 * filled
    ticks_weight = rows[0].find_elements("tag name", "td")[7].text  # weighted n, all strata
    ticks = [t.text for t in browser.find_elements("css selector", "#fig-hist-amount .xtick text")]
    assert len(ticks) == filled and all(re.match(r"^(< |≥ |\[)-?\d", t) for t in ticks), ticks  # real ranges
    # every statistic over time drawn, and an alert marker for each alert on the features shown
    champion = built.model.version  # the version shown; the monitor judges the challenger's shadows apart
    shown = ranked_features([r for r in drift_sql.feature_drift(client, "credit", end - 10 * MINUTE_MS, end,
                                                                built.database) if r["model_version"] == champion])
    alerted = [a for a in built.alerts if a["feature"] in shown[:OVER_TIME] and a["statistic"] in STATISTICS
               and a["model_version"] == champion]
    traced = browser.execute_script("const d=document.getElementById('fig-drift-over-time').data;"
                                    "return [d.reduce((n,t)=>n+t.x.length,0),"
                                    "d.filter(t=>t.name=='alert').reduce((n,t)=>n+t.x.length,0)]")
    assert traced[1] == len(alerted) > 0
    assert marks(browser, "fig-drift-over-time", POINTS) == traced[0]
    # mean |SHAP| over time is the version's own (not mixed with the challenger's shadows): the first minute of
    # the first feature, as the inclusion-weighted mean over the stored exact explanations
    first = [e for e in built.events if e["event_time"] < built.first_minute_ms + MINUTE_MS
             and e["source"] in ("LIVE", "CACHE")]
    j = console_data.FEATURES.index(shown[0])
    expected = sum(e["inclusion_weight"] * abs(e["attributions"][j]["shap"]) for e in first) / \
        sum(e["inclusion_weight"] for e in first)
    plotted = browser.execute_script("return document.getElementById('fig-mean-abs-shap').data[0].y[0]")
    assert plotted == pytest.approx(expected, rel=1e-9)
    save_page(browser, screenshots, "drift")
    browser.find_element("link text", "web").click()  # the same view, one stratum
    wait_for(browser, "fig-drift-over-time")
    assert charts_drawn(browser) >= 3 and "stratum web" in browser.find_element("tag name", "main").text
    # the histograms are the stratum's too: their weight is the stratum's weighted n in the table
    amount = browser.find_element("css selector", "table.drift tbody tr").find_elements("tag name", "td")
    assert amount[0].text == "amount"
    title = browser.find_element("css selector", "#fig-hist-amount .gtitle").text
    assert f"weighted n {amount[7].text}" in title and amount[7].text != ticks_weight
    save_page(browser, screenshots, "drift-stratum-web")


def test_a_decision_page_shows_its_reasons_and_recomputes(browser, console, data, screenshots):
    built, _ = data
    event = built.exact_adverse()[0]
    assert load(browser, f"{console}/decision/{event['prediction_id']}") == 2  # waterfall, probability
    assert marks(browser, "fig-waterfall", WATERFALL) == len(console_data.FEATURES) + 2  # base, each, score
    rows = browser.find_elements("css selector", "table.reasons tbody tr")
    shown = [r.find_elements("tag name", "td")[1].text for r in rows]
    assert shown == [r["code"] for r in event["principal_reasons"]] and shown
    assert console_data.CODES[event["principal_reasons"][0]["feature"]][1] in rows[0].text
    adverse = browser.find_elements("css selector", "table.adverse-reasons tbody tr")
    assert [r.find_elements("tag name", "td")[1].text for r in adverse] == [a["feature"] for a in
                                                                             event["adverse_reasons"]]
    assert browser.find_element("id", "score-mismatch").text == "matches the producer's score"
    text = browser.find_element("tag name", "main").text
    assert f"{event['explained_at'] - event['received_at']} ms from broker receipt" in text
    assert "no explain request has asked about this decision" in text
    assert f"{event['score']:.2%}" in text and "Not recomputed" in text and event["model_version"] in text
    save_page(browser, screenshots, "decision")
    browser.find_element("id", "verify").click()
    assert wait_for(browser, "verify-status").text == "MATCH"
    charts_drawn(browser)
    save_page(browser, screenshots, "decision-verified")
    # printed, it is the decision's file: no navigation, no button
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert not browser.find_element("tag name", "nav").is_displayed()
    assert "Adverse action file" in browser.find_element("tag name", "main").text
    save_page(browser, screenshots, "decision-print")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})


def test_an_approval_says_what_almost_declined_it_its_score_check_and_who_asked(browser, console, data,
                                                                               screenshots):
    built, _ = data
    event = built.answered  # an approval whose producer score is 0.2 below the model's, asked about by an auditor
    load(browser, f"{console}/decision/{event['prediction_id']}")
    assert browser.find_element("id", "score-mismatch").text.startswith("MISMATCH")
    text = browser.find_element("tag name", "main").text
    assert f"model's own score {event['model_score']:,.4f}" in text and "decision approve" in text
    adverse = browser.find_elements("css selector", "table.adverse-reasons tbody tr")
    assert [r.find_elements("tag name", "td")[1].text for r in adverse] == [a["feature"] for a in
                                                                             event["adverse_reasons"]] != []
    [answer] = browser.find_elements("css selector", "table.answers tbody tr")
    cells = [c.text for c in answer.find_elements("tag name", "td")]
    assert cells[0] == console_data.AUDITOR and cells[2:4] == ["req-0001", event["model_version"]]
    assert cells[5] == "store"
    # its long feature values (merchant_risk = 0.0333309268) are cut on the axis, whole on hover, and no bar's
    # text runs over a label
    labels = [t.text for t in browser.find_elements("css selector", "#fig-waterfall .ytick text")]
    assert len(labels) == len(console_data.FEATURES) + 2 and all(len(t) <= 40 for t in labels)
    assert overlapping_labels(browser, "fig-waterfall", BAR_TEXT) == []
    hovered = browser.execute_script("return document.getElementById('fig-waterfall').data[0].customdata")
    values = {a["feature"]: a["value"] for a in event["attributions"]}
    assert {h.split(" = ")[0]: float(h.split(" = ")[1]) for h in hovered[1:-1]} == pytest.approx(values, rel=1e-5)
    save_page(browser, screenshots, "decision-approval-audited")
    browser.get(f"{console}/decision/nothing-of-that-name")
    assert "the decision store does not hold it" in browser.find_element("tag name", "body").text


def test_a_stored_decision_is_explained_now_on_request(browser, console, data, screenshots):
    built, client = data
    # a decision only the decision store holds (an approval the sampler left out): said so, with its record
    browser.get(f"{console}/decision/{console_data.STORED_ONLY}")  # no chart to wait for
    assert browser.find_element("id", "not-explained").text.startswith("Not explained; stored decision.")
    features = {r.find_elements("tag name", "td")[0].text: r.find_elements("tag name", "td")[1].text
                for r in browser.find_elements("css selector", "table.features tbody tr")}
    assert features == {"age": "41", "amount": "20.5", "merchant_risk": "0.4", "tenure": "3", "velocity": "2"}
    save_page(browser, screenshots, "decision-stored")
    # "Explain now": `whystream explain`'s path, the features from the store, the version it was scored by
    browser.find_element("id", "explain-now").click()
    note = wait_for(browser, "explained-now").text
    assert "no explanation of this decision is stored" in note and "the decision store" in note
    assert built.model.version in note
    assert charts_drawn(browser) == 2  # waterfall and probability
    assert marks(browser, "fig-waterfall", WATERFALL) == len(console_data.FEATURES) + 2
    assert overlapping_labels(browser, "fig-waterfall", BAR_TEXT) == []
    # the attributions drawn are LightGBM's own SHAP values of the stored features (an independent computation)
    stored = {"age": 41.0, "amount": 20.5, "merchant_risk": 0.4, "tenure": 3.0, "velocity": 2.0}
    names = built.model.feature_names
    contrib = built.model.booster.predict([[stored[f] for f in names]], pred_contrib=True)[0]
    drawn = browser.execute_script("const d=document.getElementById('fig-waterfall').data[0];"
                                   "return [d.customdata, d.x]")
    shap = {label.split(" = ")[0]: x for label, x in zip(drawn[0][1:-1], drawn[1][1:-1])}
    assert shap == pytest.approx(dict(zip(names, contrib[:-1])), abs=1e-9)
    assert drawn[1][0] == pytest.approx(contrib[-1], abs=1e-9)  # the base value
    text = browser.find_element("tag name", "main").text
    assert "decision approve" in text and "ON_DEMAND" in text and "Computed now and not stored" in text
    # the score check ran as the stream runs it: the stored 0.12 is not the model's own score of these features
    own = built.model.booster.predict([[stored[f] for f in names]])[0]
    assert f"model's own score {own:.4f}" in text and browser.find_element("id", "score-mismatch").text.startswith(
        "MISMATCH")
    assert browser.find_elements("css selector", "table.adverse-reasons tbody tr")  # what almost declined it
    save_page(browser, screenshots, "decision-explained-now")
    # nothing was written: ClickHouse still holds no explanation of it
    assert client.query(f"SELECT count() FROM {built.database}.explanations WHERE prediction_id = "
                        f"'{console_data.STORED_ONLY}'").result_rows == [(0,)]


def test_a_fallback_decision_says_it_is_approximate(browser, console, data):
    built, _ = data
    event = next(e for e in built.events if e["source"] == "FALLBACK")
    load(browser, f"{console}/decision/{event['prediction_id']}")
    assert "This explanation is approximate" in browser.find_element("tag name", "main").text
    browser.find_element("id", "verify").click()
    assert wait_for(browser, "verify-status").text == "MATCH"  # recomputed as Saabas, as stored


def test_champion_vs_challenger(browser, console, data, screenshots):
    built, _ = data
    assert load(browser, f"{console}/model/credit/compare") == 1
    assert marks(browser, "fig-compare-" + built.model.version + "-" + built.challenger.version, BARS) == \
        2 * len(console_data.FEATURES)
    pairs = browser.find_elements("css selector", "table.pairs tbody tr")
    assert len(pairs) == 20
    summary = browser.find_element("css selector", "table.compare tbody tr").text
    assert f"{len(built.shadows):,}" in summary
    save_page(browser, screenshots, "compare")
    pairs[0].find_element("tag name", "a").click()
    wait_for(browser, "fig-waterfall")
    assert charts_drawn(browser) >= 1 and "Decision d" in browser.find_element("tag name", "h1").text


def test_the_report_opens_from_a_file_with_nothing_to_fetch(browser, data, tmp_path, screenshots):
    built, client = data
    html = build_report(client, "credit", built.end_ms + MINUTE_MS, 600, 3600, built.database)
    assert html.count("Plotly.newPlot") >= 12 and len(re.findall(r"<script src=", html)) == 0
    assert html.count("plotly.js v") == 1  # the library once, inlined
    assert "<h2>Score consistency</h2>" in html and "Adverse reasons" in html
    out = tmp_path / "report.html"
    out.write_text(html)
    browser.get(out.as_uri())
    drawn = charts_drawn(browser)
    assert drawn == html.count("Plotly.newPlot")
    shown = browser.find_elements("css selector", "section.decision")
    assert 1 <= len(shown) <= 3 and all("This explanation is approximate" not in s.text for s in shown)
    requests = browser.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
    assert requests == []  # opens offline: nothing fetched
    save_page(browser, screenshots, "report")
