"""Outcome codes of one trial, ordered from best to worst (MODEL.md "Outcome")."""

from __future__ import annotations

import numpy as np

CLEAN, NMI_CLEAN, TIMEOUT, RACE, HANG = 0, 1, 2, 3, 4
OUTCOMES: tuple[str, ...] = ("clean", "nmi_clean", "timeout", "race", "hang")
"""Names indexed by code; a larger code is a worse outcome."""

EVENT_OUTCOMES: tuple[str, ...] = ("timeout", "race", "hang")
"""Outcomes that get one row each in the events table."""


def counts(outcome: np.ndarray) -> dict[str, int]:
    """Trials per outcome name for an array of outcome codes."""
    c = np.bincount(np.asarray(outcome, dtype=np.int64), minlength=len(OUTCOMES))
    return {name: int(c[i]) for i, name in enumerate(OUTCOMES)}
