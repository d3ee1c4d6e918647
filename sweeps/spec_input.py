"""The sweep spec as written (TOML or JSON), validated in one pass by pydantic models.

This is the only validation path of a spec (sweeps.spec turns its result into the
canonical `SweepSpec`). The shape of a spec is declared here as types; what each
field allows is written once, next to the field, as the text of its error
(`allowed("...")`); parameter values take their type and domain from
core.params (`ParamSpec.written`), so a new parameter needs nothing here.

Errors: `one_line(err)` turns the first problem of a pydantic ValidationError into
one line naming the field, the value and what is allowed, e.g.
``axes.n_cpus[1] = 1 is not allowed: integer in [2, 65536]``. Two custom error
types carry our own texts through pydantic:

- `not_allowed(text)` -> ``<field> = <value> is not allowed: <text>``
- `problem(text)`      -> ``<field>: <text>`` (or the text alone at the top level)

Expansion rules of the axis forms are in sweeps.spec's docstring (SCHEMA.md).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from annotated_types import Ge, Gt, Interval
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Strict,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from core.errors import ParamError
from core.estimators import DEFAULT_ESTIMATOR, ESTIMATORS
from core.params import (
    DEFAULTS,
    MAX_CPUS,
    PARAM_NAMES,
    PARAM_SPECS,
    SPECS,
    STORED_DEFAULTS,
    ParamSpec,
    integral,
    make_params,
    suggest,
)
from core.precision import METRICS, Precision
from sweeps.precision import Search

__all__ = [
    "DEFAULT_SHARD_TRIALS",
    "DEFAULT_TASK_SECONDS",
    "MAX_POINTS",
    "MAX_TRIALS",
    "SearchInput",
    "SpecInput",
    "TOP_LEVEL_KEYS",
    "one_line",
]

MAX_POINTS = 10_000_000
"""More points than this is refused unless force=True."""
DEFAULT_SHARD_TRIALS = 100_000
DEFAULT_TASK_SECONDS = 2.0
MAX_TRIALS = 10**15
"""Upper bound of trials/shard_trials (int64 columns; far beyond anything runnable)."""
UINT64_MAX = 2**64 - 1
AXIS_FORMS: tuple[str, ...] = ("linspace", "logspace", "range")

# ---- the two custom errors and the one-line rendering ------------------------------------


def not_allowed(text: str) -> PydanticCustomError:
    """The value at this field is refused: ``<field> = <value> is not allowed: <text>``."""
    return PydanticCustomError("not_allowed", "{allowed}", {"allowed": text})


def problem(text: str) -> PydanticCustomError:
    """Anything else, said in full: ``<field>: <text>``."""
    return PydanticCustomError("problem", "{text}", {"text": text})


def allowed(text: str) -> WrapValidator:
    """Annotation: any failure of the wrapped type reads `not_allowed(text)`; `text` is what
    the field allows, written once beside the field (constraints-as-data, like numpy.random's
    check_constraint table)."""

    def wrap(v: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(v)
        except ValidationError:
            raise not_allowed(text) from None

    return WrapValidator(wrap)


def one_line(err: ValidationError) -> str:
    """The first problem of `err` (unknown keys first, as a reader fixes those first) as one line."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    e = errors[0]
    loc = tuple(e["loc"])
    if loc[:1] == ("axes",) and len(loc) > 2:
        loc = loc[:2] + loc[3:]  # drop the axis form's union tag
    at = _dotted(loc)
    kind = e["type"]
    if kind == "not_allowed":
        return f"{at} = {e['input']!r} is not allowed: {e['ctx']['allowed']}"
    if kind == "problem":
        return f"{at}: {e['ctx']['text']}" if at else str(e["ctx"]["text"])
    parent, key = _dotted(loc[:-1]), str(loc[-1])
    if kind == "extra_forbidden":
        return _unknown(parent, key, tuple(e["loc"]))
    if kind == "missing":
        keys = ", ".join(TOP_LEVEL_KEYS) if not parent else ", ".join(_model_at(tuple(e["loc"])[:-1]).model_fields)
        return f"{parent + ': ' if parent else ''}missing required key '{key}' (keys: {keys})"
    return f"{at} = {e.get('input')!r} is not allowed: {e['msg']}"  # pragma: no cover - every field says


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unknown(parent: str, key: str, raw_loc: tuple[Any, ...]) -> str:
    if not parent:
        if key in PARAM_NAMES:
            return f"unknown top-level key '{key}': model parameters go under [base] or [axes]"
        close = difflib.get_close_matches(key, TOP_LEVEL_KEYS, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else (f"{suggest(key)[:-2]} under [base] or [axes]?)" if suggest(key) else "")
        return f"unknown top-level key '{key}'{hint}; allowed: {', '.join(TOP_LEVEL_KEYS)}"
    if parent in ("base", "axes"):
        return f"{parent}: unknown parameter '{key}'{suggest(key)}"
    keys = ", ".join(_model_at(raw_loc[:-1]).model_fields)
    return f"{parent}: unknown key '{key}'; allowed: {keys}"


def _model_at(raw_loc: tuple[Any, ...]) -> type[BaseModel]:
    """The input model that validates the table at `raw_loc` (for listing its keys)."""
    if raw_loc[:1] == ("axes",):
        return _AXIS_MODELS[raw_loc[2]]
    tables: dict[tuple[Any, ...], type[BaseModel]] = {("precision",): PrecisionInput, ("search",): SearchInput}
    return tables[raw_loc]


# ---- field types ------------------------------------------------------------------------------


def _table(what: str) -> BeforeValidator:
    """A TOML table (a dict) is required here; say so in one line otherwise."""

    def check(v: Any) -> Any:
        if not isinstance(v, Mapping):
            raise not_allowed(f"[{what}] must be a table{' of parameter = value' if what in ('base', 'axes') else ''}")
        return dict(v)

    return BeforeValidator(check)


Count = Annotated[int, BeforeValidator(integral), Strict(), Interval(ge=1, le=MAX_TRIALS)]
"""A number of trials: an integer (or a whole float such as 1e6) in [1, 10**15]."""
COUNT = "an integer in [1, 10**15]"
FiniteFloat = Annotated[float, Strict(), AllowInfNan(False)]
StrictInt = Annotated[int, Strict()]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrecisionInput(_Input):
    """`[precision]` (with `trials = "auto"`); the rule itself is core.precision."""

    metric: Annotated[Literal[METRICS], allowed(f"one of {', '.join(METRICS)}")] = "p_bad"  # type: ignore[valid-type]
    target: Annotated[FiniteFloat, Interval(gt=0, lt=1), allowed("a probability in (0, 1)")] | None = None
    rel_half_width: Annotated[FiniteFloat, Gt(0), allowed("a finite number > 0 (0.1 = +-10%)")] | None = None
    max_trials: Annotated[Count, allowed(COUNT)] | None = None
    min_trials: Annotated[Count, allowed(COUNT)] | None = None

    @model_validator(mode="after")
    def _complete(self) -> PrecisionInput:
        if self.target is None and self.rel_half_width is None:
            raise problem("give target, rel_half_width or both (a point stops at the first one met)")
        if self.max_trials is None:
            raise problem("missing required key 'max_trials' (the per-point budget)")
        if self.min_trials is not None and self.min_trials > self.max_trials:
            raise problem(f"min_trials = {self.min_trials} is not allowed: at most max_trials = {self.max_trials}")
        return self

    def rule(self, shard_trials: int) -> Precision:
        """The stop rule; min_trials defaults to one shard (never above the budget)."""
        assert self.max_trials is not None  # _complete
        return Precision(
            metric=self.metric,
            target=self.target,
            rel_half_width=self.rel_half_width,
            max_trials=self.max_trials,
            min_trials=self.min_trials if self.min_trials is not None else min(shard_trials, self.max_trials),
        )


SEARCH_BOUNDS = f"[lo, hi], integers with 2 <= lo < hi <= {MAX_CPUS}"


def _search_bounds(v: tuple[int, int]) -> tuple[int, int]:
    if not 2 <= v[0] < v[1] <= MAX_CPUS:
        raise ValueError(SEARCH_BOUNDS)
    return v


class SearchInput(_Input):
    """`[search] n_cpus = [lo, hi]`: bisection on n_cpus per combination (sweeps.search)."""

    n_cpus: Annotated[tuple[StrictInt, StrictInt], AfterValidator(_search_bounds), allowed(SEARCH_BOUNDS)]


# ---- axes ---------------------------------------------------------------------------------------


class _Spaced(_Input):
    """linspace/logspace: two ends and a number of values."""

    FORM: ClassVar[str]
    num: Annotated[StrictInt, Ge(1), allowed("an integer >= 1")] | None = None

    @model_validator(mode="after")
    def _needs_num(self) -> _Spaced:
        if self.num is None:
            raise problem(f"{self.FORM} needs num = <number of values>, e.g. {{ {self.FORM} = [a, b], num = 5 }}")
        return self

    def ends(self) -> tuple[float, float]:
        return getattr(self, self.FORM)  # type: ignore[no-any-return]

    def size(self) -> int:
        """Values before rounding and de-duplication (bounds the point count before expanding)."""
        assert self.num is not None
        return self.num

    def values(self) -> list[float]:
        """The k values, the first and last exactly a and b."""
        a, b = self.ends()
        k = self.size()
        if k == 1:
            return [a]
        out = self._spaced(a, b, k)
        out[0] = a
        out[-1] = b
        return out

    def _spaced(self, a: float, b: float, k: int) -> list[float]:
        raise NotImplementedError


class LinspaceAxis(_Spaced):
    FORM = "linspace"
    linspace: Annotated[tuple[FiniteFloat, FiniteFloat], allowed("two finite numbers [a, b]")]

    def _spaced(self, a: float, b: float, k: int) -> list[float]:
        return [a + (b - a) * i / (k - 1) for i in range(k)]


class LogspaceAxis(_Spaced):
    FORM = "logspace"
    logspace: Annotated[
        tuple[Annotated[FiniteFloat, Gt(0)], Annotated[FiniteFloat, Gt(0)]],
        allowed("two finite numbers [a, b], both > 0 (they are values, not exponents)"),
    ]

    def _spaced(self, a: float, b: float, k: int) -> list[float]:
        la, lb = math.log10(a), math.log10(b)
        return [10.0 ** (la + (lb - la) * i / (k - 1)) for i in range(k)]


class RangeAxis(_Input):
    range: Annotated[
        tuple[StrictInt, StrictInt] | tuple[StrictInt, StrictInt, StrictInt],
        allowed("integers [a, b] or [a, b, step] (b excluded)"),
    ]

    @field_validator("range")
    @classmethod
    def _not_empty(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) == 3 and v[2] == 0:
            raise not_allowed("step must not be 0")
        if not range(*v):
            raise not_allowed("it is empty (Python range: a included, b excluded)")
        return v

    def size(self) -> int:
        return len(range(*self.range))

    def values(self) -> list[int]:
        return list(range(*self.range))


_AXIS_MODELS: dict[str, type[BaseModel]] = {"linspace": LinspaceAxis, "logspace": LogspaceAxis, "range": RangeAxis}


def _axis_form(v: Any) -> str | None:
    """The union tag of an axis as written: 'list', or the one form key of its table."""
    if isinstance(v, list):
        return "list"
    if isinstance(v, Mapping):
        forms = [f for f in AXIS_FORMS if f in v]
        return forms[0] if len(forms) == 1 else None
    return None


def _axis_type(s: ParamSpec) -> Any:
    """What an axis of parameter `s` may be written as: a list of its values always; linspace and
    logspace for numbers; range for integers (all derived from the parameter's kind)."""
    members: list[Any] = [Annotated[list[Annotated[s.written(), allowed(s.domain())]], Tag("list")]]  # type: ignore[misc]
    if s.kind == "str":
        text = "a list of values (linspace, logspace and range need a numeric parameter)"
    else:
        members += [Annotated[LinspaceAxis, Tag("linspace")], Annotated[LogspaceAxis, Tag("logspace")]]
        text = "a list of values, or a table with exactly one of linspace = [a, b] or logspace = [a, b] (with num = k)"
        if s.kind == "int":
            members.append(Annotated[RangeAxis, Tag("range")])
            text += " or range = [a, b, step]"
        else:
            ints = ", ".join(p.name for p in PARAM_SPECS if p.kind == "int")
            text += f"; range is only for integer parameters ({ints})"
    text += "; a fixed value goes in [base]"
    return Annotated[
        Union[tuple(members)],  # type: ignore[misc]  # noqa: UP007 - a runtime-built union
        Discriminator(_axis_form, custom_error_type="not_allowed", custom_error_message="{allowed}",
                      custom_error_context={"allowed": text}),
    ]


AxisAsWritten = Union[list[Any], LinspaceAxis, LogspaceAxis, RangeAxis]  # noqa: UP007

if TYPE_CHECKING:  # generated from PARAM_SPECS below
    BaseInput = _Input
    AxesInput = _Input
else:
    BaseInput = create_model(
        "BaseInput",
        __base__=_Input,
        __doc__="`[base]`: fixed parameters, each in its kind and domain (core.params); absent = default.",
        **{s.name: (Annotated[s.written(), allowed(s.domain())], None) for s in PARAM_SPECS},  # None: absent
    )
    AxesInput = create_model(
        "AxesInput",
        __base__=_Input,
        __doc__="`[axes]`: swept parameters, each in a form its kind allows.",
        **{s.name: (_axis_type(s), None) for s in PARAM_SPECS},
    )


@cache
def _value_adapter(name: str) -> TypeAdapter[Any]:
    return TypeAdapter(SPECS[name].written())


def _in_domain(loc: str, name: str, v: Any) -> Any:
    """`v` (an axis end) in canonical type, or a problem naming where it came from."""
    try:
        return _value_adapter(name).validate_python(v)
    except ValidationError:
        raise problem(f"{loc}: {name} = {v!r} is not allowed: {SPECS[name].domain()}") from None


def _expand(name: str, axis: AxisAsWritten) -> tuple[Any, ...]:
    """One axis's canonical values (SCHEMA.md; sweeps.spec's docstring has the rules)."""
    if isinstance(axis, list):
        if not axis:
            raise problem(f"axes.{name} = [] is empty: give at least one value")
        seen: dict[Any, int] = {}
        for i, v in enumerate(axis):
            if v in seen:
                raise problem(f"axes.{name}[{i}] = {v!r} repeats axes.{name}[{seen[v]}]: each value may appear once")
            seen[v] = i
        return tuple(axis)
    if isinstance(axis, RangeAxis):
        r = axis.values()
        _in_domain(f"axes.{name}.range", name, r[0])
        _in_domain(f"axes.{name}.range", name, r[-1])
        return tuple(r)
    is_int = SPECS[name].kind == "int"

    def rnd(x: float) -> Any:
        return math.floor(x + 0.5) if is_int else x + 0.0

    # values are monotone between the two ends and every domain is an interval,
    # so checking the (rounded) ends checks them all
    where = f"axes.{name}.{axis.FORM}"
    for end in axis.ends():
        _in_domain(where, name, rnd(end))
    return tuple(dict.fromkeys(rnd(x) for x in axis.values()))


def _size(axis: AxisAsWritten) -> int:
    return len(axis) if isinstance(axis, list) else axis.size()


# ---- the spec -----------------------------------------------------------------------------------


class SpecInput(_Input):
    """A whole spec as written. Validate with ``SpecInput.model_validate(raw, context={"force": ...,
    "stored": ...})``; `.canonical` then holds the fields of the canonical SweepSpec (sweeps.spec).
    `stored`: the spec.toml of a result set, where a parameter left out means its neutral value
    (core.params.STORED_DEFAULTS: `model_rev` 1), not the default a user's spec gets (2)."""

    name: Annotated[str, Strict(), Field(pattern=r"^[a-z0-9_-]+$"), allowed("a non-empty string of [a-z0-9_-]")]
    seed: Annotated[int, Strict(), Interval(ge=0, le=UINT64_MAX), allowed("an integer in [0, 2**64 - 1]")]
    trials: Annotated[Union[Count, Literal["auto"]], allowed(f'{COUNT} or "auto"')]  # noqa: UP007
    shard_trials: Annotated[Count, allowed(COUNT)] = DEFAULT_SHARD_TRIALS
    estimator: Annotated[Literal[tuple(ESTIMATORS)], allowed(f"one of {', '.join(ESTIMATORS)}")] = DEFAULT_ESTIMATOR  # type: ignore[valid-type]
    task_seconds: Annotated[FiniteFloat, Gt(0), allowed("a finite number > 0")] = DEFAULT_TASK_SECONDS
    base: Annotated[BaseInput, _table("base")] = Field(default_factory=BaseInput)  # type: ignore[valid-type]
    axes: Annotated[AxesInput, _table("axes")] = Field(default_factory=AxesInput)  # type: ignore[valid-type]
    precision: Annotated[PrecisionInput, _table("precision")] | None = None
    search: Annotated[SearchInput, _table("search")] | None = None

    _canonical: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def canonical(self) -> dict[str, Any]:
        """Fields of the canonical SweepSpec: axes expanded, base filled with defaults."""
        return self._canonical

    @model_validator(mode="after")
    def _whole(self, info: ValidationInfo) -> SpecInput:
        force = bool((info.context or {}).get("force", False))
        absent = STORED_DEFAULTS if (info.context or {}).get("stored", False) else DEFAULTS
        if self.trials != "auto" and self.precision is not None:
            raise problem('[precision] needs trials = "auto" (it sets the trials per point)')
        if self.trials == "auto" and self.precision is None:
            raise problem('trials = "auto" needs a [precision] table (metric, target and/or rel_half_width, max_trials)')
        rule = self.precision.rule(self.shard_trials) if self.precision is not None else None
        base_given = {k: getattr(self.base, k) for k in self.base.model_fields_set}
        axes_given = {k: getattr(self.axes, k) for k in PARAM_NAMES if k in self.axes.model_fields_set}
        for key in base_given:
            if key in axes_given:
                raise problem(f"parameter '{key}' is in both [base] and [axes]; put it in one of them")
        try:  # the base values together (anything cross-field; each one passed alone above)
            make_params(base_given, where="base")
        except ParamError as e:  # pragma: no cover - Params has no cross-field rule yet
            raise problem(str(e)) from None
        sizes = {k: _size(a) for k, a in axes_given.items()}  # bound the size before expanding anything
        if math.prod(sizes.values()) > MAX_POINTS and not force:
            detail = " x ".join(f"{k}:{v}" for k, v in sizes.items())
            raise problem(f"axes make {math.prod(sizes.values()):,} points ({detail}), more than {MAX_POINTS:,}; "
                          "use force=True (--force) to run it anyway")
        if self.search is not None:
            if rule is None or rule.target is None:
                raise problem('[search] needs trials = "auto" and a [precision] target (a probe passes when it is below target)')
            if "n_cpus" in axes_given:
                raise problem("search: n_cpus is searched; remove it from [axes] (a [base] value is replaced by the probes)")
        self._canonical = {
            "name": self.name,
            "seed": self.seed,
            "trials": rule.max_trials if rule is not None else self.trials,
            "shard_trials": self.shard_trials,
            "estimator": self.estimator,
            "task_seconds": self.task_seconds,
            "base": {k: base_given.get(k, SPECS[k].canon(absent[k])) for k in PARAM_NAMES if k not in axes_given},
            "axes": tuple((k, _expand(k, a)) for k, a in axes_given.items()),
            "precision": rule,
            "search": None if self.search is None else Search(lo=self.search.n_cpus[0], hi=self.search.n_cpus[1]),
        }
        return self


TOP_LEVEL_KEYS: tuple[str, ...] = tuple(SpecInput.model_fields)
