"""The site in a real browser: headless Debian Chromium, driven by Playwright, from ``file://``.

Chromium comes from the Debian packages ``chromium`` and ``chromium-driver``, which
``make browser`` installs (``make test`` and CI run it first). Playwright never downloads a
browser here: it launches ``/usr/bin/chromium``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from leaderboard.build import build_site
from suite.task import declared_claims
from tests.leaderboard_store import shared_store

CHROMIUM = Path(os.environ.get("SUITE_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: `make browser` installs Debian's chromium (needs root and apt)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser-site")
    build_site(shared_store(tmp_path_factory), out, claims=declared_claims(["dpsgd"]))
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=ARGS,
            viewport={"width": 1400, "height": 1000})
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.errors = []  # console errors and uncaught exceptions, checked by each test
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    page.close()


def _column(page, table: str, metric: str) -> list[str]:
    """``data-value`` of one metric's cells, top to bottom, as the browser now orders them."""
    return page.eval_on_selector_all(f"{table} tbody td[data-metric='{metric}']",
                                     "cells => cells.map(c => c.getAttribute('data-value'))")


def test_index_to_task_page_and_sort_by_a_column(page, site) -> None:
    page.goto((site / "index.html").as_uri())
    assert page.title().startswith("Overview")
    page.click("#task-toy h2 a")
    page.wait_for_load_state("load")
    assert page.url.endswith("/tasks/toy.html")
    table = "#table-quick-v1"  # the newest task version's table; version 0 has its own below
    before = _column(page, table, "utility/accuracy")
    assert len(before) == 3
    header = page.locator(f"{table} thead tr.cols th[data-metric='utility/accuracy']")
    header.click()
    ascending = _column(page, table, "utility/accuracy")
    assert ascending == sorted(before, key=float) and header.get_attribute("aria-sort") == "ascending"
    header.click()
    descending = _column(page, table, "utility/accuracy")
    assert descending == sorted(before, key=float, reverse=True) and descending != before
    assert page.errors == []


def test_sort_by_text_column_keeps_empty_cells_last(page, site) -> None:
    page.goto((site / "tasks" / "privtoy.html").as_uri())
    first = page.locator("table.sortable").first
    methods = lambda: first.locator("tbody td.cfg").evaluate_all("cells => cells.map(c => c.dataset.value)")  # noqa: E731
    first.locator("thead tr.cols th").first.click()
    assert methods() == ["dpsgd", "nonprivate", "rr"]
    first.locator("thead tr.cols th").first.click()
    assert methods() == ["rr", "nonprivate", "dpsgd"]
    first.locator("thead tr.cols th[data-metric='privacy/epsilon [label]']").click()
    assert methods()[0] == "rr"  # the only row with a label-level epsilon; the others have none and go last
    assert page.errors == []


def test_pages_load_their_plots_and_config_links(page, site) -> None:
    page.goto((site / "tasks" / "dpsgd.html").as_uri())
    images = page.locator("figure img")
    assert images.count() >= 2
    widths = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert all(w > 100 for w in widths)  # every SVG loaded from file://
    page.locator("table.sortable tbody td.cfg a").first.click()
    page.wait_for_load_state("load")
    assert "/config/" in page.url and page.locator("h2", has_text="Resolved config").count() == 1
    assert page.errors == []


def test_claims_page_from_the_index_and_on_to_a_configuration(page, site) -> None:
    page.goto((site / "index.html").as_uri())
    page.click("p.claims-summary a")
    page.wait_for_load_state("load")
    assert page.url.endswith("/claims.html") and page.title().startswith("Claims")
    row = page.locator("#table-claims tbody tr[data-claim='dpsgd.accuracy_rises_with_epsilon']")
    assert row.count() == 1
    # the store's tiny dpsgd runs (epsilon 8 and 1, seed 0) are one pair with per-example predictions
    assert row.locator("td").nth(6).inner_text().strip() == "1"
    assert row.locator("td.verdict").inner_text().strip() in ("holds", "contradicted", "inconclusive")
    page.locator("#table-claims thead th").nth(2).click()  # sort by verdict: the script runs from file://
    row.locator("td.configs a").first.click()
    page.wait_for_load_state("load")
    assert "/config/" in page.url and page.locator("h2", has_text="Resolved config").count() == 1


def test_family_page_shows_its_notes_and_the_accountants_spread(page, site) -> None:
    page.goto((site / "tasks" / "privtoy.html").as_uri())
    notes = page.locator("ul.notes li")
    assert notes.count() == 1 and notes.first.is_visible() and "tuned without accounting" in notes.first.inner_text()
    table = page.locator("table.sortable").first
    spread = table.locator("tbody td[data-metric='privacy/epsilon_spread [example]']")
    shown = [t.strip() for t in spread.all_inner_texts()]
    assert "0.925–0.985" in shown  # dpsgd's; the label-level and non-private rows have none
    cell = spread.filter(has_text="0.925–0.985")
    assert cell.is_visible() and "rdp 0.985 · prv 0.935 · pld 0.925" in cell.get_attribute("title")
    table.locator("thead tr.cols th[data-metric='privacy/epsilon_spread [example]']").click()
    assert _column(page, "table.sortable", "privacy/epsilon_spread [example]")[0] != ""  # the one value sorts first
    assert page.errors == []
