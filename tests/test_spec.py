"""sweeps.spec: parsing, one-line errors, axis expansion, canonical form, hash, to_toml."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.params import DEFAULTS, PARAM_NAMES
from sweeps.spec import MAX_POINTS, SpecError, SweepSpec, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

HEAD = 'name = "t"\nseed = 1\ntrials = 10\n'


def spec_of(body: str = "", head: str = HEAD, **kw) -> SweepSpec:
    return parse_spec(head + body, where="s.toml", **kw)


def err_of(text: str, **kw) -> str:
    with pytest.raises(SpecError) as ei:
        parse_spec(text, where="s.toml", **kw)
    msg = str(ei.value)
    assert "\n" not in msg, msg
    assert msg.startswith("s.toml: "), msg
    return msg


def axis(spec: SweepSpec, name: str) -> tuple:
    return next(a.values for a in spec.axes if a.name == name)


# ---- top level -------------------------------------------------------------------------


def test_minimal_defaults():
    s = spec_of()
    assert (s.name, s.seed, s.trials, s.shard_trials, s.estimator, s.task_seconds) == ("t", 1, 10, 100_000, "naive", 2.0)
    assert s.axes == ()
    assert s.n_points == 1
    assert s.base == {k: DEFAULTS[k] for k in PARAM_NAMES}
    assert list(s.base) == list(PARAM_NAMES)


def test_top_level_values():
    s = parse_spec(
        'name = "a-b_9"\nseed = 18446744073709551615\ntrials = 1_000_000\nshard_trials = 300_000\n'
        'estimator = "cmc"\ntask_seconds = 0.5\n'
    )
    assert s.seed == 2**64 - 1 and s.trials == 1_000_000 and s.estimator == "cmc" and s.task_seconds == 0.5
    assert s.n_shards_per_point == 4
    assert s.shard_sizes() == [300_000, 300_000, 300_000, 100_000]
    assert s.shard_size(3) == 100_000
    assert parse_spec(HEAD.replace("10", "1e6")).trials == 1_000_000  # integral float accepted


def test_shards_exact_and_single():
    assert spec_of(head='name="t"\nseed=1\ntrials=200\nshard_trials=100\n').shard_sizes() == [100, 100]
    assert spec_of(head='name="t"\nseed=1\ntrials=7\nshard_trials=100\n').shard_sizes() == [7]


@pytest.mark.parametrize(
    "text, needles",
    [
        (HEAD + "trails = 3\n", ["unknown top-level key 'trails'", "did you mean 'trials'"]),
        (HEAD + "n_cpus = 3\n", ["'n_cpus'", "[base] or [axes]"]),
        (HEAD + "wbinvdus = 3\n", ["'wbinvdus'", "did you mean 'wbinvd_us'"]),
        ('name = "t"\nseed = 1\n', ["missing required key 'trials'"]),
        ('name = "T!"\nseed = 1\ntrials = 1\n', ["name = 'T!'", "[a-z0-9_-]"]),
        ('name = "t"\nseed = -1\ntrials = 1\n', ["seed = -1", "2**64 - 1"]),
        ('name = "t"\nseed = 1.5\ntrials = 1\n', ["seed = 1.5", "integer"]),
        ('name = "t"\nseed = 1\ntrials = "1000"\n', ["trials = '1000'", "integer in [1"]),
        ('name = "t"\nseed = 1\ntrials = 0\n', ["trials = 0", "integer in [1"]),
        ('name = "t"\nseed = 1\ntrials = 2.5\n', ["trials = 2.5"]),
        ('name = "t"\nseed = 1\ntrials = true\n', ["trials = True"]),
        (HEAD + "shard_trials = 0\n", ["shard_trials = 0"]),
        (HEAD + 'estimator = "exact"\n', ["estimator = 'exact'", "naive, cmc"]),
        (HEAD + "task_seconds = 0\n", ["task_seconds = 0", "> 0"]),
        (HEAD + "task_seconds = inf\n", ["task_seconds = inf"]),
        (HEAD + "base = 3\n", ["base = 3", "table"]),
    ],
)
def test_top_level_errors(text, needles):
    msg = err_of(text)
    for n in needles:
        assert n in msg, msg


def test_bad_toml_names_line():
    msg = err_of('name = "t"\nseed = 1\ntrials = \n')
    assert "invalid TOML" in msg and "line 3" in msg


# ---- base ------------------------------------------------------------------------------


def test_base_values_canonical():
    s = spec_of("[base]\nwbinvd_us = 5\nwait = 0\nn_cpus = 8.0\nipi_jitter_us = -0.0\nmitigation = \"early_flush\"\n")
    assert s.base["wbinvd_us"] == 5.0 and type(s.base["wbinvd_us"]) is float
    assert s.base["n_cpus"] == 8 and type(s.base["n_cpus"]) is int
    assert s.base["wait"] == 0 and s.base["mitigation"] == "early_flush"
    assert repr(s.base["ipi_jitter_us"]) == "0.0"


@pytest.mark.parametrize(
    "body, needles",
    [
        ("[base]\nwbinvd = 5\n", ["base: unknown parameter 'wbinvd'", "did you mean 'wbinvd_us'"]),
        ("[base]\nwbinvd_us = -5\n", ["base.wbinvd_us = -5 is not allowed", "[0, 1e+12]"]),
        ("[base]\nn_cpus = 1\n", ["base.n_cpus = 1 is not allowed", "[2, 65536]"]),
        ("[base]\nn_cpus = 8.5\n", ["base.n_cpus = 8.5 is not allowed", "integer"]),
        ("[base]\nwait = 2\n", ["wait = 2", "0 or 1"]),
        ("[base]\nwait = true\n", ["wait = True", "0 or 1"]),
        ('[base]\nwbinvd_us = "100"\n', ["wbinvd_us = '100'", "number"]),
        ('[base]\nmitigation = "later"\n', ["mitigation = 'later'", "none, early_flush"]),
        ("[base]\np_stall = 1.5\n", ["p_stall = 1.5", "[0, 1]"]),
        ("[base]\nwbinvd_us = nan\n", ["wbinvd_us = nan"]),
        ("[base]\nudelay_factor = 0.0\n", ["udelay_factor = 0.0", "> 0"]),
        ("[base]\nn_cpus = 8\n[axes]\nn_cpus = [8, 16]\n", ["'n_cpus' is in both [base] and [axes]"]),
    ],
)
def test_base_errors(body, needles):
    msg = err_of(HEAD + body)
    for n in needles:
        assert n in msg, msg


# ---- axes ------------------------------------------------------------------------------


def test_list_axis():
    s = spec_of('[axes]\nn_cpus = [8, 1024, 64]\nmitigation = ["none", "early_flush"]\nwbinvd_us = [1, 2.5]\n')
    assert axis(s, "n_cpus") == (8, 1024, 64)  # given order kept
    assert axis(s, "wbinvd_us") == (1.0, 2.5) and all(type(v) is float for v in axis(s, "wbinvd_us"))
    assert s.n_points == 12


def test_linspace_exact():
    s = spec_of("[axes]\nipi_jitter_us = { linspace = [0, 50], num = 6 }\n")
    assert axis(s, "ipi_jitter_us") == (0.0, 10.0, 20.0, 30.0, 40.0, 50.0)
    s = spec_of("[axes]\nipi_jitter_us = { linspace = [1, 2], num = 5 }\n")
    assert axis(s, "ipi_jitter_us") == (1.0, 1.25, 1.5, 1.75, 2.0)
    s = spec_of("[axes]\nipi_jitter_us = { linspace = [3, 7], num = 1 }\n")
    assert axis(s, "ipi_jitter_us") == (3.0,)
    s = spec_of("[axes]\nipi_jitter_us = { linspace = [5, 5], num = 4 }\n")
    assert axis(s, "ipi_jitter_us") == (5.0,)  # de-duplicated
    s = spec_of("[axes]\nipi_jitter_us = { linspace = [50, 0], num = 3 }\n")
    assert axis(s, "ipi_jitter_us") == (50.0, 25.0, 0.0)  # descending is fine
    s = spec_of("[axes]\nipi_jitter_us = { linspace = [0, 0.3], num = 4 }\n")
    assert axis(s, "ipi_jitter_us")[-1] == 0.3  # last value is exactly b


def test_logspace_exact():
    s = spec_of("[axes]\nwbinvd_us = { logspace = [100, 100000], num = 4 }\n")
    assert axis(s, "wbinvd_us") == (100.0, 1000.0, 10000.0, 100000.0)
    s = spec_of("[axes]\np_stall = { logspace = [1e-4, 1e-1], num = 7 }\n")
    v = axis(s, "p_stall")
    assert v[0] == 1e-4 and v[-1] == 1e-1 and v[2] == 1e-3 and v[4] == 1e-2
    assert v[1] == pytest.approx(10**-3.5, rel=1e-12)
    s = spec_of("[axes]\nwbinvd_us = { logspace = [3, 300], num = 3 }\n")
    assert axis(s, "wbinvd_us") == (3.0, pytest.approx(30.0, rel=1e-12), 300.0)


def test_integer_axes_rounded_and_deduplicated():
    s = spec_of("[axes]\nn_cpus = { logspace = [8, 4096], num = 10 }\n")
    assert axis(s, "n_cpus") == (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    assert all(type(v) is int for v in axis(s, "n_cpus"))
    s = spec_of("[axes]\nn_cpus = { linspace = [2, 4], num = 5 }\n")
    assert axis(s, "n_cpus") == (2, 3, 4)  # 2, 2.5->3, 3, 3.5->4, 4: half up, de-duplicated
    s = spec_of("[axes]\nn_cpus = { logspace = [2, 3], num = 4 }\n")
    assert axis(s, "n_cpus") == (2, 3)


def test_integer_rounding_is_half_up_not_to_even():
    # 4.5 -> 5 (half up, SCHEMA.md); Python's round() would give 4
    assert axis(spec_of("[axes]\nn_cpus = { linspace = [2, 7], num = 3 }\n"), "n_cpus") == (2, 5, 7)


def test_range_axis():
    s = spec_of("[axes]\nn_cpus = { range = [8, 64, 8] }\n")
    assert axis(s, "n_cpus") == (8, 16, 24, 32, 40, 48, 56)  # b excluded, like Python
    s = spec_of("[axes]\nn_cpus = { range = [2, 5] }\nwait = { range = [0, 2] }\n")
    assert axis(s, "n_cpus") == (2, 3, 4) and axis(s, "wait") == (0, 1)
    s = spec_of("[axes]\nn_cpus = { range = [10, 4, -3] }\n")
    assert axis(s, "n_cpus") == (10, 7)


@pytest.mark.parametrize(
    "body, needles",
    [
        ("n_cpu = [8]\n", ["axes: unknown parameter 'n_cpu'", "did you mean 'n_cpus'"]),
        ("n_cpus = []\n", ["axes.n_cpus = [] is empty"]),
        ("n_cpus = 8\n", ["axes.n_cpus = 8 is not allowed", "[base]"]),
        ("n_cpus = [8, 1]\n", ["axes.n_cpus[1] = 1 is not allowed", "[2, 65536]"]),
        ("n_cpus = [8, 8.0]\n", ["axes.n_cpus[1] = 8 repeats axes.n_cpus[0]"]),
        ("wbinvd_us = [100, -1]\n", ["axes.wbinvd_us[1] = -1 is not allowed", "[0, 1e+12]"]),
        ('wbinvd_us = [100, "1e3"]\n', ["axes.wbinvd_us[1] = '1e3' is not allowed", "finite number"]),
        ("wbinvd_us = [true]\n", ["axes.wbinvd_us[0] = True is not allowed"]),
        ('mitigation = ["none", "late"]\n', ["axes.mitigation[1] = 'late' is not allowed", "none, early_flush"]),
        ("p_stall = [0.5, 2]\n", ["axes.p_stall[1] = 2 is not allowed", "[0, 1]"]),
        ("wbinvd_us = { linspace = [0, 10], num = 0 }\n", ["axes.wbinvd_us.num = 0", ">= 1"]),
        ("wbinvd_us = { linspace = [0, 10], num = 2.5 }\n", ["axes.wbinvd_us.num = 2.5"]),
        ("wbinvd_us = { linspace = [0, 10] }\n", ["axes.wbinvd_us: linspace needs num"]),
        ("wbinvd_us = { linspace = [-1, 10], num = 3 }\n", ["axes.wbinvd_us.linspace: wbinvd_us = -1.0 is not allowed"]),
        ("wbinvd_us = { linspace = [0, 1, 2], num = 3 }\n", ["axes.wbinvd_us.linspace = [0, 1, 2]", "two finite numbers"]),
        ("wbinvd_us = { logspace = [0, 100], num = 3 }\n", ["axes.wbinvd_us.logspace = [0, 100]", "> 0"]),
        ("p_stall = { logspace = [1e-3, 10], num = 3 }\n", ["axes.p_stall.logspace: p_stall = 10.0 is not allowed"]),
        ("wbinvd_us = { linspace = [0, 1], num = 3, step = 1 }\n", ["axes.wbinvd_us: unknown key 'step'"]),
        ("wbinvd_us = { linspace = [0, 1], logspace = [1, 2], num = 3 }\n", ["axes.wbinvd_us", "exactly one of"]),
        ("wbinvd_us = { range = [0, 10, 2] }\n", ["axes.wbinvd_us = {'range': [0, 10, 2]} is not allowed", "range is only for integer parameters (n_cpus, "]),
        ("n_cpus = { range = [8, 8] }\n", ["axes.n_cpus.range = [8, 8] is not allowed: it is empty"]),
        ("n_cpus = { range = [8, 64, 0] }\n", ["axes.n_cpus.range = [8, 64, 0]", "step must not be 0"]),
        ("n_cpus = { range = [8.0, 64] }\n", ["axes.n_cpus.range = [8.0, 64]", "integers"]),
        ("n_cpus = { range = [1, 4] }\n", ["axes.n_cpus.range: n_cpus = 1 is not allowed"]),
        ('mitigation = { linspace = [0, 1], num = 2 }\n', ["axes.mitigation = {'linspace': [0, 1], 'num': 2} is not allowed", "need a numeric parameter"]),
    ],
)
def test_axis_errors(body, needles):
    msg = err_of(HEAD + "[axes]\n" + body)
    for n in needles:
        assert n in msg, msg


def test_too_many_points():
    body = "[axes]\nwbinvd_us = { linspace = [1, 2], num = 5000 }\nipi_jitter_us = { linspace = [1, 2], num = 2001 }\n"
    msg = err_of(HEAD + body)
    assert "10,005,000 points" in msg and "more than 10,000,000" in msg and "force" in msg
    assert spec_of(body, force=True).n_points == 10_005_000
    assert MAX_POINTS == 10_000_000
    assert spec_of(body.replace("2001", "2000")).n_points == MAX_POINTS  # the bound itself is allowed


def test_unknown_keys_are_reported_before_missing_ones():
    # a typo of a required key is both unknown and missing: the typo is what the user must fix
    msg = err_of('name = "t"\nseed = 1\ntrails = 10\n')
    assert "unknown top-level key 'trails' (did you mean 'trials'?)" in msg, msg
    msg = err_of(HEAD + 'trials_x = 1\n[base]\nwbinvdus = 3\nn_cpus = 1\n')
    assert "unknown" in msg and "missing" not in msg and "not allowed" not in msg, msg


# ---- canonical form, hash, round trip --------------------------------------------------

BIG = """
name = "tdx"
seed = 20250616
trials = 1_000_000
shard_trials = 100_000

