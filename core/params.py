"""One point of the stop-race model: every MODEL.md parameter, its default and its domain.

The model is the single source of truth for parameter names, defaults, types and
allowed ranges; the sweep spec, the Parquet schema and the CLI options are all
derived from it, so a new parameter is added here and nowhere else.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ParamError

MAX_CPUS = 65536  # far above NR_CPUS on any x86 kernel; bounds memory per trial row

Mitigation = Literal["none", "early_flush"]
MITIGATIONS: tuple[str, ...] = ("none", "early_flush")


def _us(default: float, doc: str, ge: float = 0.0) -> Any:
    return Field(default, ge=ge, allow_inf_nan=False, description=doc)


def _prob(default: float, doc: str) -> Any:
    return Field(default, ge=0.0, le=1.0, allow_inf_nan=False, description=doc)


class Params(BaseModel):
    """All parameters of one sweep point (MODEL.md "Defaults"); times in microseconds."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    n_cpus: int = Field(64, ge=2, le=MAX_CPUS, strict=False, description="online CPUs; CPU 0 stops CPUs 1..n_cpus-1")
    ipi_base_us: float = _us(1.0, "REBOOT IPI delivery latency, fixed part")
    ipi_jitter_us: float = _us(2.0, "REBOOT IPI delivery latency, mean of the exponential part")
    irq_off_mean_us: float = _us(20.0, "mean irqs-off section a CPU is in when the IPI is broadcast")
    p_stall: float = _prob(1e-3, "probability a CPU is in a long irqs-off stall")
    stall_median_us: float = _us(5e5, "median of the log-normal stall length")
    stall_sigma: float = _us(1.0, "log-normal sigma of the stall length")
    incoherent_fraction: float = _prob(1.0, "probability a CPU has its cache-incoherent flag set (TDX/SME)")
    wbinvd_us: float = _us(1000.0, "median WBINVD duration with no contention")
    wbinvd_sigma: float = _us(0.5, "log-normal sigma of WBINVD duration")
    wbinvd_contention: float = _us(0.0, "relative WBINVD slow-down per other CPU")
    rewbinvd_factor: float = _us(1.0, "second (NMI-path) WBINVD length relative to the first")
    nmi_base_us: float = _us(2.0, "NMI send-to-handler latency, fixed part")
    nmi_jitter_us: float = _us(3.0, "NMI send-to-handler latency, mean of the exponential part")
    nmi_send_us: float = _us(1.0, "cost of one NMI send in the loop")
    prologue_us: float = _us(5.0, "stop_this_cpu() work before WBINVD")
    timeout_us: float = _us(1e6, "nominal REBOOT-vector wait (1 s)")
    udelay_factor: float = _us(1.0, "real/nominal length of the udelay(1) loop", ge=1.0)
    console_us: float = _us(1000.0, "time to print 'Shutting down cpus with NMI'")
    wait: Literal[0, 1] = Field(1, description="1 = kexec/reboot (wait forever), 0 = panic (wait nmi_wait_us)")
    nmi_wait_us: float = _us(1e4, "nominal wait after the NMIs when wait=0 (10 ms)")
    handoff_us: float = _us(100.0, "from leaving the stop to the new kernel overwriting memory")
    p_unresponsive: float = _prob(0.0, "probability a CPU never answers IPI or NMI")
    mitigation: Mitigation = Field("none", description="none | early_flush (WBINVD before the stop)")

    @property
    def n_remote(self) -> int:
        """CPUs that get stopped (all but the stopping CPU 0)."""
        return self.n_cpus - 1

    @property
    def wbinvd_median_us(self) -> float:
        """WBINVD median under contention from the other CPUs."""
        return self.wbinvd_us * (1.0 + self.wbinvd_contention * (self.n_cpus - 1))

    @property
    def t1_us(self) -> float:
        """End of the REBOOT-vector wait: timeout scaled by the real udelay length."""
        return self.timeout_us * self.udelay_factor

    @property
    def t_nmi_us(self) -> float:
        """When the NMI loop starts."""
        return self.t1_us + self.console_us

    @property
    def nmi_wait_scaled_us(self) -> float:
        """The wait=0 deadline after the NMI loop, scaled like every udelay loop."""
        return self.nmi_wait_us * self.udelay_factor


PARAM_NAMES: tuple[str, ...] = tuple(Params.model_fields)
DEFAULTS: dict[str, Any] = {name: f.default for name, f in Params.model_fields.items()}
INT_PARAMS = frozenset({"n_cpus", "wait"})
STR_PARAMS = frozenset({"mitigation"})


def domain(name: str) -> str:
    """Human-readable allowed values of one parameter, for error messages and --help."""
    if name == "mitigation":
        return "one of " + ", ".join(MITIGATIONS)
    if name == "wait":
        return "0 or 1"
    field = Params.model_fields[name]
    lo = hi = None
    for m in field.metadata:
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
    kind = "integer" if name in INT_PARAMS else "finite number"
    if lo is not None and hi is not None:
        return f"{kind} in [{_num(lo)}, {_num(hi)}]"
    if lo is not None:
        return f"{kind} >= {_num(lo)}"
    return kind


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e7 else repr(float(x))


def describe_error(err: ValidationError, where: str = "") -> str:
    """One line naming the first bad field, its value and what is allowed."""
    e = err.errors()[0]
    loc = [str(p) for p in e.get("loc", ())]
    name = loc[-1] if loc else "?"
    prefix = f"{where}: " if where else ""
    if e.get("type") == "extra_forbidden":
        return f"{prefix}unknown parameter '{name}'{suggest(name)}"
    value = e.get("input")
    allowed = domain(name) if name in Params.model_fields else e.get("msg", "")
    return f"{prefix}{name} = {value!r} is not allowed: {allowed}"


def suggest(name: str) -> str:
    """' (did you mean 'x'?)' for the closest known parameter name, or ''."""
    import difflib

    close = difflib.get_close_matches(name, PARAM_NAMES, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def make_params(values: dict[str, Any], where: str = "") -> Params:
    """Validate a dict into Params, raising ParamError with a one-line message on bad input."""
    try:
        return Params(**values)
    except ValidationError as err:
        raise ParamError(describe_error(err, where)) from None


def canonical_dict(p: Params) -> dict[str, Any]:
    """All parameters with defaults filled in, ints as ints and floats as floats."""
    out: dict[str, Any] = {}
    for name in PARAM_NAMES:
        v = getattr(p, name)
        if name in STR_PARAMS:
            out[name] = str(v)
        elif name in INT_PARAMS:
            out[name] = int(v)
        else:
            out[name] = float(v)
            if not math.isfinite(out[name]):
                raise ValueError(f"{name} must be finite")
    return out
