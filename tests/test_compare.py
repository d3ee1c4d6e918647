"""`stoprace compare` (issue 21 items 2 and 4): two result sets point by point.

Ratios and their intervals are recomputed here by hand from the counts (k / n, the
binomial variance, exact (Clopper-Pearson) bounds from scipy (precision_helpers.cp), z from the standard library), and
the `changed` flags from the two exact 95% intervals; the sets are hand-made
(tests/synthetic_results.py) with known changes, plus a real model_rev 1 vs 2 run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

import pytest

from core.params import SPECS
from queries.compare import compare
from queries.db import connect
from queries.estimates import RATIO_MAX_CV

from grid_helpers import write_y_grid
from precision_helpers import cp
from synthetic_results import grid, write_results

Z975 = NormalDist().inv_cdf(0.975)
AXES = {"n_cpus": [8, 64, 512], "wbinvd_us": [100.0, 1000.0, 10000.0], "mitigation": ["none", "early_flush"]}
TRIALS = 20_000


def races(p: dict, moved: dict | None = None) -> int:
    """A count per point: 0 at the smallest points, hundreds at the largest; `moved` multiplies some."""
    k = {8: 0, 64: 30, 512: 400, 1024: 900}[p["n_cpus"]] + (20 if p["wbinvd_us"] > 500 and p["n_cpus"] > 8 else 0)
    if p["mitigation"] == "early_flush":
        k //= 3
    key = (p["n_cpus"], p["wbinvd_us"], p["mitigation"])
    return int(k * (moved or {}).get(key, 1))


def write_set(path: Path, moved: dict | None = None, axes: dict | None = None, base: dict | None = None,
              sweep: str = "cmp") -> Path:
    pts = grid(axes or AXES, lambda p: {"clean": TRIALS - races(p, moved), "race": races(p, moved)}, base=base)
    return write_results(path, pts, sweep=sweep, events=False, n_tasks=4)


MOVED = {(512, 100.0, "none"): 2.0, (64, 10000.0, "none"): 3.0, (512, 10000.0, "early_flush"): 0.5,
         (64, 100.0, "early_flush"): 1.05}
"""Changes of B against A: three large ones (flagged), one of 5% (within the noise: not flagged)."""


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cmp")
    return write_set(tmp / "a"), write_set(tmp / "b", MOVED)


def _by_key(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["n_cpus"], r["wbinvd_us"], r["mitigation"]): r for r in rows}


def test_self_compare_gives_ratio_one_and_no_flags(sets, stoprace):
    a, _ = sets
    r = stoprace("compare", a, a, "--format", "json")
    assert r.rc == 0, r.err
    d = json.loads(r.out)
    assert (d["matched"], d["unmatched_a"], d["unmatched_b"], d["changed"]) == (18, 0, 0, 0)
    assert d["by_construction"] == {}
    for row in d["rows"]:
        assert row["changed"] is False and row["p_a"] == row["p_b"]
        if row["p_a"] > 0:
            assert row["ratio"] == 1.0 and row["ratio_lo"] < 1.0 < row["ratio_hi"]
        else:  # 0 / 0: no ratio, the bounds interval [0, inf)
            assert row["ratio"] is None and row["ratio_lo"] == 0.0 and row["ratio_hi"] is None
    assert d["verdict"].startswith("no matched point changed: all 18 pairs")


def test_ratios_intervals_and_flags_by_hand(sets, stoprace):
    a, b = sets
    d = json.loads(stoprace("compare", a, b, "--format", "json").out)
    rows = _by_key(d["rows"])
    assert len(rows) == 18 and d["changed"] == 3
    for (n_cpus, w, mit), row in rows.items():
        p = {"n_cpus": n_cpus, "wbinvd_us": w, "mitigation": mit}
        ka, kb = races(p), races(p, MOVED)
        pa_, pb = ka / TRIALS, kb / TRIALS
        assert (row["p_a"], row["p_b"]) == (pytest.approx(pa_, rel=1e-12), pytest.approx(pb, rel=1e-12))
        (la, ha), (lb, hb) = cp(ka, TRIALS), cp(kb, TRIALS)
        assert row["changed"] == bool(ha < lb or hb < la), (p, row)
        va, vb = pa_ * (1 - pa_) / TRIALS, pb * (1 - pb) / TRIALS
        if ka and kb and math.sqrt(va) <= RATIO_MAX_CV * pa_ and math.sqrt(vb) <= RATIO_MAX_CV * pb:
            s = math.sqrt(va / pa_ ** 2 + vb / pb ** 2)
            want = (pb / pa_, pb / pa_ * math.exp(-Z975 * s), pb / pa_ * math.exp(Z975 * s), "delta-log")
        else:  # the 97.5% interval ends, Bonferroni
            (la9, ha9), (lb9, hb9) = (cp(k, TRIALS, 0.975) for k in (ka, kb))
            want = (pb / pa_ if ka else None, lb9 / ha9, hb9 / la9 if la9 > 0 else None, "bounds")
        got = (row["ratio"], row["ratio_lo"], row["ratio_hi"], row["method"])
        assert got[3] == want[3], (p, got)
        for g, w_ in zip(got[:3], want[:3]):
            assert (g is None and w_ is None) or g == pytest.approx(w_, rel=1e-9), (p, got, want)
    flagged = {k for k, r in rows.items() if r["changed"]}
    assert flagged == {k for k, f in MOVED.items() if f != 1.05}
    assert d["rows"][0]["changed"] and not d["rows"][-1]["changed"]  # changed first
    assert "3 of 18 matched points changed" in d["verdict"] and "up at 2" in d["verdict"] and "down at 1" in d["verdict"]


def test_parameters_that_differ_by_construction_are_named_and_not_matched(tmp_path, stoprace):
    a = write_set(tmp_path / "a", base={"p_stall": 0.01})
    b = write_set(tmp_path / "b", base={"p_stall": 0.03}, sweep="other")
    d = json.loads(stoprace("compare", a, b, "--format", "json").out)
    assert d["by_construction"] == {"p_stall": [0.01, 0.03]} and "p_stall" not in d["on"]
    assert d["matched"] == 18 and d["changed"] == 0
    assert d["held"]["wait"] == 1 and set(d["rows"][0]) >= {"n_cpus", "wbinvd_us", "mitigation", "p_a", "p_b",
                                                            "ratio", "ratio_lo", "ratio_hi", "changed"}
    t = stoprace("compare", a, b)
    assert t.rc == 0 and "p_stall = 0.01 in" in t.out and "0.03 in" in t.out


def test_unmatched_points_are_counted_per_side(tmp_path, stoprace):
    a = write_set(tmp_path / "a", axes={**AXES, "n_cpus": [8, 64, 512, 1024]})
    b = write_set(tmp_path / "b", axes={**AXES, "wbinvd_us": [100.0, 1000.0]})
    d = json.loads(stoprace("compare", a, b, "--format", "json").out)
    # matched: n_cpus 8/64/512 x wbinvd 100/1000 x 2; A's extra: 1024 (x 3 x 2) and wbinvd 1e4 (x 3 x 2)
    assert (d["matched"], d["unmatched_a"], d["unmatched_b"]) == (12, 24 - 12, 0)
    assert "unmatched: 12 point(s) of" in d["verdict"]


def test_on_restricts_the_match_and_refuses_ambiguity(tmp_path, stoprace):
    a = write_set(tmp_path / "a", axes={**AXES, "ipi_jitter_us": [0.0, 25.0]})
    b = write_set(tmp_path / "b", base={"ipi_jitter_us": 30.0})
    msg = stoprace("compare", a, b).one_line_error("compare")
    assert "no point of" in msg and "share no value of ipi_jitter_us" in msg and "--on" in msg
    msg = stoprace("compare", a, b, "--on", "n_cpus", "wbinvd_us", "mitigation").one_line_error("compare")
    assert "hold several points of" in msg and "differ in ipi_jitter_us" in msg
    d = json.loads(stoprace("compare", a, b, "--on", "n_cpus", "wbinvd_us", "mitigation",
                            "--where", "ipi_jitter_us <> 25", "--format", "json").out)
    assert d["matched"] == 18 and d["on"] == ["n_cpus", "wbinvd_us", "mitigation"]
    assert "'n_cpu' is not a parameter" in stoprace("compare", a, b, "--on", "n_cpu").one_line_error("compare")
    assert "did you mean 'p_race'" in stoprace("compare", a, b, "--metric", "p_rac").one_line_error("compare")
    assert "bad --where" in stoprace("compare", a, b, "--where", "nope = 1").one_line_error("compare")


def test_other_metrics_and_cmc_sides(tmp_path):
    """p_bad of a cmc set against itself shifted by a known factor: the ratio is that factor exactly."""
    import numpy as np

    axes = {"n_cpus": [8, 64], "wbinvd_us": [100.0, 1000.0]}
    y = np.array([[-7.0, -6.0], [-5.0, -4.5]])
    a = write_y_grid(tmp_path / "a", axes, y, np.full(y.shape, 1e-4))
    b = write_y_grid(tmp_path / "b", axes, y + math.log10(3.0), np.full(y.shape, 1e-4), sweep="b")
    c = compare(connect(a), connect(b), metric="p_bad")
    assert c.matched == 4 and c.changed == 4
    for r in c.rows.to_pylist():
        assert r["ratio"] == pytest.approx(3.0, rel=1e-12) and r["method"] == "delta-log"
        # each side's relative sd is sqrt(y_var) ln 10 = 0.023, so log(ratio) has sd 0.0326
        s = math.sqrt(2 * 1e-4) * math.log(10)
        assert r["ratio_lo"] == pytest.approx(3.0 * math.exp(-Z975 * s), rel=1e-9)


def test_a_set_on_object_storage_compares_like_the_local_copy(sets, capsys):
    """B on a moto S3 server (a URI), A local: the same answer as both local."""
    pytest.importorskip("moto")
    from s3_helpers import moto_s3

    from sweeps.cli import main

    a, b = sets
    with moto_s3() as s3:
        bucket = s3.bucket("cmp")
        client = s3.client()
        for f in sorted(Path(b).rglob("*")):
            if f.is_file():
                client.upload_file(str(f), bucket, f"sets/b/{f.relative_to(b).as_posix()}")
        uri = s3.uri(bucket, "sets/b")
        rc = main(["compare", str(a), uri, "--format", "json"])
        remote, err = capsys.readouterr()
        assert rc == 0, err
    rc = main(["compare", str(a), str(b), "--format", "json"])
    local, _ = capsys.readouterr()
    r, lo = json.loads(remote), json.loads(local)
    assert r["b"] == uri and r["rows"] == lo["rows"] and r["changed"] == lo["changed"] == 3


MODEL_REV_SPEC = """
name = "rev{rev}"
seed = 11
trials = 4000
shard_trials = 2000
estimator = "cmc"
task_seconds = 0.2

