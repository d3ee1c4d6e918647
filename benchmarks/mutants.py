"""Mutation check of the test suite: do the tests catch small, deliberate bugs?

Each mutant replaces one exact snippet of one source file. For each selected mutant a
fresh temporary copy of the repository's files (tracked plus untracked-but-not-ignored,
so uncommitted work counts) is made, the snippet is replaced there, the mutant's own
test files / node ids are run with `pytest -x` on that copy (PYTHONPATH = the copy), and
the copy is deleted. A mutant is *killed* when pytest fails (or times out), *survives*
when the tests pass. Before any mutant, the union of the selected tests is run once on an
unmutated copy (the baseline): a red baseline would "kill" everything, so it aborts.

    python benchmarks/mutants.py                  # all mutants (~15-25 min on 2 shared cores)
    python benchmarks/mutants.py --only capacity  # mutants whose name, file or class matches
    python benchmarks/mutants.py --check          # only check that every snippet is still there
    python benchmarks/mutants.py --list
    python benchmarks/mutants.py --only str-search --tests tests/test_search.py  # other tests than the list's

A snippet that is not found exactly once in its file is *stale* (the code moved on): it
is reported by name with its file and the exit status is 2, so a stale list is noticed
rather than silently skipped; the other mutants still run. Not part of CI (too slow);
run it before resolving an issue that touches tests, and update the snippets it flags.
Exit status: 0 done, 1 baseline red or kill rate under --fail-under, 2 stale snippet(s).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug: `old` (must occur exactly once in `file`) becomes `new`."""

    name: str
    cls: str  # the class of bug (issue 14 names some), for --only and the report
    file: str
    old: str
    new: str
    tests: tuple[str, ...]  # test files or node ids (relative to the repo root) that should kill it
    what: str  # one line


def M(name: str, cls: str, file: str, old: str, new: str, tests: str | tuple[str, ...], what: str) -> Mutant:
    return Mutant(name, cls, file, old, new, (tests,) if isinstance(tests, str) else tuple(tests), what)


CORE_T = ("tests/test_core_forced.py", "tests/test_core_ties.py", "tests/test_core_agreement.py")
TIES = "tests/test_core_ties.py"
ROWS = "tests/test_shard_rows.py"
CMC_T = "tests/test_cmc.py"
REV2_T = "tests/test_rev2.py"
QE = "tests/test_queries_estimates.py::"
SPEC_T = ("tests/test_spec.py", "tests/test_params_consumers.py")
CAPACITY_T = ("tests/test_queries.py", *(QE + t for t in (
    "test_capacity_against_an_independent_worst_case", "test_capacity_splits_scenario_axes_or_takes_them_fixed",
    "test_capacity_reports_disagreement_with_the_cmc_numbers")))
QUANTILE_T = ("tests/test_stats.py", "tests/test_queries.py", QE + "test_python_quantile_against_numpy_on_known_histograms",
              QE + "test_sql_quantiles_against_numpy_on_known_histograms")
SEARCH_T = "tests/test_strength_search.py"
SANDBOX_T = "tests/test_strength_sandbox.py"
EST_T = "tests/test_strength_estimates.py"
SERVE_T = "tests/test_strength_serve_security.py"
CAP_T = "tests/test_strength_capacity.py"
RS_T = "tests/test_strength_resultset.py"
PRECISION_T = tuple(f"tests/test_precision.py::{t}" for t in (
    "test_decide_hand_cases", "test_half_width_exactly_at_the_bound_is_precise", "test_naive_zero_events_hand_computed",
    "test_target_only_and_rel_only_rules", "test_naive_tally_matches_independent_recomputation",
    "test_cmc_tally_pools_like_one_pass_over_all_trials", "test_sql_precision_status_equals_decide",
    "test_cmc_zero_variance_interval_is_bounded_by_the_metrics_largest_value"))

