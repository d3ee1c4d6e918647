"""The dashboard's importance charts and compare view in headless Chromium (issue 21 item 3).

A real `stoprace serve` process serves hand-made result sets: a grid whose log10 p_race is an
Ishigami function of three axes per mitigation (tests/grid_helpers.py, with some Monte Carlo
noise), and two runs `before`/`after` of one grid where `after` moved three points. What the
page draws is checked against the API's numbers (themselves tested against the CLI in
tests/test_serve_analysis.py). Screenshots as in tests/test_serve_browser.py
($STOPRACE_SCREENSHOTS, else the test's tmp dir). Skipped where Chromium or chromedriver is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_helpers import ROOT, Server
from test_serve_browser import CHROMEDRIVER, CHROMIUM, _header, _rows, _wait
from test_serve_browser import browser as _chromium

from grid_helpers import ishigami, write_y_grid
from synthetic_results import grid, write_results

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="no headless browser: install Debian's chromium and chromium-driver (.ci/run does)"),
]
from selenium.webdriver.common.by import By  # noqa: E402 (after the skip marks, like test_serve_browser)
from selenium.webdriver.support.ui import Select  # noqa: E402

browser = _chromium
"""The headless Chromium of tests/test_serve_browser.py (a fixture, one per module)."""

MOVED = {(512, 1000.0): 4, (64, 100.0): 5, (512, 100.0): 0.25}


def _races(p: dict, moved: dict | None = None) -> int:
    k = {8: 2, 64: 40, 512: 300}[p["n_cpus"]] * (2 if p["wbinvd_us"] > 500 else 1)
    return int(k * (moved or {}).get((p["n_cpus"], p["wbinvd_us"]), 1))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-analysis")
    root = tmp / "results"
    root.mkdir()
    x1, x2, x3 = np.linspace(-0.25 * np.pi, 0.9 * np.pi, 5), np.linspace(-np.pi, np.pi, 4), np.linspace(-np.pi, np.pi, 3)
    mesh = np.meshgrid(x1, x2, x3, indexing="ij")
    y = np.stack([-6.0 + ishigami(*mesh, a=7.0) / 4.0, -7.0 + ishigami(*mesh, a=1.0) / 4.0])
    axes = {"mitigation": ["none", "early_flush"], "n_cpus": [8, 32, 128, 512, 2048],
            "wbinvd_us": [100.0, 1000.0, 10000.0, 100000.0], "p_stall": [1e-4, 1e-3, 1e-2]}
    write_y_grid(root / "grid", axes, y, np.full(y.shape, 0.02), base={"wait": 1})
    for name, moved in (("before", None), ("after", MOVED)):
        pts = grid({"n_cpus": [8, 64, 512], "wbinvd_us": [100.0, 1000.0]},
                   lambda p, m=moved: {"clean": 20_000, "race": _races(p, m)})
        write_results(root / name, pts, sweep=name, n_tasks=2)
    server = Server(str(root), "--workers", "1", cwd=tmp)
    try:
        yield server, tmp
    finally:
        rc, out = server.stop()
        assert rc == 0, out


@pytest.fixture(scope="module")
def shots(world):
    d = Path(os.environ["STOPRACE_SCREENSHOTS"]) if os.environ.get("STOPRACE_SCREENSHOTS") else world[1] / "shots"
    d = d if d.is_absolute() else ROOT / d
    d.mkdir(parents=True, exist_ok=True)
    return d


def _blocks(drv) -> list[dict]:
    """Every importance chart as drawn: its scenario, metric, and the value of each bar by (class, axis)."""
    return drv.execute_script("""
        return [...document.querySelectorAll('#imp-charts .imp-block')].map((b) => ({
            scenario: b.dataset.scenario, metric: b.dataset.metric,
            verdict: b.querySelector('.imp-verdict').textContent,
            bars: [...b.querySelectorAll('rect[data-axis]')].map((r) => [r.getAttribute('class'), r.dataset.axis,
                   Number(r.dataset.value), Number(r.getAttribute('width'))])}));""")


def test_importance_bar_chart_per_metric_with_noise_share(world, browser, shots):
    server, _ = world
    browser.get(f"{server.url}/#/s/grid")
    _wait(browser, lambda d: len(_rows(d, "outcomes-table")) > 0, what="outcomes of grid")
    browser.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=importance]").click()
    for metric in ("p_race", "p_bad"):
        if metric != "p_race":
            Select(browser.find_element(By.ID, "imp-metric")).select_by_value(metric)
        api = httpx.get(server.url + "/api/sweeps/grid/importance", params={"metric": metric}).json()
        _wait(browser, lambda d, m=metric: [b["metric"] for b in _blocks(d)] == [m, m], what=f"two {metric} charts")
        blocks = {b["scenario"]: b for b in _blocks(browser)}
        assert set(blocks) == {"mitigation=none", "mitigation=early_flush"}
        for i, scen in enumerate(dict.fromkeys(r["scenario"] for r in api["rows"])):
            b = blocks[scen]
            assert b["verdict"] == api["verdicts"][i]
            rows = [r for r in api["rows"] if r["scenario"] == scen]
            drawn = {(cls, axis): (v, w) for cls, axis, v, w in b["bars"]}
            for r in rows:
                assert drawn[("first", r["axis"])][0] == pytest.approx(r["first_order"], rel=1e-12)
                assert drawn[("total", r["axis"])][0] == pytest.approx(r["total"], rel=1e-12)
                # bar lengths are proportional to the shares (300 px = 100%, clipped to [0, 1])
                assert drawn[("total", r["axis"])][1] == pytest.approx(300 * min(max(r["total"], 0), 1), abs=0.01)
            noise = drawn[("noise", "MC noise")]
            assert noise[0] == pytest.approx(rows[0]["noise_share"], rel=1e-12) and noise[0] > 0
            # axes in the API's order (by total), top to bottom
            assert [axis for cls, axis, _, _ in b["bars"] if cls == "total"] == [r["axis"] for r in rows]
    browser.execute_script("document.getElementById('tabs').scrollIntoView()")
    browser.save_screenshot(str(shots / "dashboard-importance.png"))
    # a bad request is one line on the page, no chart
    browser.find_element(By.ID, "imp-where").send_keys("nope = 1")
    browser.find_element(By.ID, "imp-go").click()
    _wait(browser, lambda d: "nope" in d.find_element(By.ID, "imp-msg").text, what="importance error shown")
    assert _blocks(browser) == []


def test_compare_view_sortable_with_changed_points_highlighted(world, browser, shots):
    server, _ = world
    browser.get(server.url + "/")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cmp-a option")) == 3, what="compare pickers")
    browser.find_element(By.CSS_SELECTOR, "#compare-open summary").click()
    Select(browser.find_element(By.ID, "cmp-a")).select_by_value("before")
    Select(browser.find_element(By.ID, "cmp-b")).select_by_value("after")
    browser.find_element(By.ID, "cmp-open").click()
    api = httpx.get(server.url + "/api/compare", params={"a": "before", "b": "after"}).json()
    assert api["changed"] == 3 and len(api["rows"]) == 6
    _wait(browser, lambda d: len(_rows(d, "cmp-table")) == 6, what="compare rows")
    assert browser.find_element(By.ID, "cmp-verdict").text == api["verdict"]
    head = _header(browser, "cmp-table")
    assert {"n_cpus", "wbinvd_us", "p_a", "p_b", "ratio", "ratio_lo", "ratio_hi", "changed"} <= set(head)

    def shown():
        trs = browser.find_elements(By.CSS_SELECTOR, "#cmp-table tbody tr")
        return [(tuple(td.text for td in tr.find_elements(By.TAG_NAME, "td")), "changed" in (tr.get_attribute("class") or ""))
                for tr in trs]

    want = {(str(r["n_cpus"]), str(int(r["wbinvd_us"]))): r for r in api["rows"]}
    ratios = []
    for cells, highlighted in shown():
        r = want[(cells[head.index("n_cpus")], cells[head.index("wbinvd_us")])]
        assert highlighted == r["changed"] and cells[head.index("changed")] == ("yes" if r["changed"] else "no")
        ratios.append(float(cells[head.index("ratio")]))
    assert ratios == sorted(ratios, reverse=True)  # opened sorted by ratio, largest first
    assert ratios == pytest.approx(sorted((r["ratio"] for r in api["rows"]), reverse=True), rel=5e-3)  # 3 digits
    browser.save_screenshot(str(shots / "dashboard-compare.png"))
    browser.find_element(By.CSS_SELECTOR, "#cmp-table th[data-col=ratio]").click()  # now ascending
    asc = [float(c[head.index("ratio")]) for c, _ in shown()]
    assert asc == sorted(asc) and asc[0] == pytest.approx(0.25, rel=0.05)
    browser.find_element(By.ID, "cmp-only").click()
    _wait(browser, lambda d: len(_rows(d, "cmp-table")) == 3, what="changed rows only")
    assert all(h for _, h in shown())
