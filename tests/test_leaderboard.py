"""The leaderboard site, built from real MLflow stores and read back as HTML, CSV and JSON.

Numbers on the pages are checked against aggregates computed here, independently, with
pandas from ``mlflow.search_runs``.
"""

from __future__ import annotations

import filecmp
import json
import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from leaderboard.build import build_site
from runners.local import run_one
from suite.config import config_hash
from suite.task import get_task
from tests.conftest import suite_cli
from tests.leaderboard_store import (PRIV_ACCOUNTANTS, PRIV_DATA_DEPENDENT, PRIV_NOTE, PRIV_RUNS, Page, board, ci95,
                                     kill_a_run, shared_store)


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    return shared_store(tmp_path_factory)


@pytest.fixture(scope="module")
def site(tracker, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build_site(tracker, out)
    return out


def _read(path: Path) -> Page:
    return Page(path.read_text())


def _toy_v1_expected(tracker) -> pd.DataFrame:
    """Mean, CI and seed count per toy value (task version 1), straight from mlflow.search_runs."""
    mlflow.set_tracking_uri(tracker.uri)
    runs = mlflow.search_runs(experiment_names=["toy"])
    toy = get_task("toy")
    runs = runs[runs["status"] == "FINISHED"].sort_values("start_time", ascending=False)
    v1 = [config_hash("toy", "1", toy.parse({"method": m, "seed": int(s), "sleep_s": float(sl), "value": float(v)})) ==
          h for m, s, sl, v, h in zip(runs["params.method"], runs["params.seed"], runs["params.sleep_s"],
                                      runs["params.value"], runs["tags.suite.config_hash"])]
    runs = runs[v1].drop_duplicates("tags.suite.config_hash")  # the newest run of a rerun seed
    grouped = runs.groupby("params.value")["metrics.utility/accuracy"]
    out = pd.DataFrame({"mean": grouped.mean(), "n": grouped.size(),
                        "ci": grouped.apply(lambda v: ci95(list(v)) if len(v) > 1 else float("nan"))})
    return out.reset_index()


def test_toy_table_matches_pandas_aggregates(tracker, site) -> None:
    names, rows = board(_read(site / "tasks" / "toy.html"))
    assert names[:3] == ["method", "value", "seeds"]
    expected = _toy_v1_expected(tracker)
    assert sorted(r["value"]["data-value"] for r in rows) == sorted(expected["params.value"])
    for _, want in expected.iterrows():
        row = next(r for r in rows if r["value"]["data-value"] == want["params.value"])
        cell = row["utility/accuracy"]
        assert float(cell["data-value"]) == pytest.approx(want["mean"], rel=1e-12)
        assert int(row["seeds"]["text"]) == want["n"]
        if want["n"] > 1:
            assert f"± {float(f'{want.ci:.2g}'):.4g}" in cell["text"]
        else:
            assert "±" not in cell["text"]  # one seed: no interval
    assert [int(r["seeds"]["text"]) for r in rows] == [3, 1, 3]  # 0.25 (rerun not counted twice), 0.5, 0.75
    # The best mean (0.75) and the runner-up (0.5, one seed) share one seed and no per-example scores:
    # no paired interval, so the two are marked as a tie, not the best.
    marks = {r["value"]["data-value"]: r["utility/accuracy"].get("class", "").split()[-1] for r in rows}
    assert marks == {"0.25": "num", "0.5": "tie", "0.75": "tie"}
    assert "not significantly better" in next(r for r in rows if r["value"]["data-value"] == "0.75")[
        "utility/accuracy"]["title"]


def test_csv_and_json_downloads_match(tracker, site) -> None:
    table = pd.read_csv(site / "data" / "toy.csv")
    v1 = table[table["task_version"] == 1]
    assert list(v1["params.value"]) == [0.25, 0.5, 0.75] and list(v1["seeds"]) == [3, 1, 3]
    assert list(v1["killed"]) == [0, 0, 1]  # the KILLED seed 3 of value 0.75 is counted, never aggregated
    assert "crash" not in set(table["method"]) and v1["failed"].sum() == 0  # a config with no FINISHED run
    expected = _toy_v1_expected(tracker).set_index("params.value")
    for _, row in v1.iterrows():
        want = expected.loc[repr(row["params.value"])]
        assert row["utility/accuracy mean"] == pytest.approx(want["mean"], rel=1e-12)
        assert row["utility/accuracy n"] == want["n"]
        assert (pd.isna(row["utility/accuracy ci95"]) and want["n"] == 1) or \
            row["utility/accuracy ci95"] == pytest.approx(want["ci"], rel=1e-9)
    payload = json.loads((site / "data" / "toy.json").read_text())
    columns = {c["key"]: c for c in payload["sections"][0]["columns"]}
    assert columns["utility/accuracy"]["direction"] == "higher" and columns["utility/accuracy"]["unit"] == "fraction"
    first = payload["sections"][0]["rows"][0]
    assert first["config"]["value"] == 0.25 and first["metrics"]["utility/accuracy"]["n"] == 3


def test_task_versions_are_kept_apart(site) -> None:
    page = _read(site / "tasks" / "toy.html")
    text = (site / "tasks" / "toy.html").read_text()
    assert "quick tier · task version 1" in text and "quick tier · task version 0" in text
    _, old = board(page, 1)
    assert [(r["value"]["data-value"], r["seeds"]["text"]) for r in old] == [("0.25", "2")]
    assert float(old[0]["utility/accuracy"]["data-value"]) == pytest.approx(0.905)
    newer, older = text.split("quick tier · task version 0</h2>")
    assert "old version broke" in older and "old version broke" not in newer  # its version found from its hash


def test_failed_and_killed_runs_are_listed_apart(tracker, site) -> None:
    text = (site / "tasks" / "toy.html").read_text()
    assert "planned crash of the toy task" in text and "interrupted by SIGTERM" in text
    crashed = [r for r in tracker.runs("toy", status="FAILED") if "planned crash" in r.tags["suite.failure_reason"]]
    config_pages = [p for p in (site / "config").glob("*.html") if crashed[0].run_id in p.read_text()]
    assert len(config_pages) == 1
    page = config_pages[0].read_text()
    assert "RuntimeError: planned crash of the toy task" in page and "No FINISHED run" in page


def test_config_page_lists_each_seed_with_its_provenance(tracker, site) -> None:
    page = _config_page_of(site, "toy", "0.25").read_text()
    finished = [r for r in tracker.runs("toy", status="FINISHED") if r.params.get("value") == "0.25"
                and r.tags["suite.git_commit"] != "0123abc"]  # task version 1 only
    assert len(finished) == 4  # three seeds, and the superseded first run of seed 0
    for run in finished:
        assert run.run_id in page
    assert page.count("superseded by a newer run") == 1
    assert finished[0].tags["suite.git_commit"] in page and "0.1.0" in page  # git commit, suite version
    assert "<th>value</th><td><code>0.25</code></td>" in page


def _config_page_of(site: Path, task: str, value: str) -> Path:
    """The config page the toy table links from the row of ``value``."""
    text = (site / "tasks" / f"{task}.html").read_text()
    rows = re.findall(r'<tr data-config="([0-9a-f]+)">(.*?)</tr>', text, flags=re.S)
    config_id = next(cid for cid, body in rows if f'<td data-value="{value}">' in body)
    return site / "config" / f"{config_id}.html"


def test_privacy_units_are_never_mixed(site) -> None:
    names, rows = board(_read(site / "tasks" / "privtoy.html"))
    assert "privacy/epsilon [example]" in names and "privacy/epsilon [label]" in names
    assert "privacy/epsilon" not in names
    by_method = {r["method"]["data-value"]: r for r in rows}
    assert by_method["dpsgd"]["privacy/epsilon [label]"]["data-value"] == ""
    assert by_method["rr"]["privacy/epsilon [example]"]["data-value"] == ""
    assert by_method["nonprivate"]["privacy/epsilon [example]"]["data-value"] == ""
    assert by_method["nonprivate"]["privacy/epsilon [label]"]["data-value"] == ""
    assert float(by_method["rr"]["utility/accuracy"]["data-value"]) == pytest.approx(sum(PRIV_RUNS["rr"][2]) / 2)
    plots = sorted(p.name for p in (site / "plots").glob("privtoy-*.svg"))
    assert plots == ["privtoy-quick-v1-accuracy-vs-epsilon-example.svg", "privtoy-quick-v1-accuracy-vs-epsilon-label.svg"]
    example_plot = (site / "plots" / plots[0]).read_text()
    assert "rr" not in re.findall(r"<!-- (.*?) -->", example_plot)  # matplotlib comments each legend text
    index = (site / "index.html").read_text()
    assert "ε = 1.0 [example]" in index and "ε = 1.0 [label]" in index and "non-private" in index


def test_audit_bound_sits_beside_each_claim_and_contradictions_are_flagged(site) -> None:
    page = _read(site / "tasks" / "privtoy.html")
    names, rows = board(page)
    # Beside each claim: the accountants' spread (example: three accountants), a data-dependent epsilon (label),
    # then the audit's bound.
    claim = names.index("privacy/epsilon [example]")
    assert names[claim + 1:claim + 3] == ["privacy/epsilon_spread [example]", "privacy/audit_epsilon_lb [example]"]
    claim = names.index("privacy/epsilon [label]")
    assert names[claim + 1:claim + 3] == ["privacy/epsilon_data_dependent [label]", "privacy/audit_epsilon_lb [label]"]
    by_method = {r["method"]["data-value"]: r for r in rows}
    dp, rr = by_method["dpsgd"], by_method["rr"]
    assert float(dp["privacy/audit_epsilon_lb [example]"]["data-value"]) == pytest.approx(0.9)  # mean of 0.3, 1.5
    # dpsgd: one of two runs has a bound (1.5) above its claim (0.98): flagged; rr's bounds are below: not
    assert "contradicted" in dp["privacy/epsilon [example]"]["class"]
    assert "contradicted" in dp["privacy/audit_epsilon_lb [example]"]["class"]
    assert "audit contradicts claim" in dp["method"]["text"] and "in 1 of 2 runs" in dp["privacy/epsilon [example]"]["title"]
    assert not any("contradicted" in cell.get("class", "") for cell in rr.values())
    assert "audit contradicts claim" not in rr["method"]["text"]
    flagged = _config_page_by_method(site, "privtoy", "dpsgd").read_text()
    assert 'id="audit-flag"' in flagged and "in 1 of 2 runs" in flagged
    audit = next(t for t in Page(flagged).tables if "audit" in t["class"])
    verdicts = sorted((row[2]["text"], row[3]["text"], row[4]["text"].strip()) for row in audit["rows"])
    assert verdicts == [("0.98", "1.5", "contradicted"), ("0.99", "0.3", "consistent")]
    clean = _config_page_by_method(site, "privtoy", "rr").read_text()
    assert 'id="audit-flag"' not in clean and clean.count(">consistent<") == 2


def test_accountants_spread_beside_the_claim_in_the_table_and_on_the_config_page(site) -> None:
    names, rows = board(_read(site / "tasks" / "privtoy.html"))
    assert not any(n.startswith(("privacy/epsilon_rdp", "privacy/epsilon_prv", "privacy/epsilon_pld")) for n in names)
    dp = {r["method"]["data-value"]: r for r in rows}["dpsgd"]
    claims = [1.0 - 0.01 * (seed + 1) for seed in (0, 1)]  # as logged: 0.99, 0.98
    low = sum(c + min(PRIV_ACCOUNTANTS.values()) for c in claims) / 2  # pld: claim - 0.06
    high = sum(c + max(PRIV_ACCOUNTANTS.values()) for c in claims) / 2  # rdp: the claim
    cell = dp["privacy/epsilon_spread [example]"]
    assert cell["text"].strip() == f"{low:.4g}–{high:.4g}" == "0.925–0.985"
    assert float(cell["data-value"]) == pytest.approx(0.06)  # sorted by the spread itself
    assert cell["title"] == "epsilon under each accountant: rdp 0.985 · prv 0.935 · pld 0.925 (means over seeds)"
    assert "best" not in cell.get("class", "")
    page = _config_page_by_method(site, "privtoy", "dpsgd").read_text()
    assert "0.925–0.985 (spread 0.06)" in page
    per_run_table = page[page.index('<table class="per-run">'):]
    per_run = re.search(r'<th title="privacy/epsilon_spread:[^"]*">epsilon_spread \[example\].*?</tr>', per_run_table,
                        re.S)
    assert re.findall(r'<td class="num">([^<]*)</td>', per_run.group(0)) == ["0.93–0.99", "0.92–0.98"]  # pld–rdp
    real = _config_page_by_method(site, "dpsgd", "dpsgd").read_text()
    assert "accountant: rdp · sampler: poisson" in real  # the privacy.sampler tag of a real dpsgd run
    for name in ("rdp", "prv", "pld"):  # each accountant's own value stays on the configuration page
        assert f"epsilon_{name} [example]" in page
    data = json.loads((site / "data" / "privtoy.json").read_text())["sections"][0]
    spread = next(c for c in data["columns"] if c["key"] == "privacy/epsilon_spread [example]")
    assert spread["direction"] == "none" and spread["best"] == []
    row = next(r for r in data["rows"] if r["method"] == "dpsgd")["metrics"]["privacy/epsilon_spread [example]"]
    assert (row["lo"], row["hi"]) == (pytest.approx(low), pytest.approx(high)) and row["n"] == 2


def test_a_data_dependent_epsilon_is_shown_but_never_ranked(site) -> None:
    names, rows = board(_read(site / "tasks" / "privtoy.html"))
    rr = {r["method"]["data-value"]: r for r in rows}["rr"]
    cell = rr["privacy/epsilon_data_dependent [label]"]
    assert float(cell["data-value"]) == pytest.approx(sum(PRIV_DATA_DEPENDENT) / 2)
    header = Page((site / "tasks" / "privtoy.html").read_text()).tables[0]["headers"]
    title = next(h["title"] for h in header if h.get("data-metric") == "privacy/epsilon_data_dependent [label]")
    assert "not ranked" in title  # its schema says "lower"; the board overrides it
    data = json.loads((site / "data" / "privtoy.json").read_text())["sections"][0]
    for column in data["columns"]:
        if column["metric"] in ("privacy/epsilon_data_dependent", "privacy/epsilon_rdp", "privacy/epsilon_prv",
                                "privacy/epsilon_pld"):
            assert column["direction"] == "none" and column["best"] == [], column
    plots = sorted(p.name for p in (site / "plots").glob("privtoy-*.svg"))
    assert not any("dependent" in p for p in plots)  # never a Pareto axis, though the task declares the pair


def test_task_notes_from_result_json_on_the_family_page(site) -> None:
    text = (site / "tasks" / "privtoy.html").read_text()
    assert text.count(PRIV_NOTE) == 1 and '<ul class="notes">' in text
    assert json.loads((site / "data" / "privtoy.json").read_text())["sections"][0]["notes"] == [PRIV_NOTE]
    assert '<ul class="notes">' not in (site / "tasks" / "toy.html").read_text()


def test_dpsgd_runs_show_their_accountants_spread(site) -> None:
    names, rows = board(_read(site / "tasks" / "dpsgd.html"))
    private = [r for r in rows if r["method"]["data-value"] == "dpsgd"]
    assert len(private) == 2
    for row in private:
        low, high = (float(v) for v in row["privacy/epsilon_spread [example]"]["text"].split("–"))
        claim = float(row["privacy/epsilon [example]"]["data-value"])
        assert low < high and high == pytest.approx(claim, rel=1e-3)  # RDP is the claim and the loosest
        assert float(row["privacy/epsilon_spread [example]"]["data-value"]) == pytest.approx(high - low, rel=0.01)


def _config_page_by_method(site: Path, task: str, method: str) -> Path:
    text = (site / "tasks" / f"{task}.html").read_text()
    rows = re.findall(r'<tr data-config="([0-9a-f]+)">(.*?)</tr>', text, flags=re.S)
    config_id = next(cid for cid, body in rows if f'<td data-value="{method}" class="cfg">' in body)
    return site / "config" / f"{config_id}.html"


def test_dpsgd_has_its_pareto_plots_and_headline(site) -> None:
    text = (site / "tasks" / "dpsgd.html").read_text()
    svgs = re.findall(r'src="\.\./plots/([^"]+\.svg)"', text)
    version = get_task("dpsgd").version
    assert f"dpsgd-quick-v{version}-accuracy-vs-epsilon-example.svg" in svgs
    assert f"dpsgd-quick-v{version}-accuracy-vs-train-s.svg" in svgs
    svg = (site / "plots" / svgs[0]).read_text()
    assert "<dc:date>" not in svg and "Pareto front" in re.sub(r"\s+", " ", " ".join(re.findall(r"<!-- (.*?) -->", svg)))
    _, rows = board(_read(site / "tasks" / "dpsgd.html"))
    assert {r["method"]["data-value"] for r in rows} == {"dpsgd", "nonprivate"} and len(rows) == 3


def test_every_link_resolves_and_nothing_is_fetched_from_outside(site) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10
    for page in pages:
        for link in Page(page.read_text()).links:
            assert not re.match(r"^[a-z]+:", link) and not link.startswith("//"), f"{page.name}: external {link}"
            target = link.split("#", 1)[0]
            if target:
                assert (page.parent / target).resolve().is_file(), f"{page.relative_to(site)} links {link}"


def test_rebuilding_gives_byte_identical_files(tracker, site, tmp_path) -> None:
    build_site(tracker, tmp_path)
    ours = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(site) for p in site.rglob("*") if p.is_file())
    assert ours == theirs
    _, mismatch, errors = filecmp.cmpfiles(site, tmp_path, [str(p) for p in ours], shallow=False)
    assert mismatch == [] and errors == []


