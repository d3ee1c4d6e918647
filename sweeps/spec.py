"""The TOML sweep spec (SCHEMA.md "Sweep spec"): parsing, validation, canonical form and hash.

A spec file looks like::

    name = "tdx-kexec"            # [a-z0-9_-]+
    seed = 20250616               # uint64
    trials = 1_000_000            # per point (an integral float such as 1e6 is accepted too),
                                  # or "auto" with a [precision] table (sweeps.precision)
    shard_trials = 100_000        # default 100_000; shards per point = ceil(trials / shard_trials)
    estimator = "naive"           # "naive" (default) or "cmc"
    task_seconds = 2.0            # default 2.0; target run time of one task (sweeps.grid)

    [base]                        # fixed parameters (core.params / MODEL.md)
    wait = 1

    [axes]                        # every combination is one point
    n_cpus = [8, 32, 128, 512]
    wbinvd_us = { logspace = [100, 100000], num = 7 }
    ipi_jitter_us = { linspace = [0, 50], num = 6 }
    # n_cpus = { range = [8, 64, 8] } would be 8, 16, ..., 56 (integers only, stop excluded)

Axis forms and how they expand (all deterministic, pure Python floats):

- list: the values as given, in the given order; a value repeated (after
  validation, e.g. ``1`` and ``1.0``) is an error.
- ``{ linspace = [a, b], num = k }``: ``a + (b - a) * i / (k - 1)`` for i = 0..k-1,
  with the last value exactly ``b``; ``k = 1`` gives ``[a]``.
- ``{ logspace = [a, b], num = k }``: a and b are *values*, not exponents, both
  > 0: ``10 ** (log10(a) + (log10(b) - log10(a)) * i / (k - 1))`` with the first
  and last values exactly ``a`` and ``b`` (so ``[100, 100000], num = 4`` is
  exactly ``100, 1000, 10000, 100000``).
- ``{ range = [a, b, step] }`` (or ``[a, b]`` with step 1), integer parameters
  only: Python's ``range(a, b, step)``: a included, b excluded.

Integer parameters (kind "int" in core.params: ``n_cpus``, ``wait``) from linspace/logspace are rounded half
up (``floor(x + 0.5)``) and then de-duplicated keeping the first occurrence, so
an axis may have fewer than ``num`` values; float axes from linspace/logspace
are de-duplicated the same way (only matters for ``a == b``).

Canonical form: ``base`` holds *every* parameter that is not an axis, with the
defaults of core.params filled in (so writing a default explicitly does not
change the hash), and axes are expanded to value lists and ordered by the
model's parameter order (core.params.PARAM_NAMES), not by their order in the
TOML file. The first axis varies slowest. Hence neither key order nor the
axis form used changes the spec hash, the point order or the task ids. A
parameter added after the first release is left out of the canonical form (and
spec.toml) while it has its neutral value (core.params.NEUTRAL), so adding one
changes no spec hash.

Every error is a SpecError (a StopraceError) with one line naming the file, the
field, the offending value and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import ParamError, StopraceError
from core.estimators import DEFAULT_ESTIMATOR
from core.estimators import ESTIMATORS as _ESTIMATOR_REGISTRY
from core.params import DEFAULTS, PARAM_NAMES, SPECS, domain, is_neutral, make_params, suggest
from core.precision import Precision

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "SpecError",
    "Axis",
    "SweepSpec",
    "load_spec",
    "parse_spec",
    "MAX_POINTS",
    "DEFAULT_SHARD_TRIALS",
    "DEFAULT_TASK_SECONDS",
    "ESTIMATORS",
    "TOP_LEVEL_KEYS",
]

MAX_POINTS = 10_000_000
"""More points than this is refused unless force=True."""
DEFAULT_SHARD_TRIALS = 100_000
DEFAULT_TASK_SECONDS = 2.0
ESTIMATORS: tuple[str, ...] = tuple(_ESTIMATOR_REGISTRY)
"""Names of the estimators a spec may ask for (core.estimators is the registry)."""
MAX_TRIALS = 10**15
"""Upper bound of trials/shard_trials (int64 columns; far beyond anything runnable)."""
UINT64_MAX = 2**64 - 1
SPEC_FORMAT = 1
"""Version of the canonical form; part of the hash."""

TOP_LEVEL_KEYS: tuple[str, ...] = (
    "name", "seed", "trials", "shard_trials", "estimator", "task_seconds", "base", "axes", "precision",
    "search",
)
_REQUIRED = ("name", "seed", "trials")
_NAME_RE = re.compile(r"[a-z0-9_-]+")
_AXIS_FORMS = ("linspace", "logspace", "range")


class SpecError(StopraceError):
    """A bad sweep spec; the message is one line naming the file, field and value."""


class Axis(BaseModel):
    """One swept parameter with its fully expanded, validated, canonical values."""

    model_config = ConfigDict(frozen=True)

    name: str
    values: tuple[Any, ...]


class SweepSpec(BaseModel):
    """A validated sweep spec in canonical form (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    seed: int = Field(ge=0, le=UINT64_MAX)
    trials: int = Field(ge=1, le=MAX_TRIALS)
    shard_trials: int = Field(DEFAULT_SHARD_TRIALS, ge=1, le=MAX_TRIALS)
    estimator: str = DEFAULT_ESTIMATOR
    """A name in core.estimators.ESTIMATORS."""
    task_seconds: float = Field(DEFAULT_TASK_SECONDS, gt=0, allow_inf_nan=False)
    base: dict[str, Any]
    """Every non-axis parameter (defaults filled in), canonical types, PARAM_NAMES order."""
    axes: tuple[Axis, ...] = ()
    """Swept parameters in PARAM_NAMES order; the first varies slowest."""
    precision: Precision | None = None
    """`trials = "auto"`: the stop rule (sweeps.precision); `trials` is then its max_trials."""
    search: Any = None
    """`[search]`: bisection on n_cpus (sweeps.precision.Search, run by sweeps.search), or None."""

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, v: str) -> str:
        if v not in _ESTIMATOR_REGISTRY:
            raise ValueError(f"estimator = {v!r} is not allowed: one of {', '.join(_ESTIMATOR_REGISTRY)}")
        return v

    # ---- derived -------------------------------------------------------------------
    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def n_points(self) -> int:
        return math.prod(len(a.values) for a in self.axes)

    @property
    def n_shards_per_point(self) -> int:
        return -(-self.trials // self.shard_trials)

    def shard_size(self, k: int) -> int:
        """Trials in shard k of a point (the last shard may be smaller)."""
        n = self.n_shards_per_point
        if not 0 <= k < n:
            raise IndexError(f"shard {k} out of range 0..{n - 1}")
        return min(self.shard_trials, self.trials - k * self.shard_trials)

    def shard_sizes(self) -> list[int]:
        """Trials per shard of one point: shard_trials each, the last one possibly smaller."""
        n = self.n_shards_per_point
        last = self.trials - (n - 1) * self.shard_trials
        return [self.shard_trials] * (n - 1) + [last]

    def canonical_obj(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "name": self.name,
            "seed": self.seed,
            "trials": self.trials,
            "shard_trials": self.shard_trials,
            "estimator": self.estimator,
            "task_seconds": self.task_seconds,
            "base": self.identity_base(),
            # a list, not an object: the axis order is the iteration order
            "axes": [[a.name, list(a.values)] for a in self.axes],
        } | self._precision_obj()

    def _precision_obj(self) -> dict[str, Any]:
        """Adaptive specs only (a fixed-trials spec's canonical form is unchanged)."""
        if self.precision is None:
            return {}
        obj: dict[str, Any] = {"trials": "auto", "precision": self.precision.canonical_obj()}
        if self.search is not None:
            obj["search"] = self.search.canonical_obj()
        return obj

    def identity_base(self) -> dict[str, Any]:
        """`base` without later-added parameters at their neutral value (the hashed, written part)."""
        return {k: v for k, v in self.base.items() if not is_neutral(k, v)}

    def canonical_json(self) -> str:
        """Sorted-key compact JSON of the canonical spec; floats in repr form."""
        return json.dumps(self.canonical_obj(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @property
    def spec_hash(self) -> str:
        """SHA-256 hex digest of canonical_json() (recomputed each time: model_copy stays correct)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def to_toml(self) -> str:
        """The canonical spec.toml: parses back (parse_spec) to an equal spec."""
        lines = [
            "# stoprace sweep spec, canonical form (axes expanded, defaults filled in).",
            f"# spec_hash = {self.spec_hash}",
            f"# points = {self.n_points}, shards per point = {self.n_shards_per_point}",
            f"name = {_toml_value(self.name)}",
            f"seed = {self.seed}",
            "trials = \"auto\"" if self.precision is not None else f"trials = {self.trials}",
            f"shard_trials = {self.shard_trials}",
            f"estimator = {_toml_value(self.estimator)}",
            f"task_seconds = {_toml_value(self.task_seconds)}",
            "",
            "[base]",
        ]
        lines += [f"{k} = {_toml_value(v)}" for k, v in self.identity_base().items()]
        lines += ["", "[axes]"]
        for a in self.axes:
            vals = [_toml_value(v) for v in a.values]
            if len(vals) <= 8:
                lines.append(f"{a.name} = [{', '.join(vals)}]")
            else:
                lines.append(f"{a.name} = [")
                lines += ["    " + ", ".join(vals[i : i + 8]) + "," for i in range(0, len(vals), 8)]
                lines.append("]")
        if self.precision is not None:
            from sweeps.precision import precision_toml, search_toml

            lines += ["", *precision_toml(self.precision)]
            if self.search is not None:
                lines += ["", *search_toml(self.search)]
        return "\n".join(lines) + "\n"


# ---- parsing ---------------------------------------------------------------------------


def load_spec(path: str | Path, force: bool = False) -> SweepSpec:
    """Read and validate a TOML spec file; SpecError (one line) on any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{p}: is a directory, expected a TOML spec file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: cannot read spec: {_one_line(e)}") from None
    return parse_spec(text, where=str(p), force=force)


def parse_spec(text_or_dict: str | bytes | Mapping[str, Any], where: str = "spec", force: bool = False) -> SweepSpec:
    """Validate a spec given as TOML text or as an already-parsed dict.

    More than MAX_POINTS points is refused unless force=True.
    """
    if isinstance(text_or_dict, bytes):
        try:
            text_or_dict = text_or_dict.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SpecError(f"{where}: not UTF-8 text: {_one_line(e)}") from None
    if isinstance(text_or_dict, str):
        try:
            raw: Mapping[str, Any] = tomllib.loads(text_or_dict)
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"{where}: invalid TOML: {_one_line(e)}") from None
    elif isinstance(text_or_dict, Mapping):
        raw = text_or_dict
    else:
        raise SpecError(f"{where}: expected TOML text or a dict, got {type(text_or_dict).__name__}")
    return _Parser(where, force).parse(raw)


class _Parser:
    def __init__(self, where: str, force: bool) -> None:
        self.where = where
        self.force = force

    def err(self, msg: str) -> SpecError:
        return SpecError(f"{self.where}: {msg}")

    # ---- top level -------------------------------------------------------------------
    def parse(self, raw: Mapping[str, Any]) -> SweepSpec:
        for key in raw:
            if key not in TOP_LEVEL_KEYS:
                raise self.err(self._unknown_top(str(key)))
        for key in _REQUIRED:
            if key not in raw:
                raise self.err(f"missing required key '{key}' (top-level keys: {', '.join(TOP_LEVEL_KEYS)})")

        name = raw["name"]
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise self.err(f"name = {name!r} is not allowed: a non-empty string of [a-z0-9_-]")
        seed = raw["seed"]
        if not _is_int(seed) or not 0 <= seed <= UINT64_MAX:
            raise self.err(f"seed = {seed!r} is not allowed: an integer in [0, 2**64 - 1]")
        shard_trials = self._count("shard_trials", raw.get("shard_trials", DEFAULT_SHARD_TRIALS))
        precision = self._precision(raw, shard_trials)
        trials = precision.max_trials if precision is not None else self._count("trials", raw["trials"])
        estimator = raw.get("estimator", DEFAULT_ESTIMATOR)
        if not isinstance(estimator, str) or estimator not in ESTIMATORS:
            raise self.err(f"estimator = {estimator!r} is not allowed: one of {', '.join(ESTIMATORS)}")
        ts = raw.get("task_seconds", DEFAULT_TASK_SECONDS)
        if not _is_number(ts) or not math.isfinite(_float(ts)) or ts <= 0:
            raise self.err(f"task_seconds = {ts!r} is not allowed: a finite number > 0")

        base_raw = self._table("base", raw.get("base", {}))
        axes_raw = self._table("axes", raw.get("axes", {}))
        for key in base_raw:
            if key not in PARAM_NAMES:
                raise self.err(f"base: unknown parameter '{key}'{suggest(str(key))}")
        for key in axes_raw:
            if key not in PARAM_NAMES:
                raise self.err(f"axes: unknown parameter '{key}'{suggest(str(key))}")
        for key in base_raw:
            if key in axes_raw:
                raise self.err(f"parameter '{key}' is in both [base] and [axes]; put it in one of them")

        base_given = {k: self._scalar(f"base.{k}", k, v) for k, v in base_raw.items()}
        # validate the base values together (also catches anything cross-field in the future)
        try:
            make_params(base_given, where=f"{self.where}: base")
        except ParamError as e:
            raise SpecError(str(e)) from None

        ordered_axes = [k for k in PARAM_NAMES if k in axes_raw]
        # bound the size before expanding anything
        sizes = {k: self._axis_len_bound(k, axes_raw[k]) for k in ordered_axes}
        bound = math.prod(sizes.values())
        if bound > MAX_POINTS and not self.force:
            self._too_many(bound, sizes)
        axes = tuple(Axis.model_construct(name=k, values=self._axis(k, axes_raw[k])) for k in ordered_axes)
        n_points = math.prod(len(a.values) for a in axes)
        if n_points > MAX_POINTS and not self.force:  # pragma: no cover - bound is exact or larger
            self._too_many(n_points, {a.name: len(a.values) for a in axes})

        base = {k: base_given.get(k, SPECS[k].canon(DEFAULTS[k])) for k in PARAM_NAMES if k not in axes_raw}
        return SweepSpec(
            name=name,
            seed=int(seed),
            trials=trials,
            shard_trials=shard_trials,
            estimator=estimator,
            task_seconds=float(ts),
            base=base,
            axes=axes,
            precision=precision,
            search=self._search(raw, precision, axes_raw, base_raw),
        )

    def _search(self, raw: Mapping[str, Any], precision: Precision | None, axes: Mapping[str, Any], base: Mapping[str, Any]):
        """`[search]` (sweeps.precision.parse_search), else None."""
        if "search" not in raw:
            return None
        from sweeps.precision import parse_search

        try:
            return parse_search(raw["search"], precision, axes, base, self.where)
        except ValueError as e:
            raise SpecError(str(e)) from None

    def _precision(self, raw: Mapping[str, Any], shard_trials: int) -> Precision | None:
        """`trials = "auto"` with its [precision] table (sweeps.precision), else None."""
        from sweeps.precision import parse_precision

        if raw["trials"] != "auto":
            if isinstance(raw["trials"], str):
                raise self.err(f"trials = {raw['trials']!r} is not allowed: an integer in [1, 10**15] or \"auto\"")
            if "precision" in raw:
                raise self.err('[precision] needs trials = "auto" (it sets the trials per point)')
            return None
        try:
            return parse_precision(raw.get("precision"), shard_trials, self.where)
        except ValueError as e:
            raise SpecError(str(e)) from None

    def _unknown_top(self, key: str) -> str:
        if key in PARAM_NAMES:
            return f"unknown top-level key '{key}': model parameters go under [base] or [axes]"
        close = difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=1, cutoff=0.6)
        if close:
            hint = f" (did you mean '{close[0]}'?)"
        else:
            param = suggest(key)
            hint = f"{param[:-2]} under [base] or [axes]?)" if param else ""
        return f"unknown top-level key '{key}'{hint}; allowed: {', '.join(TOP_LEVEL_KEYS)}"

    def _too_many(self, n: int, sizes: Mapping[str, int]) -> None:
        detail = " x ".join(f"{k}:{v}" for k, v in sizes.items())
        raise self.err(f"axes make {n:,} points ({detail}), more than {MAX_POINTS:,}; use force=True (--force) to run it anyway")

    def _count(self, key: str, v: Any) -> int:
        if _is_int(v):
            iv = int(v)
        elif isinstance(v, float) and math.isfinite(v) and v.is_integer():
            iv = int(v)
        else:
            iv = None
        if iv is None or not 1 <= iv <= MAX_TRIALS:
            raise self.err(f"{key} = {v!r} is not allowed: an integer in [1, 10**15]")
        return iv

    def _table(self, key: str, v: Any) -> Mapping[str, Any]:
        if not isinstance(v, Mapping):
            raise self.err(f"{key} = {v!r} is not allowed: [{key}] must be a table of parameter = value")
        return v

    # ---- values ----------------------------------------------------------------------
    def _scalar(self, loc: str, name: str, v: Any) -> Any:
        """Type-check one parameter value and return it in canonical type (domain checked later)."""
        bad = SpecError(f"{self.where}: {loc}: {name} = {v!r} is not allowed: {domain(name)}")
        kind = SPECS[name].kind
        if kind == "str":
            if not isinstance(v, str):
                raise bad
            return v
        if not _is_number(v):
            raise bad
        if kind == "int":
            if isinstance(v, float):
                if not (math.isfinite(v) and v.is_integer()):
                    raise bad
                return int(v)
            return int(v)
        f = _float(v)
        if not math.isfinite(f) and isinstance(v, int):
            raise bad
        return f + 0.0  # + 0.0 turns -0.0 into 0.0

    def _check(self, loc: str, name: str, v: Any) -> None:
        """Domain-check one canonical value of `name` with every other parameter at its default."""
        try:
            make_params({name: v}, where=f"{self.where}: {loc}")
        except ParamError as e:
            raise SpecError(str(e)) from None

    def _axis_form(self, name: str, spec: Mapping[str, Any]) -> tuple[str, Any]:
        keys = set(spec)
        forms = [f for f in _AXIS_FORMS if f in keys]
        if len(forms) != 1:
            raise self.err(
                f"axes.{name} = {dict(spec)!r} is not allowed: a list or a table with exactly one of "
                "linspace = [a, b], logspace = [a, b] (with num = k), or range = [a, b, step]"
            )
        form = forms[0]
        allowed = {form, "num"} if form != "range" else {"range"}
        extra = sorted(keys - allowed)
        if extra:
            raise self.err(f"axes.{name}: unknown key '{extra[0]}' in a {form} axis (allowed: {', '.join(sorted(allowed))})")
        return form, spec[form]

    def _num(self, name: str, spec: Mapping[str, Any], form: str) -> int:
        if "num" not in spec:
            raise self.err(f"axes.{name}: {form} needs num = <number of values>, e.g. {{ {form} = [a, b], num = 5 }}")
        k = spec["num"]
        if not _is_int(k) or k < 1:
            raise self.err(f"axes.{name}.num = {k!r} is not allowed: an integer >= 1")
        return int(k)

    def _ends(self, name: str, form: str, ab: Any) -> tuple[float, float]:
        if not isinstance(ab, list) or len(ab) != 2 or not all(_is_number(x) for x in ab):
            raise self.err(f"axes.{name}.{form} = {ab!r} is not allowed: two numbers [a, b]")
        a, b = _float(ab[0]), _float(ab[1])
        if not (math.isfinite(a) and math.isfinite(b)):
            raise self.err(f"axes.{name}.{form} = {ab!r} is not allowed: finite numbers")
        if form == "logspace" and not (a > 0 and b > 0):
            raise self.err(f"axes.{name}.logspace = {ab!r} is not allowed: both ends must be > 0 (they are values, not exponents)")
        return a, b

    def _range_args(self, name: str, r: Any) -> tuple[int, int, int]:
        if SPECS[name].kind != "int":
            ints = sorted(n for n, s in SPECS.items() if s.kind == "int")
            raise self.err(
                f"axes.{name}: range is only for integer parameters ({', '.join(ints)}); "
                "use linspace or logspace"
            )
        if not isinstance(r, list) or len(r) not in (2, 3) or not all(_is_int(x) for x in r):
            raise self.err(f"axes.{name}.range = {r!r} is not allowed: integers [a, b] or [a, b, step] (b excluded)")
        a, b, step = (int(r[0]), int(r[1]), int(r[2]) if len(r) == 3 else 1)
        if step == 0:
            raise self.err(f"axes.{name}.range = {r!r} is not allowed: step must not be 0")
        return a, b, step

    def _axis_len_bound(self, name: str, spec: Any) -> int:
        """Number of values before de-duplication, without expanding (for the points bound)."""
        if isinstance(spec, list):
            return len(spec)
        if isinstance(spec, Mapping):
            form, arg = self._axis_form(name, spec)
            if form == "range":
                return len(range(*self._range_args(name, arg)))
            return self._num(name, spec, form)
        raise self.err(
            f"axes.{name} = {spec!r} is not allowed: a list of values or "
            "{ linspace|logspace = [a, b], num = k } or { range = [a, b, step] }; fixed values go in [base]"
        )

    def _axis(self, name: str, spec: Any) -> tuple[Any, ...]:
        if isinstance(spec, list):
            if not spec:
                raise self.err(f"axes.{name} = [] is empty: give at least one value")
            vals = []
            seen: dict[Any, int] = {}
            for i, v in enumerate(spec):
                loc = f"axes.{name}[{i}]"
                cv = self._scalar(loc, name, v)
                self._check(loc, name, cv)
                if cv in seen:
                    raise self.err(f"{loc} = {v!r} repeats axes.{name}[{seen[cv]}]: each value may appear once")
                seen[cv] = i
                vals.append(cv)
            return tuple(vals)

        form, arg = self._axis_form(name, spec)
        if form == "range":
            r = range(*self._range_args(name, arg))
            if len(r) == 0:
                raise self.err(f"axes.{name}.range = {arg!r} is empty (Python range: a included, b excluded)")
            self._check(f"axes.{name}.range", name, r[0])
            self._check(f"axes.{name}.range", name, r[-1])
            return tuple(r)

        if SPECS[name].kind == "str":
            raise self.err(f"axes.{name}: {form} needs a numeric parameter; give a list of values ({domain(name)})")
        k = self._num(name, spec, form)
        a, b = self._ends(name, form, arg)
        rnd = (lambda x: math.floor(x + 0.5)) if SPECS[name].kind == "int" else (lambda x: x + 0.0)
        # values are monotone between the two ends and every domain is an interval,
        # so checking the (rounded) ends checks them all
        self._check(f"axes.{name}.{form}", name, rnd(a))
        self._check(f"axes.{name}.{form}", name, rnd(b))
        vals = [rnd(x) for x in (_linspace(a, b, k) if form == "linspace" else _logspace(a, b, k))]
        if not all(map(math.isfinite, vals)):  # pragma: no cover - ends are finite and in domain
            raise self.err(f"axes.{name}.{form} = {arg!r}: values overflow")
        return tuple(dict.fromkeys(vals))


def _linspace(a: float, b: float, k: int) -> list[float]:
    if k == 1:
        return [a]
    out = [a + (b - a) * i / (k - 1) for i in range(k)]
    out[-1] = b
    return out


def _logspace(a: float, b: float, k: int) -> list[float]:
    if k == 1:
        return [a]
    la, lb = math.log10(a), math.log10(b)
    out = [10.0 ** (la + (lb - la) * i / (k - 1)) for i in range(k)]
    out[0], out[-1] = a, b
    return out


# ---- helpers ---------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _float(v: int | float) -> float:
    """float(v), with ints too large for a float giving inf instead of OverflowError."""
    try:
        return float(v)
    except OverflowError:
        return math.inf


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):  # pragma: no cover - no bool parameters
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write non-finite {v!r} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a valid TOML basic string for our ASCII names
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
