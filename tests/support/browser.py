"""A real browser for the console's tests: Debian's chromium driven by its chromedriver
through Selenium, headless, with a fresh profile and nothing that phones home.

`make test` installs chromium and chromium-driver where apt-get is available
(the Makefile's `browser` target); without them the browser tests are skipped, saying why.
Screenshots go to WHYSTREAM_SCREENSHOTS, or var/screenshots/ in the repository (ignored by
git), named at the end of the run (conftest.py's terminal summary: with xdist the browser
runs in a worker, so the folder is fixed, not a temporary one)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("WHYSTREAM_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("WHYSTREAM_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1280,1000", "--hide-scrollbars"]
SCREENSHOTS = Path(os.environ.get("WHYSTREAM_SCREENSHOTS") or Path(__file__).resolve().parents[2] / "var" / "screenshots")
INSTALL = "apt-get install -y chromium chromium-driver (make test does where apt-get is available)"


def missing() -> str | None:
    """Why there is no browser to test with, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(path)):
            return f"{path} not installed: {INSTALL}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A headless chromium (Selenium WebDriver), one for the whole session."""
    why = missing()
    if why:
        pytest.skip(f"no browser for the console's tests: {why}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def charts_drawn(driver, timeout: float = 30.0) -> int:
    """Wait until every Plotly chart of the page is drawn (an SVG inside each); their number."""
    script = ("const c=[...document.querySelectorAll('.js-plotly-plot')];"
              "return c.length && c.every(d=>d.querySelector('svg.main-svg')) ? c.length : -c.length")
    deadline = time.monotonic() + timeout
    while True:
        drawn = driver.execute_script(script)
        if drawn > 0 or time.monotonic() > deadline:
            return drawn
        time.sleep(0.2)


def marks(driver, chart_id: str, selector: str) -> int:
    """How many SVG elements matching `selector` chart `chart_id` drew."""
    return driver.execute_script(f"return document.querySelectorAll('#{chart_id} {selector}').length")


def overlapping_labels(driver, chart_id: str, text_selector: str) -> list[tuple[str, str]]:
    """(axis label, mark text) pairs of chart `chart_id` whose drawn boxes intersect: a y tick
    label run over by a bar's text (or the reverse)."""
    return driver.execute_script(f"""
        const box = e => e.getBoundingClientRect(), chart = document.getElementById('{chart_id}');
        const labels = [...chart.querySelectorAll('.ytick text')];
        const texts = [...chart.querySelectorAll('{text_selector}')];
        const meet = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
        return labels.flatMap(l => texts.filter(t => meet(box(l), box(t)))
                                        .map(t => [l.textContent, t.textContent]));""")


def save_page(driver, folder: Path, name: str) -> Path:
    """A screenshot of the whole page, beyond the window (Chrome DevTools' captureBeyondViewport)."""
    import base64

    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1}})
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def wait_for(driver, element_id: str, timeout: float = 60.0):
    """The element with this id, once the page (after a click's navigation) has it."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.presence_of_element_located(("id", element_id)))