# Equivalent mutants (no behaviour changes, so no test can kill them) are left out, e.g.
# `cand = c >= t_nmi` in _send_clock (the sequential walk corrects the candidate set) or
# dropping `is_racer &= ~hang[ri]` (a hang's NaN T_done already makes every race test false).
MUTANTS: list[Mutant] = [
    # ---------------------------------------------------------------- core: equality rules (issue 14)
    M("racer_at_equality", "tie", "core/vectorized.py",
      "is_racer = ~ded & (a >= cc)", "is_racer = ~ded & (a > cc)", TIES,
      "an NMI arriving exactly at the clear is no longer a racer (vectorized)"),
    M("walk_reported_at_equality", "tie", "core/vectorized.py",
      "sent = cand & (c > s)", "sent = cand & (c >= s)", TIES,
      "a CPU clearing exactly at its all-sent visit time gets an NMI (vectorized fast path)"),
    M("walk_sequential_at_equality", "tie", "core/vectorized.py",
      "hit = ca[:, j] > clock", "hit = ca[:, j] >= clock", TIES,
      "a CPU clearing exactly at its visit time gets an NMI (vectorized sequential walk)"),
    M("during_wbinvd_at_equality", "tie", "core/vectorized.py",
      "np.where(a < c, c + h, c)", "np.where(a <= c, c + h, c)", TIES,
      "an NMI arriving exactly at the clear re-runs stop_this_cpu() (vectorized f_i)"),
    M("ref_racer_at_equality", "tie", "core/reference.py",
      "elif a < cpu.clear:", "elif a <= cpu.clear:", TIES,
      "the scalar reference treats an arrival at the clear as during-WBINVD"),
    M("ref_reported_at_equality", "tie", "core/reference.py",
      "if cpu.clear <= s:", "if cpu.clear < s:", TIES,
      "the scalar reference sends an NMI to a CPU clearing exactly at its visit"),
    M("clean_at_deadline", "tie", "core/vectorized.py",
      "clean = cmax <= p.t1_us", "clean = cmax < p.t1_us", "tests/test_core_forced.py",
      "a stop exactly at T1 goes to the NMI phase"),
    # ---------------------------------------------------------------- core: the model
    M("no_wbinvd_in_clear", "core", "core/vectorized.py",
      "np.add(c, d.w, out=c, where=dirty)", "np.add(c, 0.0, out=c, where=dirty)", CORE_T,
      "dirty CPUs clear without their WBINVD when only some are dirty"),
    M("prologue_dropped", "core", "core/vectorized.py",
      "c = e + p.prologue_us", "c = e + 0.0", CORE_T,
      "the stop_this_cpu() prologue is left out of c_i"),
    M("clock_step_twice", "core", "core/vectorized.py",
      "incr = np.where(cand, step, 0.0)", "incr = np.where(cand, 2 * step, 0.0)", CORE_T,
      "each NMI send advances the clock twice"),
    M("t_loop_ignores_last_send", "core", "core/vectorized.py",
      "t_loop = s[:, -1] + np.where(sent[:, -1], p.nmi_send_us, 0.0)", "t_loop = s[:, -1]", CORE_T,
      "T_loop misses the send to the last CPU"),
    M("handoff_ignored", "core", "core/vectorized.py",
      "races = end > t_done[rr] + (H if isinstance(H, float) else H[rr])", "races = end > t_done[rr]", CORE_T,
      "a racer races whenever its handler outlasts T_done"),
    # model revision 2 (issue 19): each of its three items, removed
    M("rev2_cpu0_flush_ignored", "rev2", "core/vectorized.py",
      "return np.where(r.dirty0, p.handoff_us + r.w0, p.handoff_us)", "return float(p.handoff_us)", REV2_T,
      "the hand-over leaves out CPU 0's own WBINVD"),
    M("rev2_panic_keeps_early_flush", "rev2", "core/params.py",
      'return self.mitigation == "early_flush" and (self.model_rev == 1 or self.wait == 1)',
      'return self.mitigation == "early_flush"', REV2_T, "the panic path still flushes early"),
    M("rev2_flush_ipi_free", "rev2", "core/vectorized.py",
      "done = np.maximum(r.ipi_pre, r.off_pre)", "done = np.zeros_like(r.ipi_pre)", REV2_T,
      "the early flush does not wait for each CPU to take its IPI"),
    M("rev2_draws_on_revision1", "rev2", "core/draws.py",
      "    if not (p.cpu0_flush or p.flush_ipi):\n        return Rev2Draws()", "    if False:\n        return Rev2Draws()",
      (REV2_T, "tests/test_model_rev.py"), "revision 1 (and the panic path) draw CPU 0's flag and flush"),
    M("rev2_dead_cpu_flushes", "rev2", "core/vectorized.py",
      "hung_early = d.dead.any(axis=1) if p.flush_ipi else None", "hung_early = None", REV2_T,
      "a dead CPU does not hang the early flush"),
    M("first_racer_max", "core", "core/vectorized.py",
      "np.minimum.at(first, rr[races], rc[races] + 1)", "np.maximum.at(first, rr[races], rc[races] + 1)", CORE_T,
      "first_racer_cpu is the highest racing CPU"),
    M("timeout_beats_race", "core", "core/vectorized.py",
      "[hang, race, timeout], [HANG, RACE, TIMEOUT]", "[hang, timeout, race], [HANG, TIMEOUT, RACE]", CORE_T,
      "a timeout outranks a race"),
    M("deadline_unscaled", "core", "core/vectorized.py",
      "deadline = t_loop + p.nmi_wait_scaled_us", "deadline = t_loop + p.nmi_wait_us", CORE_T,
      "wait=0 deadline ignores udelay_factor"),
    M("before_entry_no_w", "core", "core/vectorized.py",
      "np.where(dirty, a + p.prologue_us + w, a + p.prologue_us)", "a + p.prologue_us", CORE_T,
      "an NMI before entry skips the CPU's own WBINVD"),
    M("early_flush_keeps_dirty", "core", "core/vectorized.py",
      "dirty = np.zeros_like(d.dirty) if early else d.dirty", "dirty = d.dirty", CORE_T,
      "early_flush no longer removes WBINVD from the stop"),
    M("hang_never", "core", "core/vectorized.py",
      "hang = np.isinf(F)", "hang = np.isinf(F) & False", CORE_T,
      "wait=1 with a dead CPU never hangs (T_done becomes inf)"),
    M("stall_law_sigma", "core", "core/draws.py",
      "x *= sigma", "x *= 2 * sigma", "tests/test_core_agreement.py",
      "the log-normal laws use twice their sigma (vectorized draws only)"),
    M("rare_flags_double", "core", "core/draws.py",
      "k = int(rng.binomial(size, p))", "k = int(rng.binomial(size, min(1.0, 2 * p)))",
      "tests/test_core_agreement.py",
      "rare Bernoulli flags (p < 0.05) fire twice as often"),
    M("nmi_jitter_dropped", "core", "core/draws.py",
      "nmi = exponential(rng, p.nmi_jitter_us, count)", "nmi = exponential(rng, 0.5 * p.nmi_jitter_us, count)",
      "tests/test_core_agreement.py", "NMI latency jitter halved (lazy NMI-path draws)"),
    M("chunk_offset_replay", "core", "core/vectorized.py",
      "c, i = divmod(trial, per)", "c, i = 0, trial % per", ("tests/test_shard_rows.py", "tests/test_cmc.py::test_determinism_and_replay"),
      "replay recomputes chunk 0 whatever the trial"),
    # ---------------------------------------------------------------- cmc
    M("cmc_var_n", "cmc", "core/estimators/cmc/stats.py",
      "return self.m2 / (self.n - 1) / self.n", "return self.m2 / self.n / self.n", CMC_T,
      "cmc variance of the mean with /n instead of /(n-1)"),
    M("cmc_combine_var", "cmc", "core/estimators/cmc/stats.py",
      "return big_n, mean, ss / (big_n - 1) / big_n", "return big_n, mean, ss / big_n / big_n", CMC_T,
      "combine() pools variances with /N"),
    # ---------------------------------------------------------------- sweeps: rows
    M("event_trial_no_offset", "rows", "sweeps/shard.py",
      'ev["trial"] += (idx + start).tolist()', 'ev["trial"] += idx.tolist()', ROWS,
      "events rows lose the chunk's first-trial offset"),
    M("naive_race_timeout_swapped", "rows", "core/estimators/base.py",
      'race, bad = naive_estimate(self.counts.count("race"), n), naive_estimate(self.counts.bad, n)',
      'race, bad = naive_estimate(self.counts.count("timeout"), n), naive_estimate(self.counts.bad, n)', ROWS,
      "the naive points row estimates p_race from the timeout count"),
    M("naive_var_n", "rows", "core/estimators/base.py",
      "return p, (p * (1 - p) / (n - 1) if n > 1 else 0.0)", "return p, (p * (1 - p) / n if n > 1 else 0.0)", ROWS,
      "naive variance of the mean with /n instead of /(n-1)"),
    M("counts_race_as_timeout", "rows", "sweeps/shard.py",
      "**{o: summary.count(o) for o in OUTCOMES},", '**{o: summary.count("timeout" if o == "race" else o) for o in OUTCOMES},',
      ROWS, "the points row's race column holds the timeout count"),
    M("shard_seed_swapped", "rows", "core/vectorized.py",
      "return np.random.SeedSequence([int(point_seed), int(shard)])",
      "return np.random.SeedSequence([int(shard), int(point_seed)])",
      ROWS, "shard seeds are built in the wrong order (MODEL.md: [point_seed, k])"),
    M("t_done_max_min", "rows", "core/summary.py",
      "self.t_done_max_us = float(np.fmax(self.t_done_max_us, t.max()))",
      "self.t_done_max_us = float(np.fmax(self.t_done_max_us, t.min()))", ROWS,
      "the stop-time max keeps chunk minima"),
    M("hist_bins_per_decade", "rows", "core/histogram.py",
      "b = np.floor(BINS_PER_DECADE * np.log10(t))", "b = np.floor(BINS_PER_DECADE * np.log10(t) + 0.5)",
      ("tests/test_stats.py", "tests/test_queries.py"),
      "histogram bins rounded instead of floored"),
    # ---------------------------------------------------------------- sweeps: grid, spec
    M("shard_size_last", "grid", "sweeps/grid.py",
      "return min(self.shard_trials, self.trials - k * self.shard_trials)", "return self.shard_trials",
      "tests/test_grid.py", "the last shard is as big as the others"),
    M("point_seed_ignores_sweep_seed", "grid", "sweeps/grid.py",
      'self.seed_prefix = f"{spec.seed}:".encode()', 'self.seed_prefix = b"0:"',
      "tests/test_grid.py", "point seeds no longer depend on the sweep's seed"),
    M("total_cpu_trials_others", "grid", "sweeps/grid.py",
      "return cpu_trials(cpu_sum, spec.trials) * others", "return cpu_trials(cpu_sum, spec.trials)",
      "tests/test_grid.py", "the planned CPU-trials ignore the other axes"),
    # ---------------------------------------------------------------- stats
    M("wilson_z2_centre", "stats", "core/stats.py",
      "centre = (p + z2 / (2 * n)) / denom", "centre = (p + z2 / n) / denom",
      ("tests/test_stats.py", "tests/test_queries.py"), "Wilson centre with z^2/n instead of z^2/2n"),
    M("quantile_no_interpolation", "quantile", "core/histogram.py",
      "value = float(10.0 ** ((b + frac) / BINS_PER_DECADE))", "value = float(10.0 ** (b / BINS_PER_DECADE))",
      QUANTILE_T, "Python quantile without interpolation inside the bin"),
    M("quantile_tie_right", "quantile", "core/histogram.py",
      'b = int(np.searchsorted(cum, target, side="left"))', 'b = int(np.searchsorted(cum, target, side="right"))',
      QUANTILE_T, "Python quantile takes the next bin at an exact cumulative tie"),
    # ---------------------------------------------------------------- queries
    M("sql_p50_tie", "quantile", "queries/sql/_outcomes.sql",
      "FILTER (WHERE c >= 0.5::DOUBLE * tot) AS x50", "FILTER (WHERE c > 0.5::DOUBLE * tot) AS x50",
      QUANTILE_T, "SQL p50 skips the bin whose cumulative count equals the target"),
    M("sql_bad_without_hang", "queries", "core/intervals.py",
      '"p_bad": ("race", "hang", "timeout"),', '"p_bad": ("race", "timeout"),',
      "tests/test_queries.py", "p_bad (every view's, through core.intervals) leaves hangs out"),
    M("sql_mean_over_all_trials", "queries", "queries/sql/_outcomes.sql",
      "CASE WHEN trials - hang > 0 THEN t_sum_us / (trials - hang) END AS t_mean_us",
      "CASE WHEN trials > 0 THEN t_sum_us / trials END AS t_mean_us",
      "tests/test_queries.py", "mean stop time divides by hangs too"),
    M("sql_wilson_half", "queries", "queries/sql/_macros.sql",
      "+ z * z / (4.0 * n::DOUBLE * n::DOUBLE)", "+ z * z / (2.0 * n::DOUBLE * n::DOUBLE)",
      "tests/test_queries.py", "the SQL Wilson half-width differs from core.stats.wilson"),
    M("pool_strata_var", "queries", "queries/estimates.py",
      "v = sum(n * n * var for n, _, var in ps) / big_n / big_n", "v = sum(n * var for n, _, var in ps) / big_n",
      ("tests/test_queries.py", QE + "test_pool_strata_is_the_weighted_mean_with_fixed_weight_variance"),
      "cmc estimates of several sweeps pooled with the wrong variance weights"),
    M("capacity_best_case", "capacity", "queries/sql/_capacity.sql",
      "max(p_hi) AS p_hi,", "min(p_hi) AS p_hi,",
      CAPACITY_T,
      "capacity takes the best case over the other axes instead of the worst"),
    M("capacity_p99_sum", "capacity", "queries/sql/_capacity.sql",
      "max(t_p99_us) AS t_p99_us,\n        max(t_p999_us) AS t_p999_us\n    FROM cells",
      "sum(t_p99_us) AS t_p99_us,\n        sum(t_p999_us) AS t_p999_us\n    FROM cells",
      CAPACITY_T,
      "capacity sums p99/p999 over the folded axes instead of taking the max"),
    M("capacity_counts_only", "capacity", "queries/sql/_capacity.sql",
      "cmc.n, cmc.p, cmc.var, n_cpus::BIGINT, @@conf@@) AS m,",
      "NULL, NULL, NULL, n_cpus::BIGINT, @@conf@@) AS m,",
      CAPACITY_T, "capacity drops the cmc race estimate and judges on the counts only"),
    M("capacity_lo_not_hi", "capacity", "queries/capacity.py",
      'return c["p_hi"] < target_p', 'return c["p_lo"] < target_p',
      CAPACITY_T, "capacity passes a cell on its lower bound"),
    # ---------------------------------------------------------------- adaptive precision (issue 12)
    M("precision_below_on_lo", "precision", "core/precision.py",
      "        if look.hi < rule.target:\n            return BELOW",
      "        if look.lo < rule.target:\n            return BELOW", PRECISION_T,
      "a point is declared below target when its lower bound is"),
    M("precision_width_strict", "precision", "core/precision.py",
      "(est.hi - est.lo) / 2.0 <= rule.rel_half_width * est.p", "(est.hi - est.lo) / 2.0 < rule.rel_half_width * est.p",
      PRECISION_T, "a half-width exactly at the bound is not precise"),
    M("precision_min_trials", "precision", "core/precision.py",
      "    if n < rule.min_trials:\n        return OPEN", "    if n <= rule.min_trials:\n        return OPEN",
      PRECISION_T, "a point with exactly min_trials trials stays open"),
    M("precision_cmc_ymax", "precision", "core/intervals.py",
      "y_max = float(max(obs.n_cpus - 1, 1))", "y_max = float(obs.n_cpus)",
      PRECISION_T, "the cmc interval of p_race is bounded by n_cpus instead of n_cpus - 1"),
    # ---------------------------------------------------------------- NMI hold-offs (params)
    M("holdoff_not_added", "holdoff", "core/draws.py",
      "    if p.p_nmi_delay > 0.0:\n        nmi += hold", "    if p.p_nmi_delay > 0.0:\n        nmi += 0.0 * hold",
      "tests/test_holdoffs.py", "hold-offs are drawn but never delay the NMI"),
    M("holdoff_median_ignored", "holdoff", "core/draws.py",
      "hold[held] = lognormal(rng, p.nmi_delay_median_us, p.nmi_delay_sigma, k)",
      "hold[held] = lognormal(rng, 2 * p.nmi_delay_median_us, p.nmi_delay_sigma, k)",
      "tests/test_holdoffs.py", "hold-offs twice as long as their law says"),
    # ---------------------------------------------------------------- spec validation (issue 9)
    M("spec_round_to_even", "spec", "sweeps/spec_input.py",
      "return math.floor(x + 0.5) if is_int else x + 0.0", "return round(x) if is_int else x + 0.0",
      SPEC_T, "integer axes round half to even instead of half up"),
    M("spec_points_bound_off_by_one", "spec", "sweeps/spec_input.py",
      "if math.prod(sizes.values()) > MAX_POINTS and not force:", "if math.prod(sizes.values()) >= MAX_POINTS and not force:",
      SPEC_T, "a spec of exactly MAX_POINTS points is refused"),
    M("spec_repeats_allowed", "spec", "sweeps/spec_input.py",
      "            if v in seen:", "            if v in seen and False:",
      SPEC_T, "a value repeated in a list axis is accepted (the point would run twice)"),
    M("spec_missing_before_unknown", "spec", "sweeps/spec_input.py",
      'errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")', "errors = err.errors()",
      SPEC_T, "a typo of a required key is reported as the key missing, not as the typo"),
    M("spec_linspace_last_not_exact", "spec", "sweeps/spec_input.py",
      "        out[-1] = b\n", "",
      SPEC_T, "the last linspace/logspace value is computed instead of exactly b"),
    M("spec_min_above_max", "spec", "sweeps/spec_input.py",
      "if self.min_trials is not None and self.min_trials > self.max_trials:",
      "if self.min_trials is not None and self.min_trials > self.max_trials + 1:",
      "tests/test_precision.py", "min_trials one above max_trials is accepted"),
    # ================================================================ test strength (issue 23 item 5)
    # Classes str-*: `--only 'str-*'` runs them all. Each is killed by a test that compares with a
    # hand-computed case or an independent computation (tests/test_strength_*.py unless named).
    # ---------------------------------------------------------------- boundary search (sweeps/search.py)
    # Equivalent, left out: dropping `a > z or` in _decided (a crossing bracket has negative width, which
    # `resolved` already accepts); midpoint's clamps to (a, b) (they bind only for b <= a + 1, which
    # `resolved` stops before); `n < first_fail` vs `<=` in report (a probe passes or fails, never both).
    M("search_resolved_strict", "str-search", "sweeps/search.py",
      "return (b - a) / 2 <= max(1.0,", "return (b - a) / 2 < max(1.0,", (SEARCH_T, "tests/test_search.py::test_resolution_and_midpoint"),
      "a bracket exactly at the resolution is bisected again"),
    M("search_resolution_min", "str-search", "sweeps/search.py",
      "<= max(1.0, REL_RESOLUTION * (a + b) / 2)", "<= min(1.0, REL_RESOLUTION * (a + b) / 2)",
      (SEARCH_T, "tests/test_search.py::test_resolution_and_midpoint"), "resolution +-1 CPU or +-5%, whichever is finer"),
    M("search_resolution_sum", "str-search", "sweeps/search.py",
      "REL_RESOLUTION * (a + b) / 2)", "REL_RESOLUTION * (a + b))",
      (SEARCH_T, "tests/test_search.py::test_resolution_and_midpoint"), "5% of a + b instead of the bracket's centre"),
    M("search_midpoint_arithmetic", "str-search", "sweeps/search.py",
      "m = math.floor(math.sqrt(a * b) + 0.5)", "m = (a + b) // 2",
      (SEARCH_T, "tests/test_search.py::test_resolution_and_midpoint"), "arithmetic instead of geometric midpoint"),
    M("search_width_off_by_one", "str-search", "sweeps/search.py",
      "self.width = self.hi - self.lo + 1", "self.width = self.hi - self.lo", SEARCH_T,
      "probe indices per combination one too narrow (combinations' probes collide)"),
    M("search_exhausted_passes", "str-search", "sweeps/search.py",
      "return sorted(n for n, (s, _) in self.probes.items() if s == BELOW)",
      'return sorted(n for n, (s, _) in self.probes.items() if s in (BELOW, "budget exhausted"))', SEARCH_T,
      "a budget-exhausted probe counts as passing in the bracket"),
    M("search_lower_end_stays", "str-search", "sweeps/search.py",
      "a, z = max(b.passing()), min(b.failing())", "a, z = min(b.passing()), min(b.failing())", SEARCH_T,
      "the bracket's passing end never moves up"),
    M("search_upper_pass_ignored", "str-search", "sweeps/search.py",
      "if self.lo not in b.passing() or self.hi in b.passing():", "if self.lo not in b.passing():", SEARCH_T,
      "a search passing at its upper limit keeps bisecting"),
    M("search_max_ignores_first_fail", "str-search", "sweeps/search.py",
      "ok = max((n for n in passing if first_fail is None or n < first_fail), default=None)",
      "ok = max(passing, default=None)", SEARCH_T,
      "the reported limit is the largest pass even above the first failure"),
    M("search_first_fail_max", "str-search", "sweeps/search.py",
      "first_fail = min(failing) if failing else None", "first_fail = max(failing) if failing else None", SEARCH_T,
      "the reported first failure is the largest failing probe"),
    M("search_hi_at_max_is_p", "str-search", "sweeps/search.py",
      "None if ok is None else b.probes[ok][1].hi", "None if ok is None else b.probes[ok][1].p", SEARCH_T,
      "the bound reported at the limit is its estimate, not its upper bound"),
    M("search_unresolved_counts_fails", "str-search", "sweeps/search.py",
      'sum(1 for _, (s, _) in probes if s == "budget exhausted")', "sum(1 for _, (s, _) in probes if s != BELOW)",
      SEARCH_T, "above-target probes counted as unresolved"),
    M("search_monotone_any", "str-search", "sweeps/search.py",
      "monotone = all(", "monotone = any(", SEARCH_T, "monotone when any pair (not every pair) is ordered"),
    M("search_monotone_touching", "str-search", "sweeps/search.py",
      "not (e1.lo > e2.hi)", "not (e1.lo >= e2.hi)", SEARCH_T, "touching intervals flagged as a crossing"),
    M("search_monotone_pass_above_fail", "str-search", "sweeps/search.py",
      ") and not any(n > first_fail for n in passing if first_fail is not None)", ")", SEARCH_T,
      "a pass above the first failure is not flagged when the intervals overlap"),
    M("search_pairs_skip_adjacent", "str-search", "sweeps/search.py",
      "for y in probes[i + 1:]:", "for y in probes[i + 2:]:", SEARCH_T,
      "adjacent probes are never compared for monotonicity"),
    # ---------------------------------------------------------------- SQL sandbox (queries/sandbox.py)
    # Equivalent, left out: manifest.json `.is_file()` vs `.exists()` (differs only for a directory of
    # that name); `_result_set_root(target)` instead of its parent (a new output file holds no manifest);
    # `_dir_prefix` without its trailing separator (DuckDB 2.0 matches allowed_directories by whole path
    # components itself: '/a/rs' does not allow '/a/rs-other' either way, measured).
    M("sandbox_dir_itself_allowed", "str-sandbox", "queries/sandbox.py",
      "if target == given or given in target.parents:", "if given in target.parents:", SANDBOX_T,
      "-o naming the result dir itself is allowed"),
    M("sandbox_only_direct_children", "str-sandbox", "queries/sandbox.py",
      "if target == given or given in target.parents:", "if target == given or given == target.parent:", SANDBOX_T,
      "only files directly in a named result dir are refused, not deeper ones"),
    M("sandbox_root_skips_itself", "str-sandbox", "queries/sandbox.py",
      "for d in (p, *p.parents):", "for d in p.parents:", SANDBOX_T,
      "a file directly inside an unnamed result set is allowed (its own dir is not checked for a manifest)"),
    M("sandbox_target_not_resolved", "str-sandbox", "queries/sandbox.py",
      "target = Path(os.path.realpath(os.fspath(out)))", "target = Path(os.path.abspath(os.fspath(out)))", SANDBOX_T,
      "a symlink into a result set is not resolved"),
    M("sandbox_given_not_resolved", "str-sandbox", "queries/sandbox.py",
      "given = Path(os.path.realpath(os.fspath(d)))", "given = Path(os.path.abspath(os.fspath(d)))", SANDBOX_T,
      "a result dir named through a symlink is not resolved"),
    M("sandbox_explain_allowed", "str-sandbox", "queries/sandbox.py",
      "_ALLOWED_STATEMENTS = frozenset({duckdb.StatementType.SELECT})",
      "_ALLOWED_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})", SANDBOX_T,
      "EXPLAIN (ANALYZE runs its statement) passes the statement check"),
    # ---------------------------------------------------------------- cmc pooling and interval (core/estimators/cmc/stats.py)
    M("cmc_combine_between_dropped", "str-cmc", "core/estimators/cmc/stats.py",
      "+ n * (mu - mean) ** 2 for n, mu, v in parts)", " for n, mu, v in parts)", EST_T,
      "shards pooled without the between-shard sum of squares"),
    M("cmc_combine_within_n2", "str-cmc", "core/estimators/cmc/stats.py",
      "n * (n - 1) * (v if n > 1 else 0.0)", "n * n * (v if n > 1 else 0.0)", EST_T,
      "a shard's sum of squares from its variance of the mean with n^2 instead of n (n - 1)"),
    M("cmc_combine_mean_unweighted", "str-cmc", "core/estimators/cmc/stats.py",
      "    mean = sum(n * mu for n, mu, _ in parts) / big_n\n    if big_n < 2:",
      "    mean = sum(mu for _, mu, _ in parts) / len(parts)\n    if big_n < 2:", EST_T,
      "shards' means averaged without their trial weights"),
    M("cmc_chan_mean_weight", "str-cmc", "core/estimators/cmc/stats.py",
      "self.mean += delta * k / tot", "self.mean += delta * self.n / tot", EST_T,
      "running mean over chunks weights the new chunk by the old count"),
    M("cmc_chan_between_dropped", "str-cmc", "core/estimators/cmc/stats.py",
      "self.m2 += m2 + delta * delta * self.n * k / tot", "self.m2 += m2", EST_T,
      "running variance over chunks without the between-chunk term"),
    M("cmc_zero_var_one_sided_level", "str-cmc", "core/estimators/cmc/stats.py",
      "math.log((1.0 - conf) / 2.0) / n", "math.log(1.0 - conf) / n", EST_T,
      "the no-variance bound at one-sided 95% instead of 97.5%"),
    M("cmc_zero_var_lo_no_1mq", "str-cmc", "core/estimators/cmc/stats.py",
      "lo = mean * (1.0 - q) - fp", "lo = mean - fp", EST_T,
      "the no-variance lower bound drops its (1 - q)"),
    M("cmc_zero_var_event_bound_ignored", "str-cmc", "core/estimators/cmc/stats.py",
      "((1.0 if event_bound and mean == 0 else y_max) - mean)", "(y_max - mean)", EST_T,
      "an all-zero event sample bounded by y_max q instead of q"),
    M("cmc_zero_var_as_clt", "str-cmc", "core/estimators/cmc/stats.py",
      "and var_of_mean > 0:", "and var_of_mean >= 0:", EST_T,
      "a zero sample variance gives the zero-width CLT interval"),
    M("cmc_clt_var_not_sd", "str-cmc", "core/estimators/cmc/stats.py",
      "half = max(z * math.sqrt(var_of_mean), fp)", "half = max(z * var_of_mean, fp)", EST_T,
      "the CLT half-width uses the variance instead of the standard error"),
    M("cmc_bad_ymax_minus_one", "str-cmc", "core/estimators/cmc/stats.py",
      'return float(m + 1 if name == "bad" else m)', "return float(m)", EST_T,
      "bad's per-trial values bounded by n_cpus - 1 instead of n_cpus"),
    M("cmc_bad_not_an_event", "str-cmc", "core/estimators/cmc/stats.py",
      '_EVENTS = ("race", "bad")', '_EVENTS = ("race",)', EST_T,
      "an all-zero bad sample not bounded as an event probability"),
    # ---------------------------------------------------------------- pooling over sweeps, ratio (queries/estimates.py)
    M("strata_mean_unweighted", "str-estimates", "queries/estimates.py",
      "m = sum(n * mu for n, mu, _ in ps) / big_n", "m = sum(mu for _, mu, _ in ps) / len(ps)", EST_T,
      "strata averaged without their trial weights"),
    M("parts_missing_var_zero", "str-estimates", "queries/estimates.py",
      'float(v) if v is not None and math.isfinite(v) else float("nan")', "float(v) if v is not None and math.isfinite(v) else 0.0",
      EST_T, "a missing variance is treated as 0 when pooling"),
    M("ratio_cv_strict", "str-estimates", "queries/estimates.py",
      "math.sqrt(v_num) <= RATIO_MAX_CV * p_num", "math.sqrt(v_num) < RATIO_MAX_CV * p_num", EST_T,
      "a numerator exactly at the largest cv leaves the log-scale interval"),
    M("ratio_den_cv_unchecked", "str-estimates", "queries/estimates.py",
      " and math.sqrt(v_den) <= RATIO_MAX_CV * p_den)", ")", EST_T,
      "an uncertain denominator still gets the log-scale interval"),
    M("ratio_zero_var_delta", "str-estimates", "queries/estimates.py",
      "v_num > 0 and v_den > 0", "v_num >= 0 and v_den >= 0", EST_T,
      "a side with zero variance gets a zero-width log-scale term"),
    M("ratio_den_term_dropped", "str-estimates", "queries/estimates.py",
      "s = math.sqrt(v_num / (p_num * p_num) + v_den / (p_den * p_den))", "s = math.sqrt(v_num / (p_num * p_num))",
      EST_T, "the ratio's log-variance ignores the denominator"),
    M("ratio_level_975", "str-estimates", "queries/estimates.py",
      "        z = z_value(conf)\n", "        z = z_value(1 - (1 - conf) / 2)\n", EST_T,
      "the log-scale ratio interval at 97.5% instead of 95%"),
    M("ratio_bounds_lo_over_lo", "str-estimates", "queries/estimates.py",
      "lo = lo_num / hi_den if hi_den > 0 else 0.0", "lo = lo_num / lo_den if lo_den > 0 else 0.0", EST_T,
      "the bounds' lower end divides by the denominator's lower end"),
    M("ratio_bounds_hi_over_hi", "str-estimates", "queries/estimates.py",
      "hi = hi_num / lo_den if lo_den > 0 else math.inf", "hi = hi_num / hi_den if hi_den > 0 else math.inf", EST_T,
      "the bounds' upper end divides by the denominator's upper end"),
    # ---------------------------------------------------------------- mitigation_effect (queries/sql/mitigation_effect.sql)
    # Equivalent, left out: dropping `AND name <> 'mitigation'` from `differs` (the none side's mitigation
    # is the default, so it is never listed there).
    M("me_pair_swapped", "str-mitigation", "queries/sql/mitigation_effect.sql",
      "n.mitigation = 'none' AND f.mitigation = 'early_flush'", "n.mitigation = 'early_flush' AND f.mitigation = 'none'",
      EST_T, "the factor is p(early_flush) / p(none)"),
    M("me_key_keeps_mitigation", "str-mitigation", "queries/sql/mitigation_effect.sql",
      "FILTER (WHERE name <> 'mitigation') AS k,", "AS k,", EST_T,
      "pairs are matched on mitigation too (none ever match)"),
    M("me_mean_change_sign", "str-mitigation", "queries/sql/mitigation_effect.sql",
      "f.t_mean_us - n.t_mean_us AS t_mean_change_us", "n.t_mean_us - f.t_mean_us AS t_mean_change_us", EST_T,
      "mean stop-time change is none minus early_flush"),
    M("me_p99_flush_is_none", "str-mitigation", "queries/sql/mitigation_effect.sql",
      "f.t_p99_us AS t_p99_flush_us,", "n.t_p99_us AS t_p99_flush_us,", EST_T,
      "the early_flush p99 column shows the none side's"),
    M("me_disagree_both_sides", "str-mitigation", "queries/sql/mitigation_effect.sql",
      "OR coalesce(f.p_race_disagree, false) AS disagree", "AND coalesce(f.p_race_disagree, false) AS disagree", EST_T,
      "a pair is flagged only when both sides disagree"),
    # ---------------------------------------------------------------- service guards (sweeps/serve/security.py)
    # Equivalent, left out: dropping the Content-Length pre-check in read_body (the streamed count refuses
    # the same bodies with 413, only its message differs).
    M("sec_token_every_source", "str-serve", "sweeps/serve/security.py",
      "ok = any(v is not None and hmac.compare_digest", "ok = all(v is not None and hmac.compare_digest", SERVE_T,
      "the token must come as header and cookie both (every vs any)"),
    M("sec_token_missing_ok", "str-serve", "sweeps/serve/security.py",
      "ok = any(v is not None and hmac.compare_digest", "ok = any(v is None or hmac.compare_digest", SERVE_T,
      "a request without the token gets in"),
    M("sec_token_prefix", "str-serve", "sweeps/serve/security.py",
      "ok = any(v is not None and hmac.compare_digest(v.encode(), config.token.encode())",
      "ok = any(v is not None and config.token.startswith(v)", SERVE_T,
      "any prefix of the token is accepted"),
    M("sec_bearer_off_by_one", "str-serve", "sweeps/serve/security.py",
      'bearer = auth[7:] if auth.lower().startswith("bearer ") else None',
      'bearer = auth[6:] if auth.lower().startswith("bearer ") else None', SERVE_T,
      "the bearer value keeps the scheme's space (the right token is refused)"),
    M("sec_query_token_unchecked", "str-serve", "sweeps/serve/security.py",
      "if given is not None and hmac.compare_digest(given.encode(), config.token.encode()):",
      "if given is not None:", SERVE_T, "any ?token= at / is traded for the real token's cookie"),
    M("sec_query_token_any_path", "str-serve", "sweeps/serve/security.py",
      'given = request.query_params.get("token") if request.url.path == "/" else None',
      'given = request.query_params.get("token")', SERVE_T,
      "?token= is accepted on every path (tokens in API URLs and their logs)"),
    M("sec_host_suffix", "str-serve", "sweeps/serve/security.py",
      "if host not in config.trusted_hosts:", "if not any(host.endswith(h) for h in config.trusted_hosts):", SERVE_T,
      "a Host merely ending in a trusted name (evillocalhost) is accepted"),
    M("sec_host_port_kept", "str-serve", "sweeps/serve/security.py",
      '.rsplit(":", 1)[0].strip("[]")', '.rsplit(":", 1)[-1].strip("[]")', SERVE_T,
      "the Host check looks at the port instead of the name"),
    M("sec_host_ipv6_brackets", "str-serve", "sweeps/serve/security.py",
      '.rsplit(":", 1)[0].strip("[]")', '.rsplit(":", 1)[0]', SERVE_T,
      "a bracketed IPv6 Host ([::1]:port) is refused"),
    M("sec_body_length_at_limit", "str-serve", "sweeps/serve/security.py",
      "and int(size) > limit:", "and int(size) >= limit:", SERVE_T,
      "a body of exactly max_body_bytes is refused"),
    M("sec_body_stream_off_by_one", "str-serve", "sweeps/serve/security.py",
      "        if n > limit:\n", "        if n > limit + 1:\n", SERVE_T,
      "a chunked body one byte over the limit is read"),
    M("sec_body_per_chunk", "str-serve", "sweeps/serve/security.py",
      "        n += len(chunk)\n", "        n = len(chunk)\n", SERVE_T,
      "the limit applies per chunk, not to the whole body"),
    M("sec_json_depth_at_limit", "str-serve", "sweeps/serve/security.py",
      "if _depth(obj) > MAX_JSON_DEPTH:", "if _depth(obj) >= MAX_JSON_DEPTH:", SERVE_T,
      "a body nested exactly MAX_JSON_DEPTH deep is refused"),
    M("sec_json_int_2_63", "str-serve", "sweeps/serve/security.py",
      "-(2**63) <= v < 2**63", "-(2**63) <= v <= 2**63", SERVE_T, "2^63 passes as a 64-bit integer"),
    # ---------------------------------------------------------------- capacity limits, statuses, fleet (queries/capacity.py)
    M("cap_limit_after_failure", "str-capacity", "queries/capacity.py",
      "if fail is None and passes(c):", "if passes(c):", CAP_T,
      "the limit is the last passing n_cpus even after a failure"),
    M("cap_pass_at_target", "str-capacity", "queries/capacity.py",
      'return c["p_hi"] < target_p', 'return c["p_hi"] <= target_p', CAP_T,
      "a cell whose upper bound equals the target passes"),
    M("cap_exceeds_on_hi", "str-capacity", "queries/capacity.py",
      'elif fail["p_lo"] > target_p or fail_status', 'elif fail["p_hi"] > target_p or fail_status', CAP_T,
      "an interval spanning the target is reported as exceeding it"),
    M("cap_exceeds_and_decided", "str-capacity", "queries/capacity.py",
      'elif fail["p_lo"] > target_p or fail_status == "above target":',
      'elif fail["p_lo"] > target_p and fail_status == "above target":', CAP_T,
      "exceeds only when the bound and an adaptive decision both say so"),
    M("cap_all_pass_smallest", "str-capacity", "queries/capacity.py",
      "all pass (largest n_cpus run = {cs[-1]['n_cpus']})", "all pass (largest n_cpus run = {cs[0]['n_cpus']})",
      CAP_T, "'all pass' names the smallest n_cpus run"),
    M("cap_nonmonotone_unflagged", "str-capacity", "queries/capacity.py",
      "            elif passes(c):\n                nonmonotone.append(key)", "            elif False:\n                pass",
      CAP_T, "a group passing again after a failure is not noted"),
    M("cap_fail_lo_is_p", "str-capacity", "queries/capacity.py",
      '"fail_p_lo": None if fail is None else fail["p_lo"],', '"fail_p_lo": None if fail is None else fail["p"],',
      CAP_T, "the first failure's lower bound column shows its estimate"),
    M("cap_decided_not_above", "str-capacity", "queries/capacity.py",
      'return decided[(*key, c["n_cpus"])] == "below target"', 'return decided[(*key, c["n_cpus"])] != "above target"',
      CAP_T, "an adaptive cell passes unless decided above (budget exhausted passes)"),
    M("cap_decided_any_point", "str-capacity", "queries/capacity.py",
      "CASE WHEN bool_and(status = 'below target') THEN 'below target'",
      "CASE WHEN bool_or(status = 'below target') THEN 'below target'", CAP_T,
      "an adaptive cell is below target when any (not every) point is"),
    M("cap_decided_exhausted_first", "str-capacity", "queries/capacity.py",
      "WHEN bool_or(status = 'above target') THEN 'above target'\n                    WHEN bool_or(status = 'budget exhausted') THEN 'budget exhausted'",
      "WHEN bool_or(status = 'budget exhausted') THEN 'budget exhausted'\n                    WHEN bool_or(status = 'above target') THEN 'above target'",
      CAP_T, "a cell with an above-target point and a budget-exhausted one says budget exhausted"),
    M("cap_decided_any_target", "str-capacity", "queries/capacity.py",
      "if rules != [(metric, float(target_p))]:", "if not rules:", CAP_T,
      "an adaptive sweep's decisions are used for any target and metric"),
    M("fleet_hosts_plus_kexecs", "str-capacity", "queries/capacity.py",
      "hk = float(hosts) * float(kexecs_per_host_year)", "hk = float(hosts) + float(kexecs_per_host_year)", CAP_T,
      "kexecs per year = hosts + kexecs per host"),
    M("fleet_hi_from_p", "str-capacity", "queries/capacity.py",
      '"failures_per_year_hi": r["p_hi"] * hk,', '"failures_per_year_hi": r["p"] * hk,', CAP_T,
      "the fleet's upper failures/year from the estimate"),
    M("fleet_lo_unscaled", "str-capacity", "queries/capacity.py",
      '"failures_per_year_lo": r["p_lo"] * hk,', '"failures_per_year_lo": r["p_lo"],', CAP_T,
      "the fleet's lower failures/year not scaled by the fleet"),
    M("fleet_within_on_p", "str-capacity", "queries/capacity.py",
      '"within_target": bool(r["p_hi"] < target_p),', '"within_target": bool(r["p"] < target_p),', CAP_T,
      "a fleet cell is within target on its estimate, not its upper bound"),
    # ---------------------------------------------------------------- result-set writer (queries/resultset/)
    # Durability mutants are killed by a call log of os.fsync / os.replace (test_strength_resultset).
    M("st_new_file_no_fsync", "str-writer", "queries/resultset/storage.py",
      "                f.flush()\n                os.fsync(f.fileno())\n                f.close()",
      "                f.flush()\n                f.close()", RS_T,
      "a new table file is renamed into place without an fsync"),
    M("st_new_file_fsync_after_rename", "str-writer", "queries/resultset/storage.py",
      "                os.fsync(f.fileno())\n                f.close()\n                os.replace(tmp, path)",
      "                f.close()\n                os.replace(tmp, path)\n                os.fsync(os.open(path, os.O_RDONLY))",
      RS_T, "a new table file is fsynced only after its rename (swapped order)"),
    M("st_new_file_no_dir_fsync", "str-writer", "queries/resultset/storage.py",
      '            _fsync_dir(path.parent)\n            with open(path, "rb") as g:',
      '            with open(path, "rb") as g:', RS_T, "the rename of a table file is not made durable (no directory fsync)"),
    M("st_replace_no_fsync", "str-writer", "queries/resultset/storage.py",
      "            os.fsync(f.fileno())\n        os.replace(tmp, path)", "            pass\n        os.replace(tmp, path)",
      RS_T, "spec.toml, query/plot outputs and manifests where there are no links renamed into place without an fsync"),
    M("st_replace_no_dir_fsync", "str-writer", "queries/resultset/storage.py",
      "        raise\n    _fsync_dir(path.parent)\n", "        raise\n", RS_T,
      "an atomically replaced file's rename (spec, outputs, a link-less manifest) is not made durable"),
    M("st_exclusive_no_fsync", "str-writer", "queries/resultset/storage.py",
      "            f.flush()\n            os.fsync(f.fileno())\n        _fsync_dir(self.root)",
      "            f.flush()\n        _fsync_dir(self.root)", RS_T, "the writer lock file is not fsynced"),
    M("st_exclusive_no_dir_fsync", "str-writer", "queries/resultset/storage.py",
      "        _fsync_dir(self.root)\n        return True", "        return True", RS_T,
      "the writer lock's directory entry is not fsynced"),
    M("wr_points_before_events", "str-writer", "queries/resultset/writer.py",
      "            ev_entry = e.close() if e is not None else None\n            pt_entry = p.close()",
      "            pt_entry = p.close()\n            ev_entry = e.close() if e is not None else None", RS_T,
      "a segment's points file is renamed into place before its events file (swapped order)"),
    M("wr_tier_fanout_strict", "str-writer", "queries/resultset/writer.py",
      "if len(v) >= MERGE_FANOUT]", "if len(v) > MERGE_FANOUT]", RS_T,
      "MERGE_FANOUT small segments of a size class are not merged (one more is needed)"),
    M("wr_level_base2", "str-writer", "queries/resultset/writer.py",
      "int(math.log(max(size, 1) / _LEVEL_BASE, MERGE_FANOUT))", "int(math.log(max(size, 1) / _LEVEL_BASE, 2))", RS_T,
      "size classes a factor 2 apart instead of MERGE_FANOUT"),
    M("wr_gc_due_strict", "str-writer", "queries/resultset/writer.py",
      "due = [g for g in self.manifest.garbage if now - g.since >= grace]",
      "due = [g for g in self.manifest.garbage if now - g.since > grace]", RS_T,
      "a file superseded exactly grace_s ago is not yet deleted"),
    M("wr_gc_keeps_deleted", "str-writer", "queries/resultset/writer.py",
      "garbage=[g for g in self.manifest.garbage if now - g.since < grace]",
      "garbage=[g for g in self.manifest.garbage if now - g.since <= grace]", RS_T,
      "a file deleted at exactly grace_s stays listed as garbage"),
    M("wr_gc_grace_arg_ignored", "str-writer", "queries/resultset/writer.py",
      "grace = self.grace_s if grace_s is None else grace_s", "grace = self.grace_s", RS_T,
      "collect_garbage(grace_s=...) ignores its argument"),
    M("wr_cleanup_grace_strict", "str-writer", "queries/resultset/writer.py",
      "old = st.mtime is not None and now - st.mtime >= self.grace_s",
      "old = st.mtime is not None and now - st.mtime > self.grace_s", RS_T,
      "a leftover exactly grace_s old is kept at open"),
    M("wr_cleanup_no_grace", "str-writer", "queries/resultset/writer.py",
      "old = st.mtime is not None and now - st.mtime >= self.grace_s", "old = st.mtime is not None", RS_T,
      "another writer's unreferenced files are deleted at open without a grace period"),
    M("mf_migration_drops_fields", "str-writer", "queries/resultset/manifest.py",
      '    m = dict(m)\n    done = m.pop("tasks_done", None) or []',
      '    m = {k: m[k] for k in ("spec_hash", "tasks_done", "n_tasks") if k in m}\n    done = m.pop("tasks_done", None) or []',
      RS_T, "the first-release migration keeps only the fields it needs"),
    M("mf_done_exclusive_end", "str-writer", "queries/resultset/manifest.py",
      "r.update(range(a, b + 1))", "r.update(range(a, b))", RS_T,
      "a segment's task range misses its last task"),
    M("view_manifest_no_fsync", "str-writer", "queries/resultset/view.py",
      "        f.write(manifest_bytes)\n        f.flush()\n        os.fsync(f.fileno())\n",
      "        f.write(manifest_bytes)\n        f.flush()\n", RS_T,
      "a generation's manifest is not fsynced before the generation becomes current"),
    M("view_links_no_fsync", "str-writer", "queries/resultset/view.py",
      "            os.symlink(f\"{up}{physical(data_dir, f'{table}/{n}')}\", t / n)\n        fsync_dir(t)\n",
      "            os.symlink(f\"{up}{physical(data_dir, f'{table}/{n}')}\", t / n)\n", RS_T,
      "a generation's link directories are not fsynced before the commit"),
    M("view_commit_before_build", "str-writer", "queries/resultset/view.py",
      "    _build(root, gen, manifest_bytes, names, manifest.data_dir)\n    cur = root / CURRENT\n    old = os.readlink(cur) if cur.is_symlink() else None\n    _link(root, CURRENT, gen, token)\n",
      "    cur = root / CURRENT\n    old = os.readlink(cur) if cur.is_symlink() else None\n    _link(root, CURRENT, gen, token)\n    _build(root, gen, manifest_bytes, names, manifest.data_dir)\n",
      RS_T, ".current is renamed to the new generation before it is built (swapped order)"),
    M("view_commit_no_root_fsync", "str-writer", "queries/resultset/view.py",
      "    _link(root, CURRENT, gen, token)\n    fsync_dir(root)\n    _fixed_links(root, token)\n    if old",
      "    _link(root, CURRENT, gen, token)\n    _fixed_links(root, token)\n    if old", RS_T,
      "the commit rename of .current is not made durable (no directory fsync)"),
    M("view_collects_current", "str-writer", "queries/resultset/view.py",
      "if e.name == current or not e.is_dir(follow_symlinks=False):", "if not e.is_dir(follow_symlinks=False):", RS_T,
      "the current generation is deleted with the superseded ones"),
    M("rep_keeps_damaged", "str-writer", "queries/resultset/writer.py",
      "keep = [s for i, s in enumerate(m.segments) if i not in drop]", "keep = list(m.segments)", RS_T,
      "repair keeps the damaged segment listed"),
    M("rep_garbage_still_listed", "str-writer", "queries/resultset/writer.py",
      "for s in gone for f in s.files()\n                                             if f.path not in kept_files]",
      "for s in gone for f in s.files()]", RS_T,
      "repair marks a file as garbage although a kept segment still lists it (it is deleted later)"),
    M("rep_cpu_trials_of_all", "str-writer", "queries/resultset/writer.py",
      "ctd = sum(s.cpu_trials for s in keep)", "ctd = sum(s.cpu_trials for s in m.segments)", RS_T,
      "repair keeps the dropped segments' CPU-trials in cpu_trials_done"),
]