[base]
wait = 1
handoff_us = 50

[axes]
n_cpus = [8, 32, 128, 512]
wbinvd_us = { logspace = [100, 100000], num = 7 }
ipi_jitter_us = { linspace = [0, 50], num = 6 }
mitigation = ["none", "early_flush"]
"""

BIG_REORDERED = """
trials = 1000000
seed = 20250616
name = "tdx"

[axes]
mitigation = ["none", "early_flush"]
ipi_jitter_us = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
wbinvd_us = { logspace = [100.0, 1e5], num = 7 }
n_cpus = [8, 32, 128, 512]

[base]
handoff_us = 50.0
"""


def test_canonical_json_and_hash_independent_of_order_and_form():
    a, b = parse_spec(BIG), parse_spec(BIG_REORDERED)
    assert a == b
    assert a.canonical_json() == b.canonical_json()
    assert a.spec_hash == b.spec_hash
    assert [x.name for x in a.axes] == ["n_cpus", "ipi_jitter_us", "wbinvd_us", "mitigation"]  # model order
    assert a.n_points == 4 * 7 * 6 * 2


def test_canonical_json_shape_and_hash_stable():
    s = parse_spec(BIG)
    cj = s.canonical_json()
    obj = json.loads(cj)
    assert cj == json.dumps(obj, sort_keys=True, separators=(",", ":"))
    assert obj["axes"][0] == ["n_cpus", [8, 32, 128, 512]]
    assert obj["base"]["handoff_us"] == 50.0 and "n_cpus" not in obj["base"]
    assert '"handoff_us":50.0' in cj and '"ipi_jitter_us",[0.0,10.0' in cj
    assert len(s.spec_hash) == 64
    # pinned: a change here means every existing results dir is refused; bump deliberately
    assert s.spec_hash == parse_spec(BIG).spec_hash
    assert s.spec_hash == PINNED_HASH
    assert obj["base"]["model_rev"] == 2  # a spec that leaves it out runs revision 2
    # pinned at model_rev = 1 (neutral, left out of the hash): the hash before model_rev existed
    assert parse_spec(BIG.replace("[base]\n", "[base]\nmodel_rev = 1\n")).spec_hash == PINNED_REV1_HASH


PINNED_HASH = "ad3e4d613400c0a99a763ce2b6a263f741e76a98f6a2eb7af8e45f794965b228"
PINNED_REV1_HASH = "b6873d64bae50f0e7c6689abbd605cd12f148a54453633c52b31c3d21635beec"


def test_hash_changes_with_content():
    s = parse_spec(BIG)
    assert parse_spec(BIG.replace("seed = 20250616", "seed = 20250617")).spec_hash != s.spec_hash
    assert parse_spec(BIG.replace("num = 7", "num = 8")).spec_hash != s.spec_hash
    assert parse_spec(BIG.replace("handoff_us = 50", "handoff_us = 51")).spec_hash != s.spec_hash


def test_explicit_default_same_hash():
    assert spec_of("[base]\nwbinvd_us = 1000\n").spec_hash == spec_of().spec_hash


def test_to_toml_round_trip_examples_and_big():
    for text in [BIG, HEAD, *(p.read_text() for p in sorted(EXAMPLES.glob("*.toml")))]:
        s = parse_spec(text)
        t = s.to_toml()
        s2 = parse_spec(t)
        assert s2 == s and s2.spec_hash == s.spec_hash
        assert s2.to_toml() == t


def test_to_toml_long_axis_wraps():
    s = spec_of("[axes]\nwbinvd_us = { logspace = [1, 1e6], num = 50 }\n")
    assert parse_spec(s.to_toml()) == s


def test_load_spec_file_and_errors(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text(BIG)
    assert load_spec(p) == parse_spec(BIG)
    with pytest.raises(SpecError, match=r"^.*nope\.toml: no such spec file$"):
        load_spec(tmp_path / "nope.toml")
    p.write_text(BIG + "bogus = 1\n")
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    assert str(ei.value).startswith(f"{p}: ") and "'bogus'" in str(ei.value)


def test_parse_dict():
    d = {"name": "t", "seed": 1, "trials": 10, "axes": {"n_cpus": [2, 4]}}
    assert parse_spec(d) == spec_of("[axes]\nn_cpus = [2, 4]\n")
    assert parse_spec(MappingProxyType(d)) == parse_spec(d)  # any Mapping, as the signature says
    # JSON null is not "absent" for a parameter (it would silently mean the default)
    with pytest.raises(SpecError, match=r"^spec: base\.n_cpus = None is not allowed: integer in \[2, 65536\]$"):
        parse_spec({**d, "base": {"n_cpus": None}})
    with pytest.raises(SpecError, match=r"^spec: axes\.n_cpus = None is not allowed: a list of values"):
        parse_spec({**d, "axes": {"n_cpus": None}})


def test_examples_sizes():
    small = load_spec(EXAMPLES / "tdx-kexec-small.toml")
    from sweeps.grid import total_cpu_trials

    assert total_cpu_trials(small) <= 2e9
    cluster = load_spec(EXAMPLES / "tdx-kexec-cluster.toml")
    assert cluster.n_points == 10_920


finite = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(finite, min_size=1, max_size=6, unique=True),
    st.lists(st.integers(2, 65536), min_size=1, max_size=5, unique=True),
    st.integers(0, 2**64 - 1),
    st.integers(1, 10**12),
)
def test_round_trip_random(wb, cpus, seed, trials):
    d = {"name": "r", "seed": seed, "trials": trials, "axes": {"wbinvd_us": wb, "n_cpus": cpus}}
    s = parse_spec(d)
    s2 = parse_spec(s.to_toml())
    assert s2 == s and s2.spec_hash == s.spec_hash


# ---- one validation path: any input is a spec or one line naming what is wrong -----------

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
    | st.sampled_from(["auto", "naive", "cmc", "early_flush", "p_bad", "linspace", "range"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["linspace", "logspace", "range", "num", "n_cpus", "wbinvd_us",
                                       "mitigation", "target", "max_trials", "x"]), inner, max_size=3),
    max_leaves=8,
)
VALID = {
    "name": "t", "seed": 1, "trials": "auto", "shard_trials": 10, "estimator": "cmc", "task_seconds": 1.0,
    "base": {"wait": 0}, "axes": {"wbinvd_us": {"logspace": [1, 100], "num": 3}, "mitigation": ["none", "early_flush"]},
    "precision": {"target": 0.01, "max_trials": 100},
}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.sampled_from(["", *PARAM_NAMES]), junk)
def test_any_input_is_a_spec_or_one_line_naming_the_field(top, param, value):
    """Replace one top-level field (or one parameter under base/axes) of a valid spec by anything:
    parse_spec returns a spec or raises SpecError with one line that names the field and never
    pydantic's own wording (every field says what it allows)."""
    raw = json.loads(json.dumps(VALID))
    if top in ("base", "axes") and param:
        raw[top][param] = value
        named = param
    else:
        raw[top] = value
        named = top
    try:
        parse_spec(raw, where="s.toml")
    except SpecError as e:
        msg = str(e)
        assert "\n" not in msg and msg.startswith("s.toml: "), msg
        assert named in msg or (top == "trials" and "precision" in msg), msg
        assert "Input should" not in msg and "Field required" not in msg, msg
