"""README numbers are what the commands print (issue 15, item 9): re-run the README's examples
that a test can afford and compare with its text."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from sweep_helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_cmc_example_estimate_and_interval():
    """README: 'on n_cpus=512, p_stall=1.34e-4 it estimates P ± H% (95% interval [LO, HI])'."""
    m = re.search(r"it estimates ([0-9.e-]+) ± ([0-9.]+)% \(95% interval \[([0-9.e-]+), ([0-9.e-]+)\]\)",
                  _flat(README))
    assert m, "the README's cmc example sentence changed: update this test with it"
    p, half, lo, hi = float(m[1]), float(m[2]), float(m[3]), float(m[4])
    r = subprocess.run([sys.executable, "-m", "sweeps.cli", "simulate", "--n-cpus", "512", "--p-stall", "1.34e-4",
                        "--trials", "2e4", "--estimator", "cmc", "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    race = json.loads(r.stdout)["cmc"]["race"]
    # the README rounds to the digits it shows: 4 significant for p and the bounds (so within half a
    # unit of the 4th digit, <= 0.05% relative), 2 decimals for the half-width in percent
    assert abs(race["p"] - p) <= 0.5e-3 * p
    assert f"{(race['hi'] - race['lo']) / 2 / race['p'] * 100:.2f}" == m[2]
    assert abs(race["lo"] - lo) <= 0.5e-3 * lo and abs(race["hi"] - hi) <= 0.5e-3 * hi
    assert race["lo"] <= race["p"] <= race["hi"]
    assert half > 0


def test_start_line_example_is_what_run_prints_on_two_cpus():
    """README step 1 quotes `stoprace run`'s start line for the small example on 2 CPUs."""
    from sweeps.grid import iter_tasks, total_cpu_trials
    from sweeps.guards import RunPlan
    from sweeps.spec import load_spec

    spec = load_spec(ROOT / "examples" / "tdx-kexec-small.toml")
    total = total_cpu_trials(spec)
    plan = RunPlan(spec.name, spec.n_points, total, total, sum(1 for _ in iter_tasks(spec)), True, 0, 2,
                   "embedded Ray; token auth: only holders of ~/.ray/auth_token or $RAY_AUTH_TOKEN may join",
                   spec.estimator)
    block = re.search(r"#      (stoprace run: tdx-kexec-small:.*?)\n#    \(", README, re.S)
    assert block, "the README's start-line example moved: update this test with it"
    quoted = " ".join(line.lstrip("# ").strip() for line in block[1].splitlines())
    assert quoted == f"stoprace run: {plan.line()}"


def _g3(x: float) -> str:
    """A number as the README's factor tables print it: 3 significant digits, exponent without '+'."""
    return f"{x:.3g}".replace("e+", "e")


def test_answer_tables_are_what_the_run_prints(tmp_path):
    """README "The answer" (issue 24 item 7: its factor range was not what the run printed): the 64-CPU
    cells at p_nmi_delay = 1e-3 of both hold-off tables, revision 2's factor with its interval and
    revision 1's factor, from a run of examples/rev2-answer.toml cut to those points. Point ids and
    seeds depend only on the spec's seed and each point's parameters (SCHEMA.md), so the cut run stores
    exactly the full run's rows for them; the README rounds to 3 significant digits."""
    section = README.split("**The factor p_race(none) / p_race(early_flush)**", 1)[1].split("![the factor", 1)[0]
    rows = re.findall(r"^\| 1e-3 \| (.*) \|$", section, re.M)
    assert len(rows) == 2, "the README's factor tables changed: update this test with them"
    quoted = {}
    for median, row in zip((200.0, 1000.0), rows):
        cells = [c.strip() for c in row.split(" | ")]
        quoted[median] = {2: cells[0], 1: cells[1]}  # 64 CPUs: rev 2 (with interval), rev 1
    spec = (ROOT / "examples" / "rev2-answer.toml").read_text()
    for line, cut in (("n_cpus = [64, 512, 1024]", "n_cpus = [64]"),
                      ("p_nmi_delay = [0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3]", "p_nmi_delay = [1e-3]"),
                      ("nmi_delay_median_us = [200.0, 1000.0]", "nmi_delay_median_us = [200.0, 1000.0]")):
        assert line in spec, f"examples/rev2-answer.toml no longer has {line!r}: update this test"
        spec = spec.replace(line, cut)
    (tmp_path / "cut.toml").write_text(spec)
    out = tmp_path / "answer"
    for argv in (["run", str(tmp_path / "cut.toml"), "--out", str(out), "--no-progress"],
                 ["query", str(out), "--named", "mitigation_effect", "--format", "json"]):
        r = subprocess.run([sys.executable, "-m", "sweeps.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                           timeout=600, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr[-2000:]
    printed = {}
    for x in json.loads(r.stdout):
        median = 1000.0 if "nmi_delay_median_us=1000" in x["differs"] else 200.0
        f = x["race_factor"]
        printed[median, x["model_rev"]] = (f"{_g3(f)} [{_g3(x['race_factor_lo'])}, {_g3(x['race_factor_hi'])}]"
                                           if x["model_rev"] == 2 else _g3(f))
    assert printed == {(m, rev): quoted[m][rev] for m in quoted for rev in (1, 2)}
