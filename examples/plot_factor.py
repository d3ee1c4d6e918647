"""The README's answer as a figure: p_race(none) / p_race(early_flush) against p_nmi_delay.

Reads the `mitigation_effect` named query of a result set of examples/rev2-answer.toml and draws,
per model revision and NMI hold-off median, one line per n_cpus: the factor on a log axis with
its 95% interval as error bars (p_nmi_delay = 0 is drawn at the left edge, marked "0").

    python examples/plot_factor.py results/answer -o docs/answer-factor.png
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from queries.db import connect  # noqa: E402
from queries.named import run_named  # noqa: E402


def factors(result_dir: str) -> list[dict]:
    """mitigation_effect rows with the pair's n_cpus, p_nmi_delay and hold-off median (read from
    `differs`, which names the parameters not at their defaults)."""
    out = []
    for r in run_named(connect(result_dir), "mitigation_effect").to_pylist():
        kv = dict(part.split("=", 1) for part in r["differs"].split())
        out.append({**r, "n_cpus": int(float(kv.get("n_cpus", 64))), "p_nmi_delay": float(kv.get("p_nmi_delay", 0.0)),
                    "median": float(kv.get("nmi_delay_median_us", 200.0))})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="result set of examples/rev2-answer.toml")
    ap.add_argument("-o", "--output", required=True, help="PNG file")
    args = ap.parse_args()
    rows = factors(args.dir)
    revs = sorted({r["model_rev"] for r in rows}, reverse=True)
    meds = sorted({r["median"] for r in rows})
    fig = Figure(figsize=(6.0 * len(meds), 4.5 * len(revs)))
    FigureCanvasAgg(fig)
    pds = sorted({r["p_nmi_delay"] for r in rows if r["p_nmi_delay"] > 0})
    zero_x = pds[0] / 10 if pds else 1e-8
    for i, rev in enumerate(revs):
        for j, med in enumerate(meds):
            ax = fig.add_subplot(len(revs), len(meds), i * len(meds) + j + 1)
            for n in sorted({r["n_cpus"] for r in rows}):
                line = sorted((r for r in rows if (r["model_rev"], r["median"], r["n_cpus"]) == (rev, med, n)
                               and r["race_factor"] is not None), key=lambda r: r["p_nmi_delay"])
                xs = [r["p_nmi_delay"] or zero_x for r in line]
                ys = [r["race_factor"] for r in line]
                lo = [y - r["race_factor_lo"] for y, r in zip(ys, line)]
                hi = [r["race_factor_hi"] - y if math.isfinite(r["race_factor_hi"]) else 0 for y, r in zip(ys, line)]
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=f"{n} CPUs")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks([zero_x, *pds], ["0", *[f"{p:g}" for p in pds]])
            ax.set_xlabel("p_nmi_delay (per-CPU NMI hold-off probability)")
            ax.set_ylabel("p_race(none) / p_race(early_flush)")
            ax.set_title(f"model_rev {rev}, hold-off median {med:g} µs")
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
