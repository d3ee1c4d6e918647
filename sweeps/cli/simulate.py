"""`stoprace simulate`: one point in this process, no store, results on stdout."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from sweeps.cli.args import count_arg
from sweeps.errors import UsageError

if TYPE_CHECKING:
    from core.params import Params

COMMANDS = {"simulate": "simulate one parameter point here (no Ray, no store)"}


def add_param_options(parser: argparse.ArgumentParser) -> None:
    """One --option per model parameter, with its default and domain in --help."""
    from core.params import PARAM_SPECS

    g = parser.add_argument_group("model parameters (MODEL.md; times in µs)")
    for s in PARAM_SPECS:
        g.add_argument(
            "--" + s.name.replace("_", "-"),
            dest=s.name,
            type=s.py_type,
            default=None,
            metavar="X",
            help=f"{s.help} [default {s.default}; {s.domain()}]",
        )


def params_from_args(args: argparse.Namespace) -> Params:
    """The point given on the command line (unset options take the model defaults)."""
    from core.errors import ParamError
    from core.params import PARAM_NAMES, domain, make_params

    given = {n: getattr(args, n) for n in PARAM_NAMES if getattr(args, n, None) is not None}
    try:
        return make_params(given)
    except ParamError as e:
        if e.name not in given:  # not one option's fault (a rule across parameters)
            raise
        raise UsageError(f"--{e.name.replace('_', '-')} {given[e.name]} is not allowed: {domain(e.name)}") from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommand(s) to the `stoprace` parser."""
    from core.estimators import DEFAULT_ESTIMATOR, ESTIMATORS
    from sweeps.guards import MAX_CPU_TRIALS, approx
    from sweeps.spec import MAX_TRIALS

    p = sub.add_parser(
        "simulate",
        help=COMMANDS["simulate"],
        description=(
            "Simulate one point of the stop-race model and print outcome counts, probabilities "
            "with exact 95% (Clopper-Pearson) intervals, stop-time mean/p50/p99, the early flush's time "
            "(mitigation early_flush) and throughput. --model-rev 1 runs the first release's model (MODEL.md). "
            "Example: stoprace simulate --n-cpus 256 --p-stall 0.01 --trials 1e6"
        ),
    )
    p.add_argument("--trials", type=count_arg, default=100_000,
                   help=f"trials to run (default 1e5; 1e6 style accepted; at most {approx(MAX_TRIALS)}, as in a spec)")
    p.add_argument("--force", action="store_true",
                   help=f"allow more than {approx(MAX_CPU_TRIALS)} CPU-trials (n_cpus x trials: hours to days here)")
    p.add_argument("--seed", type=int, default=0, help="seed; same seed and parameters give identical results")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--estimator",
        choices=tuple(ESTIMATORS),
        default=DEFAULT_ESTIMATOR,
        help=" ".join(f"{e.name}: {e.help}." for e in ESTIMATORS.values()).replace("%", "%%"),
    )
    add_param_options(p)
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Carry out the subcommand from parsed arguments; returns the exit code."""
    from core.cost import cpu_trials
    from core.estimators import DEFAULT_ESTIMATOR, ESTIMATORS
    from core.vectorized import shard_seed
    from sweeps.guards import approx, format_seconds, simulate_eta_s, size_problem
    from sweeps.spec import MAX_TRIALS
    from sweeps.tuning import tune_allocator

    tune_allocator()
    params = params_from_args(args)
    if args.seed < 0 or args.seed >= 2**64:
        raise UsageError(f"--seed = {args.seed} is not allowed: integer in [0, 2**64)")
    est = ESTIMATORS[getattr(args, "estimator", DEFAULT_ESTIMATOR)]
    if args.trials > MAX_TRIALS:
        raise UsageError(f"--trials {approx(args.trials)} is above {approx(MAX_TRIALS)}, the bound a spec's trials has too")
    work = cpu_trials(params.n_cpus, args.trials)
    why = None if getattr(args, "force", False) else size_problem(work)
    if why:
        raise UsageError(f"{why}; lower --trials, or pass --force")
    eta = simulate_eta_s(work, est.name)
    if eta > 10:  # say so before a long silence
        print(f"stoprace simulate: {approx(work)} CPU-trials in this process, ETA {format_seconds(eta, about=True)}",
              file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    acc = est.run_shard(params, args.trials, shard_seed(args.seed, 0))
    wall = time.perf_counter() - t0
    rep = acc.counts.report()
    rep["estimator"] = acc.estimator  # late->naive where the late sampler does not apply
    extra = acc.report(params)
    if extra is not None:
        rep[est.name] = extra
    rep["params"] = params.model_dump()
    rep["seed"] = args.seed
    rep["wall_s"] = wall
    rep["cpu_trials_per_s"] = cpu_trials(params.n_cpus, args.trials) / wall if wall > 0 else None
    if args.json:
        json.dump(rep, sys.stdout, indent=None, default=float)
        print()
    else:
        print(format_report(params, rep))
    return 0


def _fmt_us(x: float) -> str:
    """A stop time; NaN (no finite stop) as '-', +inf (a quantile in the histogram's open top bin) as '>= 8.66e7'."""
    from core.histogram import TOP_EDGE_US

    if x != x:
        return "-"
    if x == float("inf"):
        mant, exp = f"{TOP_EDGE_US:.3g}".split("e")
        return f">= {mant}e{int(exp)}"
    return f"{x:,.1f}"


def _fmt_p(x: float) -> str:
    return "0" if x == 0 else f"{x:.3g}"


def format_report(params: Params, rep: dict) -> str:
    """A terminal table of one point's results."""
    from core.params import DEFAULTS

    non_default = {k: v for k, v in params.model_dump().items() if v != DEFAULTS[k]}
    lines = [
        f"point: {', '.join(f'{k}={v}' for k, v in non_default.items()) or 'all defaults'}"
        + ("" if "model_rev" in non_default else f"   (model_rev {params.model_rev})"),
        f"trials: {rep['trials']:,}   NMI phase: {rep['nmi_phase']:,}   seed: {rep['seed']}",
        "",
        f"{'outcome':<10} {'count':>12} {'p':>10} {'95% lo':>10} {'95% hi':>10}",
    ]
    for name, v in rep["p"].items():
        lines.append(f"{name:<10} {v['k']:>12,} {_fmt_p(v['p']):>10} {_fmt_p(v['lo']):>10} {_fmt_p(v['hi']):>10}")
    t = rep["t_done_us"]
    lines.append("")
    lines.append("stop time (µs): " + "  ".join(f"{k} {_fmt_us(t[k])}" for k in ("mean", "p50", "p99", "p999", "max")))
    pf = rep["preflush_us"]
    if pf["trials"]:  # the fix's cost per kexec: the early flush's time, over the trials that ran it
        lines.append("preflush (µs): " + "  ".join(f"{k} {_fmt_us(pf[k])}" for k in ("mean", "p50", "p99", "max"))
                     + (f"   ({rep['trials'] - pf['trials']:,} hung in the flush)" if pf["trials"] < rep["trials"] else ""))
    k = rep["p"]["race"]["k"]
    if k == 0:
        lines.append(f"no race seen: p_race < {_fmt_p(rep['p']['race']['hi'])} (95% upper bound)")
    if "cmc" in rep:
        c = rep["cmc"]
        lines.append("")
        for name in ("race", "bad"):
            v = c[name]
            how = v.get("method", "cmc").replace("cmc+counted", "cmc race + counted hang/timeout")
            lines.append(f"p_{name} ({how}) = {v['p']:.4g} [{v['lo']:.4g}, {v['hi']:.4g}]  (95%, {c['trials']:,} trials)")
    rate = rep["cpu_trials_per_s"]
    lines.append(f"wall {rep['wall_s']:.2f} s, {rate / 1e6:,.1f} M CPU-trials/s" if rate else f"wall {rep['wall_s']:.2f} s")
    return "\n".join(lines)
