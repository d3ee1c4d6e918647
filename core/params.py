"""One point of the stop-race model: every MODEL.md parameter, its default and its domain.

`PARAM_SPECS` is the single source of truth for parameter metadata, kept as data
(like numpy.random's `check_constraint` table): name, kind (int | float | str),
the Arrow type of its stored column (a type alias such as "int32": core imports
no pyarrow, consumers call `pyarrow.type_for_alias`), domain, default, help text
and, for parameters added after the first release, the `neutral` value that
reproduces the model without them. `Params` (pydantic) is built from the table;
the sweep spec, the Parquet schema, the SQL views, the CLI options and the tests'
strategies derive from it, so a new parameter is one line here (plus its meaning
in the simulators).

Stable identities: a later-added parameter at its neutral value is left out of a
point's identity (`identity_dict`), so adding one changes no point id, seed or
spec hash, and result sets stored before it existed read it as `NEUTRAL[name]`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from annotated_types import Interval
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    create_model,
)

from core.errors import ParamError

MAX_CPUS = 65536  # far above NR_CPUS on any x86 kernel; bounds memory per trial row
MAX_US = 1e12
"""Upper bound of every time parameter (µs; about 11.6 days). Far above any real stop
(the histogram's top is 1e8 µs), and small enough that float64 times keep sub-µs
resolution (the spacing of doubles at 1e12 is 1.2e-4 µs), so `s += nmi_send_us` and
`e + prologue_us` still add: at 1e16 a 1 µs step would be lost entirely."""

Kind = Literal["int", "float", "str"]
MITIGATIONS: tuple[str, ...] = ("none", "early_flush")
Mitigation = Literal["none", "early_flush"]
MODEL_REVS: tuple[int, ...] = (1, 2)
"""Model revisions (MODEL.md "Model revision 2"); `model_rev` is the one parameter whose default (2)
is not its neutral value (1)."""

_PY_TYPES: dict[str, type] = {"int": int, "float": float, "str": str}


@dataclass(frozen=True)
class ParamSpec:
    """Metadata of one model parameter (MODEL.md "Defaults")."""

    name: str
    kind: Kind
    arrow: str
    """Arrow type alias of the stored column (`pyarrow.type_for_alias(arrow)`)."""
    default: Any
    help: str
    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    """An open lower bound (value > gt), for a domain such as udelay_factor's "> 0"."""
    choices: tuple[Any, ...] | None = None
    neutral: Any = None
    """For parameters added after the first release: the value that reproduces the model
    without them (left out of point identities); None for first-release parameters."""

    @property
    def py_type(self) -> type:
        """The Python type of a canonical value (int, float or str)."""
        return _PY_TYPES[self.kind]

    @property
    def later(self) -> bool:
        """Added after the first release (so old result sets lack its column)."""
        return self.neutral is not None

    def canon(self, v: Any) -> Any:
        """`v` in canonical type: ints as int, floats as float (never -0.0), strings as str."""
        if self.kind == "float":
            f = float(v) + 0.0
            if not math.isfinite(f):
                raise ValueError(f"{self.name} must be finite")
            return f
        return self.py_type(v)

    def domain(self) -> str:
        """Human-readable allowed values, for error messages and --help."""
        if self.choices is not None:
            vals = [str(c) for c in self.choices]
            return " or ".join(vals) if len(vals) == 2 and self.kind == "int" else "one of " + ", ".join(vals)
        what = "integer" if self.kind == "int" else "finite number"
        if self.ge is not None and self.le is not None:
            return f"{what} in [{_num(self.ge)}, {_num(self.le)}]"
        if self.ge is not None:
            return f"{what} >= {_num(self.ge)}"
        if self.gt is not None:
            return f"{what} > {_num(self.gt)}"
        return what

    def annotation(self) -> Any:
        """The pydantic annotation: a Literal of the choices, else the Python type."""
        if self.choices is not None:
            return Literal[self.choices]  # type: ignore[valid-type]
        return self.py_type

    def written(self) -> Any:
        """The pydantic type of a value as *written* in a sweep spec (TOML or JSON), for
        sweeps.spec: the kind is strict (no bools, no numeric strings; an int parameter also
        takes an integral float such as 8.0, a float one an int), the domain is ge/le/choices,
        and the value comes back in canonical type. `Params` itself stays lax (typed callers)."""
        meta: list[Any] = [Interval(ge=self.ge, le=self.le, gt=self.gt)]
        if self.choices is not None:
            meta.append(AfterValidator(_one_of(self.choices)))
        if self.kind == "int":
            return Annotated[(int, BeforeValidator(integral), Strict(), *meta)]
        if self.kind == "float":
            return Annotated[(float, Strict(), AllowInfNan(False), AfterValidator(_no_negative_zero), *meta)]
        return Annotated[(str, Strict(), *meta)]

    def field(self) -> Any:
        """The pydantic Field with default, bounds and description."""
        extra: dict[str, Any] = {"allow_inf_nan": False} if self.kind == "float" else {}
        return Field(self.default, ge=self.ge, le=self.le, gt=self.gt, description=self.help, **extra)


def integral(v: Any) -> Any:
    """8.0 -> 8 (a whole float written for an integer); anything else unchanged, for the
    strict int check after it to accept or refuse."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v


def _no_negative_zero(v: float) -> float:
    return v + 0.0


def _one_of(choices: tuple[Any, ...]) -> Any:
    def check(v: Any) -> Any:
        if v not in choices:
            raise ValueError(f"not one of {choices}")
        return v

    return check


def _us(name: str, default: float, help: str, ge: float = 0.0, neutral: float | None = None) -> ParamSpec:
    """A time in µs: a finite float in [ge, MAX_US]."""
    return ParamSpec(name, "float", "float64", default, help, ge=ge, le=MAX_US, neutral=neutral)


def _prob(name: str, default: float, help: str, neutral: float | None = None) -> ParamSpec:
    return ParamSpec(name, "float", "float64", default, help, ge=0.0, le=1.0, neutral=neutral)


def _real(name: str, default: float, help: str, ge: float | None = 0.0, neutral: float | None = None,
          gt: float | None = None) -> ParamSpec:
    """A dimensionless number (sigma, factor) >= ge (or > gt)."""
    return ParamSpec(name, "float", "float64", default, help, ge=ge, gt=gt, neutral=neutral)


PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("n_cpus", "int", "int32", 64, "online CPUs; CPU 0 stops CPUs 1..n_cpus-1", ge=2, le=MAX_CPUS),
    _us("ipi_base_us", 1.0, "REBOOT IPI delivery latency, fixed part"),
    _us("ipi_jitter_us", 2.0, "REBOOT IPI delivery latency, mean of the exponential part"),
    _us("irq_off_mean_us", 20.0, "mean irqs-off section a CPU is in when the IPI is broadcast"),
    _prob("p_stall", 1e-3, "probability a CPU is in a long irqs-off stall"),
    _us("stall_median_us", 5e5, "median of the log-normal stall length"),
    _real("stall_sigma", 1.0, "log-normal sigma of the stall length"),
    _prob("incoherent_fraction", 1.0, "probability a CPU has its cache-incoherent flag set (TDX/SME)"),
    _us("wbinvd_us", 1000.0, "median WBINVD duration with no contention"),
    _real("wbinvd_sigma", 0.5, "log-normal sigma of WBINVD duration"),
    _real("wbinvd_contention", 0.0, "relative WBINVD slow-down per other CPU"),
    _real("rewbinvd_factor", 1.0, "second (NMI-path) WBINVD length relative to the first"),
    _us("nmi_base_us", 2.0, "NMI send-to-handler latency, fixed part"),
    _us("nmi_jitter_us", 3.0, "NMI send-to-handler latency, mean of the exponential part"),
    _us("nmi_send_us", 1.0, "cost of one NMI send in the loop"),
    _prob("p_nmi_delay", 0.0, "probability a CPU's NMI is held off by a long NMI-blocked section of its own "
          "(not a broadcast SMI: that is udelay_factor < 1)", neutral=0.0),
    _us("nmi_delay_median_us", 200.0, "median of the log-normal NMI hold-off", neutral=200.0),
    _real("nmi_delay_sigma", 1.0, "log-normal sigma of the NMI hold-off", neutral=1.0),
    _us("prologue_us", 5.0, "stop_this_cpu() work before WBINVD"),
    _us("timeout_us", 1e6, "nominal REBOOT-vector wait (1 s)"),
    _real("udelay_factor", 1.0, "real/nominal length of the udelay(1) loop in execution time "
          "(< 1: broadcast SMIs, which the TSC-timed waits count)", ge=None, gt=0.0),
    _us("console_us", 1000.0, "time to print 'Shutting down cpus with NMI'"),
    ParamSpec("wait", "int", "int8", 1, "1 = kexec/reboot (wait forever), 0 = panic (wait nmi_wait_us)",
              choices=(0, 1)),
    _us("nmi_wait_us", 1e4, "nominal wait after the NMIs when wait=0 (10 ms)"),
    _us("handoff_us", 100.0, "from leaving the stop to the new kernel overwriting memory"),
    _prob("p_unresponsive", 0.0, "probability a CPU never answers IPI or NMI"),
    ParamSpec("mitigation", "str", "string", "none", "none | early_flush (WBINVD before the stop)",
              choices=MITIGATIONS),
    ParamSpec("model_rev", "int", "int8", 2, "model revision: 2 = the kexec path as merged (CPU 0's own flush in "
              "the hand-over, no early flush on panic, the early flush as an IPI); 1 = the first release's model",
              choices=MODEL_REVS, neutral=1),
)

SPECS: dict[str, ParamSpec] = {s.name: s for s in PARAM_SPECS}
PARAM_NAMES: tuple[str, ...] = tuple(SPECS)
DEFAULTS: dict[str, Any] = {s.name: s.default for s in PARAM_SPECS}
NEUTRAL: dict[str, Any] = {s.name: s.neutral for s in PARAM_SPECS if s.later}
"""Parameters added after the first release -> the value that reproduces the model without them.
A result set stored before one existed reads it as this value."""
FIRST_RELEASE_PARAMS: tuple[str, ...] = tuple(s.name for s in PARAM_SPECS if not s.later)
"""Parameters every stored result set has a column for."""
STORED_DEFAULTS: dict[str, Any] = {**DEFAULTS, **NEUTRAL}
"""What a parameter absent from a *stored* canonical spec means: its neutral value if it was added
after the first release (the spec was written before it existed, or left it out at that value), else
its default. Differs from DEFAULTS only where a default is not neutral (`model_rev`: a stored spec
lacking it is revision 1, a user's spec lacking it gets revision 2)."""
NOT_NEUTRAL_BY_DEFAULT: tuple[str, ...] = tuple(n for n, v in NEUTRAL.items() if DEFAULTS[n] != v)
"""Later parameters whose default is not their neutral value (`model_rev`): a spec that leaves one out
means something different as written by a user (the default) and as stored (neutral), so the canonical
spec.toml always writes them."""


class ParamsBase(BaseModel):
    """Derived quantities of a point; the fields themselves come from PARAM_SPECS."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    if TYPE_CHECKING:  # fields are generated from PARAM_SPECS; every one is a plain value

        def __getattr__(self, name: str) -> Any: ...

    @property
    def n_remote(self) -> int:
        """CPUs that get stopped (all but the stopping CPU 0)."""
        return int(self.n_cpus) - 1

    @property
    def wbinvd_median_us(self) -> float:
        """WBINVD median under contention from the other CPUs."""
        return float(self.wbinvd_us * (1.0 + self.wbinvd_contention * (self.n_cpus - 1)))

    @property
    def t1_us(self) -> float:
        """End of the REBOOT-vector wait: timeout scaled by the real udelay length."""
        return float(self.timeout_us * self.udelay_factor)

    @property
    def t_nmi_us(self) -> float:
        """When the NMI loop starts."""
        return self.t1_us + float(self.console_us)

    @property
    def wbinvd_contention_factor(self) -> float:
        """1 + wbinvd_contention * (n_cpus - 1): a WBINVD's slow-down while every CPU flushes at once."""
        return float(1.0 + self.wbinvd_contention * (self.n_cpus - 1))

    @property
    def early_flush_applies(self) -> bool:
        """The flags are clear for the stop: early_flush, except on the panic path (wait = 0) in
        model revision 2, where panic() runs no syscore shutdown (MODEL.md "Model revision 2", item 2)."""
        return self.mitigation == "early_flush" and (self.model_rev == 1 or self.wait == 1)

    @property
    def flush_ipi(self) -> bool:
        """Revision 2's early flush: a synchronous function-call IPI to every CPU before the stop
        (fresh ipi'/off' draws per remote CPU; a dead CPU hangs the kexec in it), item 3."""
        return self.model_rev == 2 and self.mitigation == "early_flush" and self.wait == 1

    @property
    def cpu0_flush(self) -> bool:
        """Revision 2's hand-over: CPU 0's own WBINVD in relocate_kernel() when its flag is set,
        H = handoff_us + w_0 if dirty_0 (kexec path, no early flush), item 1."""
        return self.model_rev == 2 and self.wait == 1 and self.mitigation == "none"

    @property
    def nmi_wait_scaled_us(self) -> float:
        """The wait=0 deadline after the NMI loop, scaled like every udelay loop."""
        return float(self.nmi_wait_us * self.udelay_factor)


if TYPE_CHECKING:
    Params = ParamsBase
else:
    Params = create_model(
        "Params",
        __base__=ParamsBase,
        __module__=__name__,
        __doc__="All parameters of one sweep point (MODEL.md \"Defaults\"); times in microseconds.",
        **{s.name: (s.annotation(), s.field()) for s in PARAM_SPECS},
    )


def domain(name: str) -> str:
    """Human-readable allowed values of one parameter, for error messages and --help."""
    return SPECS[name].domain()


def _num(x: float) -> str:
    if float(x).is_integer() and abs(x) < 1e7:
        return str(int(x))
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def describe_error(err: ValidationError, where: str = "") -> str:
    """One line naming the first bad field, its value and what is allowed."""
    e = err.errors()[0]
    loc = [str(p) for p in e.get("loc", ())]
    name = loc[-1] if loc else "?"
    prefix = f"{where}: " if where else ""
    if e.get("type") == "extra_forbidden":
        return f"{prefix}unknown parameter '{name}'{suggest(name)}"
    value = e.get("input")
    allowed = domain(name) if name in SPECS else e.get("msg", "")
    return f"{prefix}{name} = {value!r} is not allowed: {allowed}"


def suggest(name: str) -> str:
    """' (did you mean 'x'?)' for the closest known parameter name, or ''."""
    close = difflib.get_close_matches(name, PARAM_NAMES, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def make_params(values: Mapping[str, Any], where: str = "") -> Params:
    """Validate a dict into Params, raising ParamError with a one-line message on bad input."""
    try:
        return Params(**values)
    except ValidationError as err:
        loc = err.errors()[0].get("loc") or ()
        name = str(loc[-1]) if loc and str(loc[-1]) in SPECS else None
        raise ParamError(describe_error(err, where), name, err.errors()[0].get("input")) from None


def canonical_dict(p: Params) -> dict[str, Any]:
    """All parameters (PARAM_NAMES order) with defaults filled in, in canonical types."""
    return {s.name: s.canon(getattr(p, s.name)) for s in PARAM_SPECS}


def is_neutral(name: str, value: Any) -> bool:
    """True if `name` was added after the first release and `value` is its neutral value."""
    return name in NEUTRAL and value == NEUTRAL[name]


def identity_dict(values: Mapping[str, Any]) -> dict[str, Any]:
    """A point's identity: its canonical values minus later-added parameters at their neutral
    value. The point id and seed hash this (SCHEMA.md), so a new parameter changes neither."""
    return {k: v for k, v in values.items() if not is_neutral(k, v)}


def with_neutral(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` (e.g. a stored row) with every later-added parameter that is missing or null
    filled in as its neutral value: how a result set stored before it existed reads."""
    out = dict(values)
    for name, v in NEUTRAL.items():
        if out.get(name) is None:
            out[name] = v
    return out