def test_empty_store_gives_a_page(store, tmp_path) -> None:
    index = build_site(store, tmp_path / "site")
    assert "No finished runs yet" in index.read_text()
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == [".leaderboard-files", "claims.html", "data",
                                                                     "index.html", "style.css"]


def test_store_with_only_failed_runs_gives_clear_pages(store, tmp_path) -> None:
    toy = get_task("toy")
    run_one(toy, "quick", toy.resolve("quick", {"method": "crash"}), tracker=store)
    kill_a_run(store, toy.resolve("quick", {"seed": 1}))
    index = build_site(store, tmp_path / "site").read_text()
    assert "1 failed" in index and "1 killed" in index and "No finished run in this tier and version yet" in index
    task = (tmp_path / "site" / "tasks" / "toy.html").read_text()
    assert "every run of it failed or was killed" in task and "planned crash of the toy task" in task
    assert len(list((tmp_path / "site" / "config").glob("*.html"))) == 2
    assert pd.read_csv(tmp_path / "site" / "data" / "toy.csv").empty


def test_stale_pages_go_and_other_files_stay(tracker, store, tmp_path) -> None:
    build_site(tracker, tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    build_site(store, tmp_path)  # an empty store now: the task pages of the first build are stale
    assert not (tmp_path / "tasks").exists() and not (tmp_path / "config").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_builds_the_site(tracker, tmp_path) -> None:
    store_dir = Path(tracker.uri.removeprefix("sqlite:///")).parent
    done = suite_cli("leaderboard", "--out", str(tmp_path / "out"), cwd=store_dir)
    assert done.returncode == 0, done.stderr
    assert "leaderboard written to" in done.stdout and (tmp_path / "out" / "tasks" / "dpsgd.html").is_file()


def test_the_board_needs_no_task_code(tracker, tmp_path) -> None:
    """Built in a process that imports no task module, the site still has every direction and unit: even
    of compute/slowdown, logged after result.json, which carries the task's full declared schema."""
    import subprocess
    import sys

    code = ("import sys; from leaderboard.build import build_site; from suite.tracking import Tracker; "
            f"build_site(Tracker({tracker.uri!r}, write=False), {str(tmp_path / 'site')!r}); "
            "print('TASK MODULES', sorted(m for m in sys.modules if m.startswith(('tasks', 'tests.toy'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "TASK MODULES []" in done.stdout
    payload = json.loads((tmp_path / "site" / "data" / "dpsgd.json").read_text())
    columns = {c["key"]: c for c in payload["sections"][0]["columns"]}
    assert columns["compute/slowdown"]["direction"] == "lower" and columns["compute/slowdown"]["unit"] == "x"
    assert columns["utility/accuracy"]["unit"] == "fraction"


def test_a_site_up_to_date_with_its_store_is_not_rendered_again(store, tmp_path) -> None:
    """The cached rerun of ``make bench``: nothing changed, nothing rendered; a new run, a new build."""
    toy = get_task("toy")
    run_one(toy, "quick", toy.resolve("quick", {"seed": 0}), tracker=store)
    out = tmp_path / "out"
    first = suite_cli("leaderboard", "--out", str(out), cwd=tmp_path)
    assert first.returncode == 0 and "leaderboard written to" in first.stdout, first.stderr
    built = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    table = (out / "data" / "toy.csv").read_text()
    again = suite_cli("leaderboard", "--out", str(out), cwd=tmp_path)
    assert again.returncode == 0 and "is up to date" in again.stdout, again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == built
    run_one(toy, "quick", toy.resolve("quick", {"seed": 1}), tracker=store)  # the store changed
    third = suite_cli("leaderboard", "--out", str(out), cwd=tmp_path)
    assert "leaderboard written to" in third.stdout and (out / "data" / "toy.csv").read_text() != table
    (out / "index.html").unlink()  # an incomplete site is rendered again
    assert "leaderboard written to" in suite_cli("leaderboard", "--out", str(out), cwd=tmp_path).stdout
    assert (out / "index.html").is_file()