# ------------------------------------------------------------------------------------ running


def repo_files(root: Path) -> list[str]:
    """Tracked plus untracked-but-not-ignored files (so uncommitted work is what is tested)."""
    out = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True,
    ).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


def make_copy(root: Path, files: list[str]) -> Path:
    dst = Path(tempfile.mkdtemp(prefix="stoprace-mutant-"))
    for f in files:
        target = dst / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, target)
    return dst


def stale(m: Mutant, root: Path) -> str | None:
    """Why the mutant cannot be applied (snippet missing or ambiguous), or None."""
    path = root / m.file
    if not path.is_file():
        return f"{m.file} does not exist"
    n = path.read_text().count(m.old)
    if n != 1:
        first = m.old.splitlines()[0] if m.old else ""
        return f"{m.file}: snippet found {n} times (want 1): {first!r}"
    for t in m.tests:
        if not (root / t.split("::")[0]).is_file():
            return f"test {t.split('::')[0]} does not exist"
    return None


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[bool, str, float]:
    """(passed, tail of output, seconds) of `pytest -x` over `tests` in the copy."""
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s", time.monotonic() - t0
    tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-3:])
    return r.returncode == 0, tail, time.monotonic() - t0


def run_mutant(m: Mutant, root: Path, files: list[str], timeout: float) -> tuple[str, str, float]:
    """("killed" | "survived", detail, seconds) on a fresh copy that is deleted afterwards."""
    copy = make_copy(root, files)
    try:
        path = copy / m.file
        path.write_text(path.read_text().replace(m.old, m.new, 1))
        passed, tail, secs = run_tests(copy, m.tests, timeout)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return ("survived" if passed else "killed"), tail, secs


