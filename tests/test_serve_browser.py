"""`stoprace serve` end to end: a real server process on 127.0.0.1, the dashboard in headless Chromium (issue 13 item 5).

The server serves copies of the first release's result sets; the browser lists them,
shows the outcomes table (sorted, filtered), a capacity table after a target is entered,
a heatmap, the mitigation comparison and a replay timeline, and submits a tiny sweep
whose progress it follows to done. What the page shows is checked against the API's
numbers (themselves tested against the CLI in test_serve_api.py).

Screenshots go to $STOPRACE_SCREENSHOTS when set (`STOPRACE_SCREENSHOTS=docs pytest
tests/test_serve_browser.py` refreshes the README's), else to the test's tmp dir.
Skipped, with the reason, where Chromium or chromedriver is missing.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import ROOT, TINY_SPEC, Server, results_root

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="no headless browser: install Debian's chromium and chromium-driver (.ci/run does)"),
]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    root = results_root(tmp)
    server = Server(str(root), "--workers", "1", cwd=tmp)
    try:
        yield server, root, tmp
    finally:
        rc, out = server.stop()
        assert rc == 0, out


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1100"):
        opts.add_argument(a)
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture(scope="module")
def shots(world):
    d = Path(os.environ["STOPRACE_SCREENSHOTS"]) if os.environ.get("STOPRACE_SCREENSHOTS") else world[2] / "shots"
    d = d if d.is_absolute() else ROOT / d
    d.mkdir(parents=True, exist_ok=True)
    return d


def _wait(drv, cond, timeout=60, what="condition"):
    return WebDriverWait(drv, timeout, poll_frequency=0.1).until(lambda d: cond(d), message=what)


def _rows(drv, table_id: str) -> list[list[str]]:
    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in drv.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]


def _sweep_rows(drv) -> dict[str, dict]:
    """The sweeps list as shown, read in one script call (the page redraws it as progress changes)."""
    rows = drv.execute_script("""
        return [...document.querySelectorAll('#sweeps tbody tr')].map((tr) => ({
            name: tr.dataset.name, status: tr.dataset.status, progress: Number(tr.dataset.progress),
            cells: [...tr.querySelectorAll('td')].map((td) => td.textContent.trim())}));""")
    return {r["name"]: r for r in rows}


def _header(drv, table_id: str) -> list[str]:
    return [th.text for th in drv.find_elements(By.CSS_SELECTOR, f"#{table_id} thead th")]


def _open_sweep(drv, server, name):
    drv.get(f"{server.url}/#/s/{name}")
    _wait(drv, lambda d: len(_rows(d, "outcomes-table")) > 0, what=f"outcomes of {name}")


def _tab(drv, name):
    drv.find_element(By.CSS_SELECTOR, f"#tabs button[data-tab={name}]").click()


def test_sweeps_listed(world, browser, shots):
    server, _, _ = world
    browser.get(server.url + "/")
    _wait(browser, lambda d: len(_sweep_rows(d)) == 2, what="2 sweeps listed")
    rows = _sweep_rows(browser)
    assert set(rows) == {"naive", "cmc"}
    api = {s["name"]: s for s in httpx.get(server.url + "/api/sweeps").json()}
    for name, row in rows.items():
        assert row["status"] == api[name]["status"] == "complete"
        cells = row["cells"]
        assert cells[0] == name and cells[3] == f"{api[name]['tasks_done']}/{api[name]['tasks_total']}"
        assert cells[4] == str(api[name]["points"]) and "100%" in cells[2]
    browser.save_screenshot(str(shots / "dashboard-sweeps.png"))


def test_outcomes_sorted_and_filtered(world, browser, shots):
    server, _, _ = world
    _open_sweep(browser, server, "naive")
    api = httpx.get(server.url + "/api/sweeps/naive/outcomes").json()
    assert len(_rows(browser, "outcomes-table")) == len(api) == 8
    head = _header(browser, "outcomes-table")
    assert {"n_cpus", "wait", "mitigation", "p_bad", "p_bad_hi"} <= set(head)
    # sort by p_bad_hi descending: two clicks on its header
    th = browser.find_element(By.CSS_SELECTOR, "#outcomes-table th[data-col=p_bad_hi]")
    th.click()
    browser.find_element(By.CSS_SELECTOR, "#outcomes-table th[data-col=p_bad_hi]").click()
    col = _header(browser, "outcomes-table").index("p_bad_hi")
    ids = [r[_header(browser, "outcomes-table").index("point_id")] for r in _rows(browser, "outcomes-table")]
    expect = [r["point_id"] for r in sorted(api, key=lambda r: -r["p_bad_hi"])]
    his = sorted((r["p_bad_hi"] for r in api), reverse=True)
    assert [float(r[col]) for r in _rows(browser, "outcomes-table")] == pytest.approx(his, rel=5e-3)  # 3 digits shown
    assert ids[0] == expect[0]
    # filter
    f = browser.find_element(By.ID, "outcomes-filter")
    f.send_keys("n_cpus = 8")
    _wait(browser, lambda d: len(_rows(d, "outcomes-table")) == sum(r["n_cpus"] == 8 for r in api), what="filtered rows")
    ncol = _header(browser, "outcomes-table").index("n_cpus")
    assert {r[ncol] for r in _rows(browser, "outcomes-table")} == {"8"}
    browser.save_screenshot(str(shots / "dashboard-outcomes.png"))
    f.clear()
    f.send_keys(" ")


def test_capacity_table_after_entering_a_target(world, browser, shots):
    server, _, _ = world
    _open_sweep(browser, server, "naive")
    _tab(browser, "capacity")
    assert _rows(browser, "cap-table") == []
    browser.find_element(By.ID, "target-p").send_keys("1e-2")
    for cb in browser.find_elements(By.CSS_SELECTOR, ".cap-by-axis"):
        if cb.get_attribute("value") in ("wait", "mitigation"):
            cb.click()
    browser.find_element(By.ID, "cap-hosts").send_keys("10000")
    browser.find_element(By.ID, "cap-kexecs").send_keys("12")
    browser.find_element(By.ID, "cap-go").click()
    api = httpx.get(server.url + "/api/sweeps/naive/capacity", params={
        "target_p": "1e-2", "by": "wait,mitigation", "hosts": "10000", "kexecs_per_host_year": "12"}).json()
    _wait(browser, lambda d: len(_rows(d, "cap-table")) == len(api["limits"]) == 4, what="capacity rows")
    head = _header(browser, "cap-table")
    assert head == list(api["limits"][0])
    shown = {(r[head.index("wait")], r[head.index("mitigation")]): r for r in _rows(browser, "cap-table")}
    for lim in api["limits"]:
        r = shown[(str(lim["wait"]), lim["mitigation"])]
        assert r[head.index("status")] == lim["status"]
        assert r[head.index("max_n_cpus")] == ("-" if lim["max_n_cpus"] is None else str(lim["max_n_cpus"]))
    assert len(_rows(browser, "fleet-table")) == len(api["fleet"])
    browser.save_screenshot(str(shots / "dashboard-capacity.png"))


def test_heatmap_rendered(world, browser, shots):
    server, _, _ = world
    _open_sweep(browser, server, "naive")
    _tab(browser, "plot")
    Select(browser.find_element(By.ID, "plot-x")).select_by_value("n_cpus")
    Select(browser.find_element(By.ID, "plot-y")).select_by_value("wait")
    Select(browser.find_element(By.ID, "plot-metric")).select_by_value("p_bad")
    browser.find_element(By.ID, "plot-go").click()
    img = _wait(browser, lambda d: d.find_element(By.ID, "plot-img") if d.find_element(By.ID, "plot-img")
                .get_attribute("data-loaded") else None, what="heatmap image")
    assert "y=wait" in img.get_attribute("data-loaded") and "metric=p_bad" in img.get_attribute("data-loaded")
    w, h = browser.execute_script("const i = document.getElementById('plot-img'); return [i.naturalWidth, i.naturalHeight];")
    assert w > 300 and h > 200
    browser.execute_script("document.getElementById('tabs').scrollIntoView()")
    browser.save_screenshot(str(shots / "dashboard-heatmap.png"))
    # a bad where is one line on the page, no image
    browser.find_element(By.ID, "plot-where").send_keys("nope = 1")
    browser.find_element(By.ID, "plot-go").click()
    _wait(browser, lambda d: "nope" in d.find_element(By.ID, "plot-msg").text, what="plot error shown")


def test_mitigation_comparison(world, browser):
    server, _, _ = world
    _open_sweep(browser, server, "naive")
    _tab(browser, "mitigation")
    api = httpx.get(server.url + "/api/sweeps/naive/named/mitigation_effect").json()
    assert api
    _wait(browser, lambda d: len(_rows(d, "mit-table")) == len(api), what="mitigation rows")
    assert _header(browser, "mit-table") == list(api[0])


def test_replay_timeline_drawn(world, browser, shots):
    server, _, _ = world
    _open_sweep(browser, server, "naive")
    _tab(browser, "replay")
    _wait(browser, lambda d: len(_rows(d, "rp-events")) > 0, what="event list")
    head = _header(browser, "rp-events")
    first = _rows(browser, "rp-events")[0]
    browser.find_element(By.CSS_SELECTOR, "#rp-events tbody tr").click()
    svg = _wait(browser, lambda d: (d.find_elements(By.ID, "replay-svg") or [None])[0], what="timeline svg")
    api = httpx.get(server.url + "/api/sweeps/naive/replay", params={
        "point": first[head.index("point_id")], "shard": first[head.index("shard")], "trial": first[head.index("trial")]}).json()
    assert svg.get_attribute("data-outcome") == api["outcome"] == first[head.index("outcome")]
    n = int(svg.get_attribute("data-cpus"))
    assert n == min(len(api["cpus"]), 24)  # at most 24 rows: every NMI'd CPU, then the last to clear
    assert len(svg.find_elements(By.CSS_SELECTOR, "g.cpu")) == n
    assert len(svg.find_elements(By.CSS_SELECTOR, "rect.irqs-off")) == n
    nmi_cpus = [c for c in api["cpus"] if c["nmi_send"] is not None]
    assert len(svg.find_elements(By.CSS_SELECTOR, "circle.nmi")) >= len(nmi_cpus)
    drawn = {int(g.get_attribute("data-cpu")) for g in svg.find_elements(By.CSS_SELECTOR, "g.cpu")}
    assert {c["cpu"] for c in nmi_cpus} <= drawn  # every NMI'd CPU is on the chart
    assert api["outcome"] in browser.find_element(By.ID, "rp-summary").text
    browser.execute_script("document.getElementById('tabs').scrollIntoView()")
    browser.save_screenshot(str(shots / "dashboard-replay.png"))


def test_submitted_sweep_progress_advances_to_done(world, browser, shots):
    server, root, _ = world
    browser.get(server.url + "/")
    _wait(browser, lambda d: len(_sweep_rows(d)) >= 2, what="list")
    browser.find_element(By.CSS_SELECTOR, "#new-sweep summary").click()
    area = browser.find_element(By.ID, "spec")
    area.clear()
    browser.execute_script("arguments[0].value = arguments[1];", area, TINY_SPEC.format(name="web"))
    browser.find_element(By.ID, "submit").click()
    _wait(browser, lambda d: "web:" in d.find_element(By.ID, "submit-msg").text, what="submitted")
    assert str(root / "web") in browser.find_element(By.ID, "submit-msg").text
    seen: list[tuple[str, float]] = []
    t0 = time.monotonic()
    while True:
        row = _sweep_rows(browser).get("web")
        if row:
            st, pr = row["status"], row["progress"]
            if not seen or seen[-1] != (st, pr):
                seen.append((st, pr))
                if st == "running" and len(seen) <= 3:
                    browser.save_screenshot(str(shots / "dashboard-running.png"))
            if st == "complete":
                break
            assert st in ("queued", "running", "partial"), seen
        assert time.monotonic() - t0 < 240, seen
        time.sleep(0.1)
    progress = [p for _, p in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(st in ("queued", "running") for st, _ in seen)  # it was seen before it was done
    api = httpx.get(server.url + "/api/sweeps/web").json()
    assert api["tasks_done"] == api["tasks_total"] > 0 and (root / "web" / "manifest.json").is_file()


def test_capacity_of_an_incomplete_set_is_refused_then_answered_partial(world, browser):
    """The dashboard shows the API's refusal (the CLI's, naming partial=true), and with "partial"
    ticked the table with its PARTIAL line, as `stoprace capacity --partial` prints it."""
    from serve_helpers import FIXTURES

    server, root, _ = world
    shutil.copytree(FIXTURES / "release1-partial", root / "partial")
    try:
        browser.get(server.url + "/")
        _wait(browser, lambda d: "partial" in _sweep_rows(d), what="the partial set listed")
        assert _sweep_rows(browser)["partial"]["status"] == "partial"
        _open_sweep(browser, server, "partial")
        _tab(browser, "capacity")
        target = browser.find_element(By.ID, "target-p")
        target.clear()
        target.send_keys("1e-3")
        browser.find_element(By.ID, "cap-go").click()
        _wait(browser, lambda d: "partial=true" in d.find_element(By.ID, "cap-msg").text, what="the refusal")
        assert "missing tasks 10-15" in browser.find_element(By.ID, "cap-msg").text
        assert _rows(browser, "cap-table") == []
        browser.find_element(By.ID, "cap-partial").click()
        browser.find_element(By.ID, "cap-go").click()
        api = httpx.get(server.url + "/api/sweeps/partial/capacity", params={"target_p": "1e-3", "partial": "true"}).json()
        _wait(browser, lambda d: len(_rows(d, "cap-table")) == len(api["limits"]) > 0, what="partial capacity rows")
        notes = browser.find_element(By.ID, "cap-notes").text
        assert notes.startswith("PARTIAL: ") and "missing tasks 10-15" in notes
    finally:
        shutil.rmtree(root / "partial")
