"""CPU time per trial of model revision 2 over revision 1 (issue 19 target), for bench_core and bench_rare.

The same work (estimator, n_cpus, mitigation, trials, seeds) is timed under `model_rev = 1` and
`model_rev = 2`, interleaved and best-of-`repeat` each, in process CPU time: on a loaded machine
a burst hits both revisions alike, and the ratio is what the targets speak of.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from core.params import Params
from core.vectorized import shard_seed

TARGETS = {"none": 1.1, "early_flush": 1.8}
"""Issue 19: rev 2 / rev 1 CPU time per trial at most 1.1 under none (two draws per trial more) and 1.8
under early_flush (two draws per CPU more)."""


def rev_ratios(
    chunks: Callable[[Params, int, Any], Iterator[Any]],
    trials_at: Callable[[int], int],
    sizes: tuple[int, ...] = (64, 512),
    repeat: int = 3,
) -> list[tuple[int, str, float, float, float]]:
    """(n_cpus, mitigation, µs per trial at rev 1, at rev 2, ratio) for each size and mitigation;
    `chunks(p, trials, seed)` is an estimator's chunk iterator (core.vectorized.iter_chunks, ...)."""
    out = []
    for n in sizes:
        for mit in TARGETS:
            trials = trials_at(n)
            best = {1: float("inf"), 2: float("inf")}
            for r in range(repeat):
                for rev in (1, 2):
                    p = Params(n_cpus=n, mitigation=mit, model_rev=rev)
                    t0 = time.process_time()
                    for _ in chunks(p, trials, shard_seed(1, r)):
                        pass
                    best[rev] = min(best[rev], time.process_time() - t0)
            out.append((n, mit, best[1] / trials * 1e6, best[2] / trials * 1e6, best[2] / best[1]))
    return out


def print_ratios(label: str, rows: list[tuple[int, str, float, float, float]]) -> None:
    """The table bench_core / bench_rare print."""
    print(f"\nCPU time per trial, model_rev 2 / model_rev 1 ({label}; best of interleaved runs, process CPU time):")
    print(f"{'n_cpus':>6} {'mitigation':>12} {'rev 1 µs':>10} {'rev 2 µs':>10} {'ratio':>7} {'target':>8}")
    for n, mit, t1, t2, ratio in rows:
        ok = "met" if ratio <= TARGETS[mit] else "NOT met"
        print(f"{n:>6} {mit:>12} {t1:>10.2f} {t2:>10.2f} {ratio:>7.3f} {'<= ' + str(TARGETS[mit]):>8} {ok}")
