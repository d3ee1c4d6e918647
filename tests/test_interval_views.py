"""The views that pool several points into one interval use the one definition (core.intervals) on the
pooled numbers: plot cells pool counts and cmc race estimates over the axes they aggregate, an outcome is
possible in a cell when it is possible at any of its points. Checked against a hand computation from the
Parquet rows (numpy/python; scipy for the exact bounds; core.estimators.cmc.stats.estimate_interval as
the cmc interval's definition, tested in test_cmc)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.estimators.cmc.stats import estimate_interval
from queries.db import connect
from queries.named import run_named
from queries.plot import plot

import synthetic_results as sr
from precision_helpers import cp


def _shards(trials: int, race: int, hang: int = 0, timeout: int = 0) -> dict[str, int]:
    return {"clean": trials - race - hang - timeout, "race": race, "hang": hang, "timeout": timeout}


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory) -> Path:
    """cmc points over n_cpus x wait: the panic path (wait 0) has timeouts at n_cpus 64 only, the kexec path
    none (it cannot: no dead CPU); per-shard race estimates differ so pooling weights matter."""
    pts = []
    for n_cpus in (8, 64):
        for wait in (0, 1):
            t = 2000 if wait == 0 else 6000
            timeouts = 3 if (wait, n_cpus) == (0, 64) else 0
            m = 1e-7 * n_cpus * (3 if wait == 0 else 1)
            shards = [_shards(t, 0, timeout=timeouts), _shards(t, 0)]
            cmc = [(m, (0.02 * m) ** 2, m + timeouts / t, (0.02 * m) ** 2), (1.1 * m, (0.03 * m) ** 2, 1.1 * m,
                                                                            (0.03 * m) ** 2)]
            pts.append(sr.Point({"n_cpus": n_cpus, "wait": wait}, shards, cmc=cmc))
    return sr.write_results(tmp_path_factory.mktemp("mixed") / "r", pts, sweep="mixed", n_tasks=2)


def _cells_by_hand(d: Path, metric: str) -> dict[int, tuple[float, float, float, str]]:
    """Per n_cpus (wait aggregated): pooled counts, the cmc race estimate pooled over points with weights
    n_k / N (mean sum n_k m_k / N, variance sum n_k^2 v_k / N^2 of each point's pooled mean), and
    the metric's interval as core/README.md "Intervals" words it."""
    rows = []
    for f in sorted((d / "points").glob("*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    points: dict[str, list] = defaultdict(list)
    for r in rows:
        points[r["point_id"]].append(r)
    cells: dict[int, list] = defaultdict(list)
    for rs in points.values():
        cells[rs[0]["n_cpus"]].append(rs)
    out = {}
    for n_cpus, pts in cells.items():
        big_n = sum(r["trials"] for rs in pts for r in rs)
        c = {o: sum(r[o] for rs in pts for r in rs) for o in ("race", "hang", "timeout")}
        can_timeout = any(rs[0]["wait"] == 0 for rs in pts)
        can_hang = any(rs[0]["wait"] == 1 and rs[0]["p_unresponsive"] > 0 for rs in pts)
        strata = []
        for rs in pts:  # each point's shards pooled exactly (one pass over its trials)
            n = sum(r["trials"] for r in rs)
            mean = sum(r["trials"] * r["p_race_est"] for r in rs) / n
            ss = sum(r["trials"] * (r["trials"] - 1) * r["p_race_var"] + r["trials"] * (r["p_race_est"] - mean) ** 2
                     for r in rs)
            strata.append((n, mean, ss / (n - 1) / n))
        m = sum(n * mu for n, mu, _ in strata) / big_n
        v = sum(n * n * var for n, _, var in strata) / big_n / big_n
        if metric == "p_race":
            lo, hi = estimate_interval(m, v, big_n, 0.95, n_cpus - 1)
            out[n_cpus] = (m, lo, hi, "cmc")
        elif metric == "p_hang":
            k = c["hang"]
            out[n_cpus] = (0.0, 0.0, 0.0, "zero by model") if not can_hang and k == 0 else (k / big_n, *cp(k, big_n),
                                                                                          "counted")
        else:  # p_bad
            k = c["hang"] + c["timeout"]
            if not (can_hang or can_timeout) and k == 0:
                lo, hi = estimate_interval(m, v, big_n, 0.95, n_cpus - 1)
                out[n_cpus] = (m, lo, hi, "cmc")
            else:
                rlo, rhi = estimate_interval(m, v, big_n, 0.975, n_cpus - 1)
                clo, chi = cp(k, big_n, 0.975)
                out[n_cpus] = (m + k / big_n, rlo + clo, rhi + chi, "cmc+counted")
    return out


@pytest.mark.parametrize("metric", ["p_race", "p_bad", "p_hang"])
def test_plot_cells_pool_then_apply_the_one_definition(mixed_dir, tmp_path, metric):
    res = plot(connect(mixed_dir), tmp_path / "p.png", x="n_cpus", metric=metric, size=(2.0, 2.0), dpi=20)
    want = _cells_by_hand(mixed_dir, metric)
    got = {c["n_cpus"]: c for c in res.cells}
    assert got.keys() == want.keys() == {8, 64}
    for n_cpus, (p, lo, hi, method) in want.items():
        g = got[n_cpus]
        assert g["method"] == method, (n_cpus, g)
        # the cmc parts go through the same functions on the same doubles (1e-12); exact bounds vs scipy 1e-9
        assert (g["value"], g["lo"], g["hi"]) == pytest.approx((p, lo, hi), rel=1e-9, abs=1e-300), (n_cpus, g)
    if metric == "p_bad":
        # the n_cpus = 8 cell saw no timeout, yet the panic path it pools can time out: never the race part alone
        assert got[8]["method"] == "cmc+counted" and got[8]["hi"] > 1 - 0.0125 ** (1 / got[8]["trials"])


def test_hang_conditions_and_outcomes_agree_on_p_bad(mixed_dir):
    con = connect(mixed_dir)
    o = {r[0]: r[1:] for r in con.execute(
        "SELECT point_id, p_bad, p_bad_lo, p_bad_hi, p_bad_method FROM outcomes").fetchall()}
    h = run_named(con, "hang_conditions", {"threshold": "0"}).to_pylist()
    assert {r["point_id"] for r in h} == set(o)
    for r in h:
        assert (r["p_bad"], r["p_bad_lo"], r["p_bad_hi"], r["method"]) == o[r["point_id"]]
    kinds = {r["method"] for r in h}
    assert kinds == {"cmc", "cmc+counted"}  # kexec points: the race alone; panic points: race + timeouts
    for r in h:
        if r["method"] == "cmc":
            assert r["p_bad_hi"] < 1e-4 and r["timeout"] == 0
        else:
            assert r["p_bad_hi"] > 1 - 0.0125 ** (1 / r["trials"])


def test_mitigation_effect_reads_the_97_5_interval_of_the_one_definition(tmp_path):
    """A naive pair with 0 races under early_flush: 'bounds' = [lo_none / hi_flush, inf], the exact 97.5% ends."""
    pts = [sr.Point({"mitigation": "none"}, [_shards(3000, 12)]), sr.Point({"mitigation": "early_flush"},
                                                                           [_shards(3000, 0)])]
    d = sr.write_results(tmp_path / "m", pts, sweep="m")
    (g,) = run_named(connect(d), "mitigation_effect").to_pylist()
    lo_n = cp(12, 3000, 0.975)[0]
    hi_f = 1 - 0.0125 ** (1 / 3000)
    assert g["factor_method"] == "bounds" and g["race_factor_hi"] == math.inf
    assert g["race_factor_lo"] == pytest.approx(lo_n / hi_f, rel=1e-9)