[base]
model_rev = {rev}
mitigation = "none"
incoherent_fraction = 1.0
p_stall = 0.01

[axes]
n_cpus = [64, 512]
wait = [0, 1]
"""


@pytest.mark.skipif("model_rev" not in SPECS,
                    reason="model_rev is not in core.params yet (MODEL.md revision 2; the rev2 engineer adds it)")
def test_model_rev_1_vs_2_flags_the_points_the_kernel_details_move(ray_session, tmp_path, stoprace):
    """MODEL.md revision 2: on the kexec path (wait = 1) with CPU 0's flag set (incoherent_fraction = 1) a racer
    must outlast CPU 0's own WBINVD in relocate_kernel() too, so p_race(none) drops; on the panic path
    (wait = 0) the hand-over is unchanged. compare flags exactly the wait = 1 points, each with ratio < 1."""
    import sweeps

    dirs = []
    for rev in (1, 2):
        spec = tmp_path / f"rev{rev}.toml"
        spec.write_text(MODEL_REV_SPEC.format(rev=rev))
        sweeps.run(spec, out=tmp_path / f"rev{rev}", progress=False)
        dirs.append(tmp_path / f"rev{rev}")
    d = json.loads(stoprace("compare", *dirs, "--format", "json").out)
    assert d["by_construction"] == {"model_rev": [1, 2]} and d["matched"] == 4
    for row in d["rows"]:
        if row["wait"] == 1:
            assert row["changed"] and row["ratio_hi"] < 1.0, row
        else:
            assert not row["changed"], row
