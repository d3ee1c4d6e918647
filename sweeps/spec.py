"""The TOML sweep spec (SCHEMA.md "Sweep spec"): parsing, validation, canonical form and hash.

A spec file looks like::

    name = "tdx-kexec"            # [a-z0-9_-]+
    seed = 20250616               # uint64
    trials = 1_000_000            # per point (an integral float such as 1e6 is accepted too),
                                  # or "auto" with a [precision] table (sweeps.precision)
    shard_trials = 100_000        # default 100_000; shards per point = ceil(trials / shard_trials)
    estimator = "naive"           # "naive" (default), "cmc" or "late" (core.estimators)
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
parameter added after the first release is left out of the hashed canonical form
while it has its neutral value (core.params.NEUTRAL), so adding one changes no
spec hash; spec.toml leaves it out too, except a parameter whose default is not
its neutral value (`model_rev`: default 2, neutral 1), which spec.toml always
writes.

Reading a spec that leaves a parameter out (``stored``): a user's spec gets the
default (``model_rev = 2``); the spec.toml of a result set gets the neutral value
(core.params.STORED_DEFAULTS: ``model_rev = 1``, since a set stored before
``model_rev`` existed holds revision 1 and its spec.toml cannot say so). Every
canonical spec.toml written since names ``model_rev``, so it reads the same both
ways. To resume a set stored before ``model_rev`` existed, a spec must pin
``model_rev = 1`` (its hash is then the stored one); ``resume_refusal`` (sweeps.store)
says so in one line otherwise.

Validation is one pass of pydantic models over the spec as written
(sweeps.spec_input: the field types, what each allows, the axis forms each
parameter kind admits); `SweepSpec` below is the canonical value it produces.
Every error is a SpecError (a StopraceError) with one line naming the file, the
field, the offending value and what is allowed, e.g.
``spec.toml: axes.n_cpus[1] = 1 is not allowed: integer in [2, 65536]``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import StopraceError
from core.estimators import ESTIMATORS as _ESTIMATOR_REGISTRY
from core.params import NOT_NEUTRAL_BY_DEFAULT, is_neutral
from core.precision import Precision
from sweeps.precision import Search, precision_toml, search_toml
from sweeps.spec_input import (
    DEFAULT_SHARD_TRIALS,
    DEFAULT_TASK_SECONDS,
    MAX_POINTS,
    MAX_TRIALS,
    TOP_LEVEL_KEYS,
    SpecInput,
    one_line,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "SpecError",
    "Axis",
    "SweepSpec",
    "load_spec",
    "read_spec_file",
    "MAX_SPEC_BYTES",
    "parse_spec",
    "MAX_POINTS",
    "MAX_TRIALS",
    "DEFAULT_SHARD_TRIALS",
    "DEFAULT_TASK_SECONDS",
    "ESTIMATORS",
    "TOP_LEVEL_KEYS",
]

ESTIMATORS: tuple[str, ...] = tuple(_ESTIMATOR_REGISTRY)
"""Names of the estimators a spec may ask for (core.estimators is the registry)."""
SPEC_FORMAT = 1
"""Version of the canonical form; part of the hash."""


class SpecError(StopraceError):
    """A bad sweep spec; the message is one line naming the file, field and value."""


class Axis(BaseModel):
    """One swept parameter with its fully expanded, validated, canonical values."""

    model_config = ConfigDict(frozen=True)

    name: str
    values: tuple[Any, ...]


class SweepSpec(BaseModel):
    """A validated sweep spec in canonical form (see the module docstring).

    A value object: parse_spec/load_spec build it from sweeps.spec_input.SpecInput, the one
    place a spec is validated; it is not validated again here.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    seed: int
    trials: int
    """Per point; with `precision`, its max_trials."""
    shard_trials: int = DEFAULT_SHARD_TRIALS
    estimator: str
    """A name in core.estimators.ESTIMATORS."""
    task_seconds: float = DEFAULT_TASK_SECONDS
    base: dict[str, Any]
    """Every non-axis parameter (defaults filled in), canonical types, PARAM_NAMES order."""
    axes: tuple[Axis, ...] = ()
    """Swept parameters in PARAM_NAMES order; the first varies slowest."""
    precision: Precision | None = None
    """`trials = "auto"`: the stop rule (core.precision); `trials` is then its max_trials."""
    search: Search | None = None
    """`[search]`: bisection on n_cpus (run by sweeps.search), or None."""

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
        """`base` without later-added parameters at their neutral value (the hashed part)."""
        return {k: v for k, v in self.base.items() if not is_neutral(k, v)}

    def written_base(self) -> dict[str, Any]:
        """`base` as spec.toml writes it: `identity_base`, plus every parameter whose default is not
        its neutral value (core.params.NOT_NEUTRAL_BY_DEFAULT: `model_rev`) even at its neutral value,
        so that spec.toml reads the same as a user's spec and as a stored one."""
        return {k: v for k, v in self.base.items() if not is_neutral(k, v) or k in NOT_NEUTRAL_BY_DEFAULT}

    def with_base(self, **values: Any) -> "SweepSpec":
        """This spec with the given [base] parameters replaced (each must be in `base`, not an axis)."""
        missing = [k for k in values if k not in self.base]
        if missing:
            raise KeyError(f"not [base] parameters of this spec: {', '.join(missing)}")
        return self.model_copy(update={"base": {**self.base, **values}})

    def canonical_json(self) -> str:
        """Sorted-key compact JSON of the canonical spec; floats in repr form."""
        return json.dumps(self.canonical_obj(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @property
    def spec_hash(self) -> str:
        """SHA-256 hex digest of canonical_json() (recomputed each time: model_copy stays correct)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def to_toml(self) -> str:
        """The canonical spec.toml: parses back (parse_spec, as a user's spec or as a stored one) to an
        equal spec."""
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
        lines += [f"{k} = {_toml_value(v)}" for k, v in self.written_base().items()]
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
            lines += ["", *precision_toml(self.precision)]
            if self.search is not None:
                lines += ["", *search_toml(self.search)]
        return "\n".join(lines) + "\n"


# ---- parsing ---------------------------------------------------------------------------


MAX_SPEC_BYTES = 4 << 20
"""A spec file larger than this is refused (a spec is a few KiB even with long explicit axis lists)."""

_UTF8_BOM = "\ufeff"
_FOREIGN_BOMS = {b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def read_spec_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a spec file; SpecError (one line) unless it is a regular file of at most MAX_SPEC_BYTES.

    A directory, device, FIFO or socket is refused by what it is, before it is read (a FIFO or a
    character device could block or never end); the read itself is bounded too.
    """
    p = Path(path)
    try:
        kind = _kind(os.stat(p).st_mode)
        if kind is not None:
            raise SpecError(f"{p}: is {kind}, expected a TOML spec file")
        # O_NONBLOCK: if the path became a FIFO since the stat, opening it does not wait for a writer
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise SpecError(f"{p}: no such spec file") from None
    except OSError as e:
        raise SpecError(f"{p}: cannot read spec: {_one_line(e)}") from None
    with os.fdopen(fd, "rb") as f:
        kind = _kind(os.fstat(f.fileno()).st_mode)
        if kind is not None:
            raise SpecError(f"{p}: is {kind}, expected a TOML spec file")
        try:
            data = f.read(MAX_SPEC_BYTES + 1)
        except OSError as e:
            raise SpecError(f"{p}: cannot read spec: {_one_line(e)}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{p}: larger than {MAX_SPEC_BYTES >> 20} MiB, not a spec file")
    return data


def load_spec(path: str | os.PathLike[str], force: bool = False, stored: bool = False) -> SweepSpec:
    """Read and validate a TOML spec file; SpecError (one line) on any problem. `stored`: the file is a
    result set's spec.toml (a parameter it leaves out is neutral, see the module docstring)."""
    return parse_spec(read_spec_file(path), where=str(Path(path)), force=force, stored=stored)


def parse_spec(
    text_or_dict: str | bytes | Mapping[str, Any], where: str = "spec", force: bool = False, stored: bool = False
) -> SweepSpec:
    """Validate a spec given as TOML text or as an already-parsed dict.

    More than MAX_POINTS points is refused unless force=True. `stored`: read it as a result set's
    spec.toml, where a parameter left out is neutral (`model_rev = 1`), not the default (2).
    """
    if isinstance(text_or_dict, bytes):
        bom = next((name for b, name in _FOREIGN_BOMS.items() if text_or_dict.startswith(b)), None)
        if bom:
            raise SpecError(f"{where}: is {bom} text (it starts with a {bom} byte-order mark); save it as UTF-8")
        try:
            text_or_dict = text_or_dict.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SpecError(f"{where}: not UTF-8 text: {_one_line(e)}") from None
    if isinstance(text_or_dict, str):
        # a UTF-8 byte-order mark (editors on Windows write one) is not part of the TOML
        text_or_dict = text_or_dict.removeprefix(_UTF8_BOM)
        _check_key_depth(text_or_dict, where)
        try:
            raw: Mapping[str, Any] = tomllib.loads(text_or_dict)
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"{where}: invalid TOML: {_one_line(e)}") from None
        except RecursionError:  # [[[[...]]]] or {a = {a = ...}} thousands deep
            raise SpecError(f"{where}: invalid TOML: arrays or tables nested too deeply") from None
        except ValueError:  # an integer of thousands of digits (Python's int/str conversion limit)
            raise SpecError(f"{where}: invalid TOML: an integer of thousands of digits") from None
    elif isinstance(text_or_dict, Mapping):
        raw = text_or_dict
    else:
        raise SpecError(f"{where}: expected TOML text or a dict, got {type(text_or_dict).__name__}")
    try:
        fields = SpecInput.model_validate(dict(raw), context={"force": force, "stored": stored}).canonical
    except ValidationError as e:
        raise SpecError(f"{where}: {one_line(e)}") from None
    except RecursionError:
        raise SpecError(f"{where}: values nested too deeply") from None
    axes = tuple(Axis.model_construct(name=k, values=v) for k, v in fields.pop("axes"))
    return SweepSpec.model_construct(axes=axes, **fields)


# ---- helpers ---------------------------------------------------------------------------

MAX_KEY_DOTS = 32
"""Dots of dotted keys one line may hold (a spec's keys are at most 2 deep). tomllib spends time and
memory quadratic in a dotted key's depth: `a.a.a...` 100,000 deep (200 KB) takes tens of GB."""


def _check_key_depth(text: str, where: str) -> None:
    """SpecError if a line has more than MAX_KEY_DOTS dots outside strings that are not decimal points
    (a key or a table header can span one line only, so this bounds every dotted key's depth)."""
    for n, line in enumerate(text.splitlines(), 1):
        if line.count(".") <= MAX_KEY_DOTS:
            continue
        dots, quote, i = 0, "", 0
        while i < len(line):
            c = line[i]
            if quote:
                if c == "\\" and quote == '"':
                    i += 1
                elif c == quote:
                    quote = ""
            elif c in "\"'":
                quote = c
            elif c == "#":
                break
            elif c == "." and not (0 < i < len(line) - 1 and line[i - 1].isdigit() and line[i + 1].isdigit()):
                dots += 1
            i += 1
        if dots > MAX_KEY_DOTS:
            raise SpecError(f"{where}: line {n}: a key nested more than {MAX_KEY_DOTS} deep (a.b.c...); "
                            "a spec's keys are at most [section] key")


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
