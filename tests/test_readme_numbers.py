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
