"""The importance and compare endpoints of `stoprace serve` against the CLI (issue 21 items 1, 2; both doors).

Each answer is compared with `stoprace importance|compare ... --format json` run in-process
on the same files, so a difference in a number or a column name fails; bad input is a 4xx
with the CLI's one-line message.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sweeps.cli import main
from sweeps.serve import ServeConfig, create_app, shutdown

from grid_helpers import ishigami, write_y_grid
from synthetic_results import grid, write_results

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis") / "results"
    root.mkdir()
    x = np.linspace(-np.pi, np.pi, 4)
    y = -6.0 + ishigami(*np.meshgrid(x, x[:3], x[:2], indexing="ij")) / 4.0
    axes = {"n_cpus": [8, 16, 32, 64], "wbinvd_us": [100.0, 1000.0, 10000.0], "ipi_jitter_us": [0.0, 50.0]}
    write_y_grid(root / "grid", axes, y, np.full(y.shape, 1e-3))
    for name, f in (("before", 1), ("after", 4)):
        pts = grid({"n_cpus": [8, 64, 512], "mitigation": ["none", "early_flush"]},
                   lambda p, f=f: {"clean": 10_000, "race": (p["n_cpus"] // 8) * (f if p["n_cpus"] == 512 else 1)})
        write_results(root / name, pts, sweep=name, n_tasks=2)
    shutil.copytree(root / "grid", root / "holed")
    (root / "holed" / "points" / "task-000000.parquet").unlink()  # a damaged set: its grid has holes
    shutil.copytree(root / "after", root / "after_holed")  # one of its 2 tasks lost: compare matches the rest
    (root / "after_holed" / "points" / "task-000001.parquet").unlink()
    return root


@pytest.fixture(scope="module")
def client(root):
    app = create_app(ServeConfig(locations=[str(root)], workers=1, query_timeout_s=10.0))
    yield TestClient(app, base_url="http://127.0.0.1")
    shutdown(app)


def _cli(capsys, *argv) -> dict:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def _err(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in r.text
    return body["error"]


def test_importance_endpoint_is_the_cli_answer(client, root, capsys):
    for metric, by, where in (("p_race", None, None), ("p_bad", "ipi_jitter_us", "n_cpus > 8")):
        params = {"metric": metric, **({"by": by} if by else {}), **({"where": where} if where else {})}
        r = client.get("/api/sweeps/grid/importance", params=params)
        assert r.status_code == 200, r.text
        argv = ["importance", root / "grid", "--format", "json", "--metric", metric, *(["--by", by] if by else []),
                *(["--where", where] if where else [])]
        assert r.json() == _cli(capsys, *argv)
    rows = client.get("/api/sweeps/grid/importance").json()["rows"]
    assert {r["axis"] for r in rows} == {"n_cpus", "wbinvd_us", "ipi_jitter_us"}
    assert all(0 < r["noise_share"] < 1 for r in rows)  # y_var 1e-3 per point: some, not all, is noise


def test_compare_endpoint_is_the_cli_answer(client, root, capsys):
    api = client.get("/api/compare", params={"a": "before", "b": "after"})
    assert api.status_code == 200, api.text
    got, cli = api.json(), _cli(capsys, "compare", root / "before", root / "after", "--format", "json")
    assert (got["a"], got["b"]) == ("before", "after")  # the API names sweeps; the CLI, dirs
    for k in ("metric", "on", "by_construction", "held", "matched", "unmatched_a", "unmatched_b", "changed", "rows"):
        assert got[k] == cli[k], k
    assert got["changed"] == 2 and {r["n_cpus"] for r in got["rows"] if r["changed"]} == {512}
    same = client.get("/api/compare", params={"a": "before", "b": "before"}).json()
    assert same["changed"] == 0 and all(r["ratio"] in (1.0, None) for r in same["rows"])


def test_a_partial_compare_is_marked_alike_at_both_doors(client, root, capsys):
    """An incomplete side is refused by both doors with one line naming their flag; answered on request,
    the JSON carries the same `partial` lines (queries.answers.marked) and the CLI warns on stderr."""
    from sweeps.cli import main

    assert main(["compare", str(root / "before"), str(root / "after_holed")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--partial" in err
    assert "partial=true" in _err(client.get("/api/compare", params={"a": "before", "b": "after_holed"}), 400)
    api = client.get("/api/compare", params={"a": "before", "b": "after_holed", "partial": "true"})
    assert api.status_code == 200, api.text
    rc = main(["compare", str(root / "before"), str(root / "after_holed"), "--format", "json", "--partial"])
    out, err = capsys.readouterr()
    cli = json.loads(out)
    assert rc == 0 and api.json()["partial"] == cli["partial"] and len(cli["partial"]) == 1
    assert cli["partial"][0].startswith("PARTIAL") and cli["partial"][0] in err
    assert cli["matched"] == api.json()["matched"] == 3 and cli["unmatched_a"] == 3  # the lost task's points
    # the table says it too, first
    assert main(["compare", str(root / "before"), str(root / "after_holed"), "--partial"]) == 0
    assert capsys.readouterr().out.startswith(cli["partial"][0])


def test_bad_input_is_a_one_line_4xx(client):
    assert "did you mean 'p_race'" in _err(client.get("/api/sweeps/grid/importance", params={"metric": "p_rac"}), 400)
    # an incomplete set is refused as `stoprace importance` refuses it; with partial=true, the hole in the grid
    assert "partial=true" in _err(client.get("/api/sweeps/holed/importance"), 400)
    assert "full factorial grid" in _err(client.get("/api/sweeps/holed/importance", params={"partial": "true"}), 400)
    assert "bad --where" in _err(client.get("/api/sweeps/grid/importance", params={"where": "nope = 1"}), 400)
    assert "is not a parameter" in _err(client.get("/api/compare", params={"a": "before", "b": "after",
                                                                           "on": "n_cpu"}), 400)
    assert "no point of" in _err(client.get("/api/compare", params={"a": "before", "b": "grid"}), 400)
    _err(client.get("/api/compare", params={"a": "before", "b": "nope"}), 404)
    _err(client.get("/api/sweeps/nope/importance"), 404)
    assert "b" in _err(client.get("/api/compare", params={"a": "before"}), 400)
