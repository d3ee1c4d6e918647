"""Comparing stored rows with recomputed ones where the two may come from different CPU kinds.

"Identical rows" (README, "The results dir") means: bit-identical on the same CPU kind and
NumPy build; across CPU kinds every column but the floats is exact (counts, histograms, ids,
seeds, shard numbers, strings) and a float may differ in its last bits, because NumPy picks
its exp/log/log1p/expm1/power kernels by CPU (AVX-512 ones where the CPU has them) and they
round differently by an ULP or two. The fixtures in tests/fixtures/release1-* were written on
a CPU without AVX-512; on an AVX-512 machine stop-time sums and maxima differ by up to 2 ULP.

``assert_same_rows`` accepts ``FLOAT_ULPS`` ULP per float (about 1.4e-14 relative): a real
change (one trial more or less, another seed or draw order) moves these sums by 1e-6 or more.
NaN must meet NaN, an infinity the same infinity, a null a null.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

FLOAT_ULPS = 64
"""Largest accepted distance, in units in the last place, between two float64 values."""


def _ordered(x: np.ndarray) -> np.ndarray:
    """float64 bit patterns mapped to int64 so that adjacent floats are adjacent integers."""
    i = x.view(np.int64)
    return np.where(i < 0, np.int64(np.iinfo(np.int64).min) - i, i)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise |a - b| in ULP for finite float64 arrays (0 for equal values, +0 vs -0 too)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.abs(_ordered(a).astype(object) - _ordered(b).astype(object)).astype(np.float64)


def _float_column(name: str, a: pa.ChunkedArray, b: pa.ChunkedArray, ulps: int, what: str) -> None:
    an, bn = a.is_null().to_numpy(zero_copy_only=False), b.is_null().to_numpy(zero_copy_only=False)
    assert (an == bn).all(), f"{what}: {name}: nulls at different rows"
    x = a.fill_null(0.0).to_numpy(zero_copy_only=False).astype(np.float64)
    y = b.fill_null(0.0).to_numpy(zero_copy_only=False).astype(np.float64)
    assert (np.isnan(x) == np.isnan(y)).all(), f"{what}: {name}: NaN at different rows"
    inf = np.isinf(x) | np.isinf(y)
    assert (x[inf] == y[inf]).all(), f"{what}: {name}: infinities differ"
    fin = np.isfinite(x) & np.isfinite(y)
    d = ulp_distance(x[fin], y[fin])
    if d.size and d.max() > ulps:
        i = int(np.argmax(d))
        raise AssertionError(f"{what}: {name}: {x[fin][i]!r} vs {y[fin][i]!r} ({int(d[i])} ULP > {ulps})")


def assert_same_rows(a: pa.Table, b: pa.Table, what: str = "rows", ulps: int = FLOAT_ULPS) -> None:
    """Same column names, types and row order; floats within ``ulps`` ULP, everything else exact."""
    assert a.column_names == b.column_names, f"{what}: columns {a.column_names} != {b.column_names}"
    assert a.num_rows == b.num_rows, f"{what}: {a.num_rows} rows != {b.num_rows}"
    for name in a.column_names:
        ca, cb = a[name], b[name]
        assert ca.type == cb.type, f"{what}: {name}: type {ca.type} != {cb.type}"
        if pa.types.is_floating(ca.type):
            _float_column(name, ca, cb, ulps, what)
        else:
            assert ca.to_pylist() == cb.to_pylist(), f"{what}: {name} differs"
