"""CPU-trials: the one unit of simulation work, used everywhere a rate or a cost is quoted.

    CPU-trials = trials x n_cpus

every online CPU of the point counted, the stopping CPU 0 included (the model simulates
the n_cpus - 1 others, so a point's work is proportional to n_cpus - 1; counting n_cpus
keeps the unit the planner has always sized tasks with, the `cpu_trials_done` every
manifest records and the progress bar's total, so no plan or stored figure changes).
The planner (sweeps.grid), the runner's progress, `stoprace simulate`'s rate and every
benchmark quote CPU-trials through this function and nothing else.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")  # int, or a NumPy integer array (element-wise)

UNIT = "CPU-trials (trials x n_cpus)"
"""The label to print next to a figure in this unit."""


def cpu_trials(n_cpus: T, trials: T) -> T:
    """Work of `trials` trials of a point with `n_cpus` CPUs, in CPU-trials (see the module doc)."""
    return n_cpus * trials  # type: ignore[operator]