def baseline_tests(todo: list[Mutant]) -> tuple[str, ...]:
    """The union of the mutants' tests, a node id dropped when its whole file is listed too."""
    tests = list(dict.fromkeys(t for m in todo for t in m.tests))
    files = {t for t in tests if "::" not in t}
    return tuple(t for t in tests if "::" not in t or t.split("::")[0] not in files)


def select(patterns: list[str]) -> list[Mutant]:
    if not patterns:
        return list(MUTANTS)
    def hit(m: Mutant, pat: str) -> bool:
        return any(fnmatch.fnmatch(x, pat) or pat in x for x in (m.name, m.cls, m.file))
    return [m for m in MUTANTS if any(hit(m, p) for p in patterns)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=[], metavar="PATTERN",
                    help="mutants whose name, class or file matches (glob or substring); repeatable")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--check", action="store_true", help="only check that every snippet applies")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the selected tests")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per test run (default 600)")
    ap.add_argument("--fail-under", type=float, default=0.0, help="exit 1 if the kill rate (%%) is below this")
    ap.add_argument("--jobs", "-j", type=int, default=1, help="mutants run at once (default 1)")
    ap.add_argument("--root", type=Path, default=ROOT, help="repository to mutate (default: this one)")
    ap.add_argument("--tests", nargs="+", metavar="TEST", default=None,
                    help="run these tests against every selected mutant instead of each mutant's own "
                         "(e.g. the suite before a mutant's tests were written: which mutants it let through)")
    a = ap.parse_args(argv)

    names = [m.name for m in MUTANTS]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        print(f"duplicate mutant names: {sorted(dup)}", file=sys.stderr)
        return 2
    chosen = select(a.only)
    if a.tests:
        chosen = [Mutant(m.name, m.cls, m.file, m.old, m.new, tuple(a.tests), m.what) for m in chosen]
    if not chosen:
        print(f"no mutant matches {a.only}", file=sys.stderr)
        return 2
    if a.list:
        for m in chosen:
            print(f"{m.name:32} {m.cls:9} {m.file:28} {m.what}")
        return 0

    root = a.root.resolve()
    bad = {m.name: why for m in chosen if (why := stale(m, root))}
    for name, why in bad.items():
        print(f"STALE     {name}: {why}")
    if a.check:
        print(f"{len(chosen) - len(bad)} of {len(chosen)} snippets apply")
        return 2 if bad else 0
    todo = [m for m in chosen if m.name not in bad]
    files = repo_files(root)

    if not a.no_baseline and todo:
        tests = baseline_tests(todo)
        groups = [tests[i::a.jobs] for i in range(min(a.jobs, len(tests)))]
        copy = make_copy(root, files)
        try:
            with ThreadPoolExecutor(len(groups)) as pool:
                runs = list(pool.map(lambda g: run_tests(copy, g, a.timeout * 4), groups))
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        ok = all(r[0] for r in runs)
        print(f"baseline  {'green' if ok else 'RED'} in {max(r[2] for r in runs):.0f} s: {' '.join(tests)}", flush=True)
        if not ok:
            print("\n".join(r[1] for r in runs if not r[0]))
            return 1

    t_all = time.monotonic()
    survivors: list[Mutant] = []
    with ThreadPoolExecutor(a.jobs) as pool:
        futures = {pool.submit(run_mutant, m, root, files, a.timeout): m for m in todo}
        for fut in as_completed(futures):
            m = futures[fut]
            status, tail, secs = fut.result()
            print(f"{status.upper():9} {m.name:32} {secs:6.1f} s  {m.what}", flush=True)
            if status == "survived":
                survivors.append(m)
    survivors.sort(key=todo.index)
    killed = len(todo) - len(survivors)
    rate = 100.0 * killed / len(todo) if todo else 0.0
    print(f"\nkilled {killed} of {len(todo)} mutants ({rate:.1f}%) in {time.monotonic() - t_all:.0f} s"
          + (f"; {len(bad)} stale, not run" if bad else ""))
    for m in survivors:
        print(f"  survived: {m.name} [{m.cls}] {m.file}: {m.what}" + ("" if a.tests else f"; tests {' '.join(m.tests)}"))
    for name, why in bad.items():
        print(f"  stale: {name}: {why}")
    if bad:
        return 2
    return 1 if rate < a.fail_under else 0


if __name__ == "__main__":
    sys.exit(main())
