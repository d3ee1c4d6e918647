"""The one exception of the late sampler's numerics: a point it cannot represent to its stated
accuracy (a quadrature, table or envelope beyond its budget). It never reaches a user:
core.estimators.late.estimator catches it and runs the naive path (estimator column
"late->naive"), so it is not a StopraceError."""

from __future__ import annotations


class Unrepresentable(ArithmeticError):
    """This point's laws could not be tabulated to the late sampler's accuracy (the reason)."""
