"""`stoprace importance` (issue 21 items 1 and 4): exact Sobol indices over the grid, Monte Carlo noise taken out.

Every number is checked against an independent computation: the closed-form ANOVA of an
Ishigami function over the grid's levels (tests/grid_helpers.py, one-dimensional means
only), the noise terms as traces of the projection matrices (built explicitly here),
SciPy's `sobol_indices` (Saltelli sampling of the continuous function), and exact bounds
from scipy for the zero rule.
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest

from queries.db import connect
from queries.importance import grid_indices, importance
from queries.point_estimates import point_estimates

from grid_helpers import ishigami, ishigami_anova, write_y_grid
from precision_helpers import cp
from synthetic_results import grid, write_results

# Level values of the three axes (x in radians) and the parameter values they stand for.
# x1 is not symmetric about 0, so mean(sin x1) != 0 and x3 has a first-order effect too.
X1 = np.linspace(-0.25 * math.pi, 0.9 * math.pi, 7)
X2 = np.linspace(-math.pi, math.pi, 6)
X3 = np.linspace(-math.pi, math.pi, 5)
AXES = {"n_cpus": [8, 16, 32, 64, 128, 256, 512],
        "wbinvd_us": [100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0],
        "ipi_jitter_us": [0.0, 10.0, 20.0, 30.0, 40.0]}
NAMES = list(AXES)
MESH = np.meshgrid(X1, X2, X3, indexing="ij")


def to_y(f: np.ndarray) -> np.ndarray:
    """log10 p_race for the function value f (affine: indices do not change); p in [1e-9, 1e-1]."""
    return -6.0 + f / 4.0


def by_axis(rows: list[dict], scenario: str | None = None) -> dict[str, dict]:
    return {r["axis"]: r for r in rows if scenario is None or r["scenario"] == scenario}


# ---------------------------------------------------------------------------- the grid arithmetic


def test_grid_indices_match_the_closed_form_anova():
    """Noise-free: first-order and total indices are the ANOVA shares of the grid, to rounding."""
    want = ishigami_anova(X1, X2, X3)
    got = grid_indices(ishigami(*MESH))
    np.testing.assert_allclose(got.first_order, want["first_order"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.total, want["total"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.first_order_raw, got.first_order, rtol=0, atol=0)
    assert got.var_y == pytest.approx(want["var"], rel=1e-12) and got.noise_var == 0.0
    assert want["first_order"][2] > 0.001  # x3 matters alone here (not the textbook 0), so the test sees it
    # additive plus one interaction, two axes: f = u_i + w_j + c u_i w_j with centred u, w
    u, w, c = np.array([-2.0, 0.5, 1.5]), np.array([-1.0, -1.0, 0.0, 2.0]), 0.7
    f = u[:, None] + w[None, :] + c * u[:, None] * w[None, :]
    v1, v2, v12 = u.var(), w.var(), c * c * u.var() * w.var()
    g = grid_indices(f)
    v = v1 + v2 + v12
    np.testing.assert_allclose(g.first_order, [v1 / v, v2 / v], atol=1e-12)
    np.testing.assert_allclose(g.total, [(v1 + v12) / v, (v2 + v12) / v], atol=1e-12)


def _projection_reference(y: np.ndarray, s2: np.ndarray) -> dict[str, np.ndarray]:
    """Corrected indices with every variance term a quadratic form y' P y / N and its noise E[e' P e] / N =
    trace(P diag(s2)) / N, the projections P built as explicit N x N matrices (no closed forms)."""
    shape, n = y.shape, y.size
    flat, s2 = y.reshape(-1), s2.reshape(-1)
    idx = np.array(np.unravel_index(np.arange(n), shape)).T  # cell -> level indices
    eye, mean_all = np.eye(n), np.full((n, n), 1.0 / n)

    def same(cols):  # averaging over the cells that share the levels of `cols`
        m = np.all(idx[:, None, cols] == idx[None, :, cols], axis=2).astype(float)
        return m / m.sum(axis=1, keepdims=True)

    def term(p):
        return flat @ p @ flat / n, np.trace(p * s2[None, :]) / n

    v, nv = term(eye - mean_all)
    first, total = [], []
    for i in range(len(shape)):
        vi, ni = term(same([i]) - mean_all)
        vt, nt = term(eye - same([j for j in range(len(shape)) if j != i]))
        first.append((vi - ni) / (v - nv))
        total.append((vt - nt) / (v - nv))
    return {"first_order": np.array(first), "total": np.array(total), "noise_var": nv}


def test_noise_terms_are_the_traces_of_the_projections():
    """Heteroscedastic noise: the subtracted terms equal trace(P Sigma) / N of each variance term's projection."""
    rng = np.random.default_rng(3)
    y = rng.normal(size=(4, 3, 5)) + np.arange(4)[:, None, None]
    s2 = rng.uniform(0.05, 0.4, y.shape)
    got = grid_indices(y, float(s2.mean()))
    want = _projection_reference(y, s2)
    np.testing.assert_allclose(got.first_order, want["first_order"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.total, want["total"], rtol=0, atol=1e-12)
    assert got.noise_var == pytest.approx(want["noise_var"], rel=1e-12)


NOISE_FRACTION = 0.5
"""Mean per-point noise variance of Y as a fraction of the noise-free Var(Y) over the grid."""


@pytest.fixture(scope="module")
def noise_ensemble():
    """R noisy replicates of the grid (noise of known, heteroscedastic variance): truth, noise and the indices."""
    y = to_y(ishigami(*MESH))
    want = ishigami_anova(X1, X2, X3)
    rng = np.random.default_rng(11)
    s2 = NOISE_FRACTION * y.var() * rng.uniform(0.5, 1.5, y.shape)
    reps = [grid_indices(y + rng.normal(0.0, np.sqrt(s2)), float(s2.mean())) for _ in range(2000)]
    out = {k: np.array([getattr(r, k) for r in reps]) for k in ("first_order", "total", "first_order_raw", "total_raw")}
    return y, s2, want, out


def test_corrected_indices_are_unbiased_and_the_uncorrected_are_not(noise_ensemble):
    """Over 2000 replicates the corrected indices centre on the truth (bias < a quarter of their sampling
    sd: what is left is the ratio's second-order bias); the raw ones miss it by several sd."""
    _, _, want, out = noise_ensemble
    for k in ("first_order", "total"):
        bias = out[k].mean(axis=0) - want[k]
        assert np.all(np.abs(bias) < 0.25 * out[k].std(axis=0)), (k, bias, out[k].std(axis=0))
    raw_bias = np.concatenate([out["first_order_raw"].mean(0) - want["first_order"],
                               out["total_raw"].mean(0) - want["total"]])
    raw_sd = np.concatenate([out["first_order_raw"].std(0), out["total_raw"].std(0)])
    # S1 (x1), ST2 and ST3 are pulled towards the noise by > 3 sd (measured: 3.1, 5.1, 3.8 sd)
    assert (np.abs(raw_bias) > 3 * raw_sd).sum() >= 3, raw_bias / raw_sd


def test_scipy_sobol_indices_agree_on_the_continuous_ishigami():
    """On a fine midpoint grid (96 levels per axis) the grid's indices are the continuous Ishigami ones:
    within 1e-3 of the closed form, and within SciPy's Monte Carlo error of `scipy.stats.sobol_indices`."""
    stats = pytest.importorskip("scipy.stats")
    if not hasattr(stats, "sobol_indices"):
        pytest.skip("scipy.stats.sobol_indices needs SciPy >= 1.11")
    n = 96
    m = -math.pi + (2 * np.arange(n) + 1) * math.pi / n
    g = grid_indices(ishigami(*np.meshgrid(m, m, m, indexing="ij")))
    a, b = 7.0, 0.1  # the textbook closed form over [-pi, pi]^3
    v = a * a / 8 + b * math.pi ** 4 / 5 + b * b * math.pi ** 8 / 18 + 0.5
    v1, v2, v13 = 0.5 * (1 + b * math.pi ** 4 / 5) ** 2, a * a / 8, b * b * math.pi ** 8 * (1 / 18 - 1 / 50)
    np.testing.assert_allclose(g.first_order, [v1 / v, v2 / v, 0.0], atol=1e-3)
    np.testing.assert_allclose(g.total, [(v1 + v13) / v, v2 / v, v13 / v], atol=1e-3)

    seed_kw = "rng" if "rng" in inspect.signature(stats.sobol_indices).parameters else "random_state"
    dists = [stats.uniform(-math.pi, 2 * math.pi)] * 3
    runs = [stats.sobol_indices(func=lambda x: ishigami(x[0], x[1], x[2]), n=2 ** 13, dists=dists,
                                **{seed_kw: np.random.default_rng(s)}) for s in range(8)]
    for k, attr in (("first_order", "first_order"), ("total", "total_order")):
        est = np.array([getattr(r, attr) for r in runs])
        se = est.std(axis=0, ddof=1) / math.sqrt(len(runs))
        assert np.all(np.abs(getattr(g, k) - est.mean(axis=0)) <= 4 * se + 1e-3), (k, getattr(g, k), est.mean(0), se)


# ---------------------------------------------------------------------------- through a result set


@pytest.fixture(scope="module")
def exact_set(tmp_path_factory):
    """mitigation = none: Ishigami a = 7; early_flush: a = 2 (another ranking); no Monte Carlo noise."""
    axes = {"mitigation": ["none", "early_flush"], **AXES}
    y = np.stack([to_y(ishigami(*MESH, a=7.0)), to_y(ishigami(*MESH, a=2.0))])
    return write_y_grid(tmp_path_factory.mktemp("imp") / "exact", axes, y, base={"wait": 1})


def test_importance_of_a_result_set_is_the_analytic_one_per_scenario(exact_set, stoprace):
    r = stoprace("importance", exact_set, "--format", "json")
    assert r.rc == 0, r.err
    d = json.loads(r.out)
    assert d["metric"] == "p_race" and len(d["rows"]) == 6
    for scen, a in (("mitigation=none", 7.0), ("mitigation=early_flush", 2.0)):
        want = ishigami_anova(X1, X2, X3, a=a)
        got = by_axis(d["rows"], scen)
        assert set(got) == set(NAMES)
        for i, name in enumerate(NAMES):
            row = got[name]
            assert row["first_order"] == pytest.approx(want["first_order"][i], abs=1e-9)
            assert row["total"] == pytest.approx(want["total"][i], abs=1e-9)
            assert row["noise_share"] == pytest.approx(0.0, abs=1e-12)
            assert (row["points"], row["zero_points"], row["levels"]) == (210, 0, len(AXES[name]))
            assert row["mitigation"] == scen.split("=")[1]
        # sorted by total, and the verdict names the leader with its first-order share
        ranked = [r["axis"] for r in d["rows"] if r["scenario"] == scen]
        assert ranked == [NAMES[i] for i in np.argsort(-want["total"], kind="stable")]
        verdict = next(v for v in d["verdicts"] if v.startswith(scen + ": "))
        lead = int(np.argmax(want["total"]))
        assert f"{NAMES[lead]} explains {want['first_order'][lead]:.0%} of the variance of log10 p_race" in verdict
    # the table form says the same
    t = stoprace("importance", exact_set)
    assert t.rc == 0 and "mitigation=none: n_cpus explains" in t.out and "wbinvd_us" in t.out


def test_by_axis_splits_the_grid(exact_set):
    """--by n_cpus: each n_cpus value is its own 2-axis grid; f = g2(x2) + sin(x1*) (1 + h(x3)) there."""
    imp = importance(connect(exact_set), "p_race", by=["n_cpus"], where="mitigation = 'none'")
    rows = imp.rows.to_pylist()
    assert {r["axis"] for r in rows} == {"wbinvd_us", "ipi_jitter_us"} and len(rows) == 2 * 7
    for k, n_cpus in enumerate(AXES["n_cpus"]):
        g2, h = 7.0 * np.sin(X2) ** 2, math.sin(X1[k]) * 0.1 * X3 ** 4
        v = g2.var() + h.var()
        got = by_axis(rows, f"n_cpus={n_cpus}")
        assert got["wbinvd_us"]["first_order"] == pytest.approx(g2.var() / v, abs=1e-9)
        assert got["ipi_jitter_us"]["total"] == pytest.approx(h.var() / v, abs=1e-9)
        assert got["wbinvd_us"]["n_cpus"] == n_cpus and got["wbinvd_us"]["points"] == 30
    assert "n_cpus" in imp.by and "mitigation" in imp.by


def test_noisy_result_set_corrected_within_sampling_error_raw_not(noise_ensemble, tmp_path):
    """One noisy replicate written as a result set (each point's cmc variance gives its y_var): the corrected
    indices lie within 3 sampling sd of the truth; the uncorrected total index of x2 does not."""
    y, s2, want, out = noise_ensemble
    y_obs = y + np.random.default_rng(5).normal(0.0, np.sqrt(s2))
    d = write_y_grid(tmp_path / "noisy", AXES, y_obs, s2)
    rows = by_axis(importance(connect(d), "p_race").rows.to_pylist())
    var_obs = y_obs.var()
    for i, name in enumerate(NAMES):
        r = rows[name]
        for k in ("first_order", "total"):
            assert abs(r[k] - want[k][i]) < 3 * out[k][:, i].std(), (name, k, r[k], want[k][i])
        assert r["noise_share"] == pytest.approx(s2.mean() * (1 - 1 / y.size) / var_obs, rel=1e-9)
    sd = out["total_raw"][:, 1].std()
    assert abs(rows["wbinvd_us"]["total_raw"] - want["total"][1]) > 3 * sd


def test_zero_estimates_enter_at_their_upper_bound_and_are_counted(tmp_path, stoprace):
    """Naive counts: a point with 0 races has y = log10 of its exact 95% upper bound and no noise term."""
    def races(p):
        return 0 if p["n_cpus"] == 8 and p["wbinvd_us"] < 1000 else p["n_cpus"] // 4 + int(p["wbinvd_us"] // 500)

    pts = grid({"n_cpus": [8, 32, 128], "wbinvd_us": [100.0, 1000.0, 5000.0]},
               lambda p: {"clean": 4000 - races(p), "race": races(p)})
    d = write_results(tmp_path / "z", pts, sweep="z")
    est = point_estimates(connect(d), "p_race")
    for r in est.to_pylist():
        n, k = r["trials"], r["k"]
        hi = float(cp(k, n)[1])
        if k == 0:
            assert r["zero"] and r["y"] == pytest.approx(math.log10(hi), rel=1e-12) and r["y_var"] == 0.0
        else:
            p = k / n
            assert not r["zero"] and r["y"] == pytest.approx(math.log10(p), rel=1e-12)
            assert r["var"] == pytest.approx(p * (1 - p) / n, rel=1e-12)
            assert r["y_var"] == pytest.approx((1 - p) / (n * p) / math.log(10) ** 2, rel=1e-9)
            lo975, hi975 = (float(x) for x in cp(k, n, 0.975))
            assert (r["lo975"], r["hi975"]) == (pytest.approx(lo975, rel=1e-12), pytest.approx(hi975, rel=1e-12))
    res = stoprace("importance", d, "--format", "json")
    assert res.rc == 0, res.err
    body = json.loads(res.out)
    assert {r["zero_points"] for r in body["rows"]} == {1}
    assert "1 of 9 points have p_race = 0 and enter at their 95% upper bound" in body["verdicts"][0]


def test_point_estimates_of_a_cmc_set_are_the_stored_ones(exact_set):
    """cmc points: p and var are the stored cmc estimate and variance (one shard), y = log10 p."""
    est = point_estimates(connect(exact_set), "p_race", where="mitigation = 'none' AND n_cpus = 64")
    y = to_y(ishigami(*MESH, a=7.0))[3]
    rows = est.to_pylist()
    assert len(rows) == 30 and {r["estimator"] for r in rows} == {"cmc"}
    for r in rows:
        j, k = AXES["wbinvd_us"].index(r["wbinvd_us"]), AXES["ipi_jitter_us"].index(r["ipi_jitter_us"])
        assert r["y"] == pytest.approx(y[j, k], abs=1e-12) and r["p"] == pytest.approx(10 ** y[j, k], rel=1e-13)
        assert r["var"] == 0.0 and r["y_var"] == 0.0 and r["p_lo"] <= r["p"] <= r["p_hi"]


# ---------------------------------------------------------------------------- refusals: one line, exit 2


def test_refusals_are_one_line(exact_set, tmp_path, stoprace):
    holed = write_y_grid(tmp_path / "holed", AXES, to_y(ishigami(*MESH)), skip=[(2, 3, 1)])
    msg = stoprace("importance", holed).one_line_error("importance")
    assert "full factorial grid" in msg and "209 points for the 210 cells" in msg and "1 missing" in msg
    msg = stoprace("importance", exact_set, "--where", "n_cpus * wbinvd_us < 10000").one_line_error("importance")
    assert "full factorial grid" in msg
    assert "did you mean 'p_race'" in stoprace("importance", exact_set, "--metric", "p_rac").one_line_error("importance")
    assert "'n_cpu' is not a parameter" in stoprace("importance", exact_set, "--by", "n_cpu").one_line_error("importance")
    assert "bad --where" in stoprace("importance", exact_set, "--where", "nope = 1").one_line_error("importance")
    assert "no points where" in stoprace("importance", exact_set, "--where", "n_cpus = 3").one_line_error("importance")
    msg = stoprace("importance", exact_set, "--by", *NAMES).one_line_error("importance")
    assert "no axis is swept besides the scenario axes" in msg
    msg = stoprace("importance", tmp_path / "missing").one_line_error("importance")
    assert "missing" in msg
