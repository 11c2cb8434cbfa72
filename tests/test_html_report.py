"""The koembed section of a pytest-html report (``--html``), checked in a real headless browser.

Two real runs of the sample suite with the shipped model, shared by the module: one that passes
(and saves a baseline), and one that fails only at the end of the run (an average gate,
``--koembed-fail-under=weighted=99``) while every task item passes; the second reads its
embeddings from the first's cache, and writes a ``--self-contained-html`` page. Each page is
opened in Debian's chromium through Selenium and checked in the rendered DOM.

chromium and chromedriver are system packages (``apt-get install chromium chromium-driver``;
``.ci/run`` installs them): without them the browser tests skip, unless
``KOEMBED_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that a failure. pytest-html and selenium
are in the ``test`` extra: missing, the tests fail.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_koembed.reports import html, text

pytestmark = pytest.mark.usefixtures("offline")

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# A directory name that is HTML (a bold tag and an entity, no "/"): the summary's "run record
# written to ..." line carries it, and the page must show it as text.
MARKUP_DIR = "<b>koembed&amp;"


def _need(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        pytest.fail(f"the test dependency {module} is not installed (pip install -e '.[test]')")


@dataclass
class Page:
    ret: int
    stdout: str
    path: Path
    record: dict[str, Any]
    record_path: Path


@pytest.fixture(scope="module")
def pages(run_pytest: Any, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The passing run's page and the page of the run that fails only at the end."""
    _need("pytest_html")
    work = tmp_path_factory.mktemp("html-report")
    (work / MARKUP_DIR).mkdir()
    common = [f"--koembed-model={minilm_dir}", "--koembed-suite=sample", "--koembed-cache=cache"]
    common.append("--koembed-history=history")  # the second page shows a history of two runs
    out = {}
    for name, args in {
        "passed": ["--koembed-save-baseline=base.json"],
        "failed": [
            "--koembed-baseline=base.json",
            "--koembed-fail-under=weighted=99",
            "--self-contained-html",
        ],
    }.items():
        record = work / MARKUP_DIR / f"{name}.json"
        page = work / f"{name}.html"
        result = run_pytest(work, *common, *args, f"--koembed-json={record}", f"--html={page}")
        assert page.is_file(), result.stdout
        data = json.loads(record.read_text(encoding="utf-8"))
        out[name] = Page(result.ret, result.stdout, page, data, record)
    return SimpleNamespace(**out)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium through chromedriver, with a fresh profile and the console log on."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing = "chromium" if chromium is None else "chromedriver"
        reason = f"{missing} is not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("KOEMBED_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + "; KOEMBED_REQUIRE_BROWSER=1 requires it")
        pytest.skip(reason)
    _need("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="koembed-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1400,1600")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(browser: Any, page: Page) -> list[dict[str, Any]]:
    """Load the page and wait for pytest-html's script to fill the results table; the console
    messages of the load."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser")  # what an earlier page logged
    browser.get(page.path.as_uri())
    WebDriverWait(browser, 20).until(
        lambda b: (
            b.execute_script("return document.readyState") == "complete"
            and b.find_elements("css selector", "#results-table tbody.results-table-row")
        )
    )
    return browser.get_log("browser")


def _result_cells(browser: Any) -> list[str]:
    """The Result cell of every row of pytest-html's results table, as rendered."""
    return [e.text for e in browser.find_elements("css selector", "#results-table td.col-result")]


def _check_common(browser: Any, page: Page, console: list[dict[str, Any]]) -> None:
    """What both pages show: the averages and verdicts tables, a loaded chart, no JS error."""
    errors = [m for m in console if m.get("level") == "SEVERE"]
    assert not errors, errors
    averages = browser.find_element("id", "koembed-averages")
    assert averages.is_displayed()
    first = averages.find_elements("css selector", "tbody tr")[0].find_elements("tag name", "td")
    assert [c.text for c in first[:2]] == [
        "weighted average",
        text.value(page.record["weighted_average"]),
    ]
    rows = browser.find_elements("css selector", "#koembed-verdicts tbody tr")
    assert [r.find_element("tag name", "td").text for r in rows] == [
        t["column"] for t in page.record["tasks"]
    ]
    assert browser.find_element("id", "koembed-verdicts").is_displayed()
    chart = browser.find_element("id", "koembed-chart")
    assert chart.get_attribute("src").startswith("data:image/png;base64,")
    loaded = "return arguments[0].complete && arguments[0].naturalWidth"
    assert browser.execute_script(loaded, chart) > 0
    values = browser.find_elements("css selector", "#results-table td.col-koembed-value")
    assert len(values) == len(page.record["tasks"])
    shown = {t["column"]: text.value(t["shown"]) for t in page.record["tasks"]}
    assert sorted(v.text.split()[0] for v in values) == sorted(shown.values())


def test_a_passing_run_says_passed_with_its_tables_and_chart(browser: Any, pages: Any) -> None:
    page = pages.passed
    assert page.ret == 0, page.stdout
    console = _open(browser, page)
    banner = browser.find_element("id", html.BANNER_ID)
    assert banner.is_displayed()
    assert banner.get_attribute("data-status") == html.PASSED
    assert banner.text.startswith("koembed gate: passed")
    assert "no baseline: --koembed-baseline auto: suite 'sample' has no shipped" in banner.text
    _check_common(browser, page, console)
    assert set(_result_cells(browser)) == {"Passed"}


def test_a_run_failed_only_at_the_end_says_failed_although_every_item_passed(
    browser: Any, pages: Any
) -> None:
    page = pages.failed
    assert page.ret == 1, page.stdout
    assert "6 passed" in page.stdout  # pytest's own count: nothing failed as an item
    console = _open(browser, page)
    cells = _result_cells(browser)
    assert cells == ["Passed"] * 6
    banner = browser.find_element("id", html.BANNER_ID)
    assert banner.is_displayed()
    assert banner.get_attribute("data-status") == html.FAILED
    said = banner.text
    assert said.startswith("koembed gate: FAILED at the end of the run, although every task")
    assert "gate weighted >= 99.00: FAILED, weighted average" in said
    # above pytest-html's own counts ("6 Passed"), not below them
    counts = browser.find_element("css selector", ".summary__data .run-count")
    assert banner.location["y"] < counts.location["y"]
    _check_common(browser, page, console)
    verdicts = browser.find_elements("css selector", "#koembed-verdicts tbody tr td:last-child")
    assert {v.text for v in verdicts} == {"within noise"}


def test_every_text_on_the_page_is_escaped(browser: Any, pages: Any) -> None:
    """The run record's path (``<b>koembed&amp;/failed.json``) is text on the page, not markup."""
    page = pages.failed
    _open(browser, page)
    section = browser.find_element("id", html.SECTION_ID)
    said = browser.find_element("css selector", "#koembed-summary-text pre")
    assert f"run record written to {page.record_path}" in said.get_attribute("textContent")
    assert section.find_elements("tag name", "b") == []


# --- without a browser: the verdict from a record, the page written too early, registration ---


def _record(**changes: Any) -> dict[str, Any]:
    task = {"column": "sample-sts", "category": "STS", "status": "ok", "verdict": "within noise"}
    record: dict[str, Any] = {"complete": True, "tasks": [task], "gates": [], "baseline": {}}
    record.update(changes)
    return record


def test_a_regression_only_holm_finds_fails_the_run_at_its_end() -> None:
    task = {"column": "sample-sts", "category": "STS", "status": "ok", "verdict": "regressed"}
    task["verdict_note"] = "sample-sts regressed: 15.91 vs baseline 19.00"
    holm = _record(tasks=[task], baseline={"paired": {"holm_only": ["sample-sts"]}})
    verdict = html.run_verdict(holm)
    assert (verdict.status, verdict.end_only) == (html.FAILED, True)
    assert verdict.reasons == (
        "sample-sts regressed: 15.91 vs baseline 19.00 (found by Holm over the run's tasks; "
        "its item passed)",
    )
    assert "although every task item passed" in html.banner_html(verdict)
    item = html.run_verdict(_record(tasks=[task]))  # the item itself failed: pytest shows it
    assert (item.status, item.end_only) == (html.FAILED, False)
    written = html.run_verdict(_record(), ["--koembed-json /x.json: not written: disk full"])
    assert (written.status, written.end_only) == (html.FAILED, True)
    assert html.run_verdict(_record()).status == html.PASSED
    stopped = html.run_verdict(_record(complete=False, interrupted="stopping after 1 failures"))
    assert stopped.status == html.INCOMPLETE
    assert stopped.reasons == ("the run did not finish: stopping after 1 failures",)


def test_the_banner_and_tables_escape_their_texts() -> None:
    verdict = html.RunVerdict(html.FAILED, ("gate <b>weighted</b> & more",))
    assert "gate &lt;b&gt;weighted&lt;/b&gt; &amp; more" in html.banner_html(verdict)
    assert "<b>" not in html.banner_html(verdict)
    lines = html.summary_text_html([("model: <script>x</script>", False), ("a<b", True)])
    assert "<script>" not in lines and "&lt;script&gt;" in lines
    assert '<span class="red">a&lt;b</span>' in lines


def test_a_page_written_before_the_end_of_the_run_says_so() -> None:
    """Were pytest-html's hook to run before the controller's pytest_sessionfinish, the page
    would say "passed" for a run whose gate fails later: it says it was not judged instead."""
    from pytest_koembed.plugin.html_report import KoembedHtmlReport

    controller = SimpleNamespace(finished=False, config=SimpleNamespace(option=SimpleNamespace()))
    controller.config.option.collectonly = False
    prefix: list[str] = []
    postfix: list[str] = []
    KoembedHtmlReport(controller).pytest_html_results_summary(prefix, [], postfix, None)  # type: ignore[arg-type]
    assert len(prefix) == 1 and postfix == []
    assert f'data-status="{html.INCOMPLETE}"' in prefix[0]
    assert "written before the koembed end of the run judged it" in prefix[0]


@pytest.mark.parametrize("disabled", [False, True])
def test_the_hooks_register_only_with_pytest_html_and_html(
    pytester: pytest.Pytester, minilm_dir: Path, disabled: bool
) -> None:
    _need("pytest_html")
    from pytest_koembed.plugin.html_report import PLUGIN_NAME

    args = [f"--koembed-model={minilm_dir}", "--koembed-suite=sample"]
    if disabled:  # pytest-html switched off: no --html option, and the plugin works without it
        config = pytester.parseconfigure(*args, "-p", "no:html", "-p", "no:html_fixtures")
        assert config.pluginmanager.get_plugin(PLUGIN_NAME) is None
        return
    assert pytester.parseconfigure(*args).pluginmanager.get_plugin(PLUGIN_NAME) is None
    config = pytester.parseconfigure(*args, "--html=page.html")
    assert config.pluginmanager.get_plugin(PLUGIN_NAME) is not None


def test_the_history_chart_of_koembed_history_is_on_the_page(pages: Any, browser: Any) -> None:
    """With --koembed-history, the page shows the history's chart, this run included."""
    assert len(list((pages.failed.path.parent / "history").glob("[!.]*.json"))) == 2
    browser.get(pages.failed.path.as_uri())
    chart = browser.find_element("id", "koembed-history-chart")
    assert chart.get_attribute("src").startswith("data:image/png;base64,")
    loaded = "return arguments[0].complete && arguments[0].naturalWidth"
    assert browser.execute_script(loaded, chart) > 0
