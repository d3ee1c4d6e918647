"""Bad paths and CLI tidiness (issue 15, items 6 and 8): one line and exit 2 for every bad path,
no results dir when a cluster refuses us, Ray's noise handled, -o files with the umask's mode,
help texts, option names in errors, no prefix matching, one number format per column."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from sweeps.cli import build_parser, main

from sweep_helpers import ROOT, pin_rev1

FIXTURE = ROOT / "tests" / "fixtures" / "release1-naive"


def _unprivileged() -> list[str]:
    """A command prefix under which file permissions apply: as root, drop the capabilities that
    bypass them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH); as anyone else, nothing."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def _stoprace(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    e.update(env or {})
    return subprocess.run([*_unprivileged(), sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def _one_line(r: subprocess.CompletedProcess, command: str, needle: str) -> None:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"stoprace {command}: error: "), r.stderr
    assert needle in lines[0]


# ---- item 6: every bad path is one line and exit 2 ----------------------------------------


def test_unwritable_or_unreadable_paths_are_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    closed = tmp_path / "closed"
    shutil.copytree(FIXTURE, closed)
    closed.chmod(0o000)
    try:
        # an existing, empty, unwritable --out (was: PermissionError, exit 1)
        _one_line(_stoprace("run", str(FIXTURE / "spec.toml"), "--out", str(ro)), "run", "Permission denied")
        assert os.listdir(ro) == []
        # -o into an unwritable dir, for query and plot; no temporary file left
        _one_line(_stoprace("query", str(FIXTURE), "--sql", "select 1", "-o", str(ro / "x.csv")),
                  "query", f"cannot write '{ro / 'x.csv'}': Permission denied")
        _one_line(_stoprace("plot", str(FIXTURE), "--x", "n_cpus", "-o", str(ro / "x.png")),
                  "plot", "Permission denied")
        assert os.listdir(ro) == []
        # a results dir this user may not read
        for argv in (["query", str(closed), "--sql", "select 1"], ["capacity", str(closed), "--target-p", "0.01"],
                     ["replay", str(closed), "--point", "0" * 16, "--shard", "0", "--trial", "0"]):
            _one_line(_stoprace(*argv), argv[0], "Permission denied")
    finally:
        closed.chmod(0o755)
        ro.chmod(0o755)


def test_read_only_result_set_that_needs_writing_is_one_line_and_keeps_its_rows(tmp_path):
    d = tmp_path / "partial"
    shutil.copytree(ROOT / "tests" / "fixtures" / "release1-partial", d)
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    for p in [d, *d.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        (tmp_path / "pinned.toml").write_text(pin_rev1((d / "spec.toml").read_text()))
        r = _stoprace("run", str(tmp_path / "pinned.toml"), "--out", str(d), "--workers", "1")
        assert r.returncode == 2, r.stderr
        # refused before Ray starts (no start line), naming the dir: taking the writer lock is the
        # first write a run makes in an existing set
        assert r.stderr.strip().splitlines() == [
            f"stoprace run: error: {d / 'writer.lock'}: cannot create the writer lock: Permission denied"
        ]
    finally:
        for p in [d, *d.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before


# ---- item 8: -o files get the umask's mode ------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_output_files_get_the_umask_mode(tmp_path, umask, capsys):
    old = os.umask(umask)
    try:
        assert main(["query", str(FIXTURE), "--sql", "select 1 as x", "-o", str(tmp_path / "x.csv")]) == 0
        assert main(["query", str(FIXTURE), "--sql", "select 1 as x", "--format", "parquet",
                     "-o", str(tmp_path / "x.parquet")]) == 0
        assert main(["plot", str(FIXTURE), "--x", "n_cpus", "-o", str(tmp_path / "x.png")]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    for name in ("x.csv", "x.parquet", "x.png"):
        # what open(..., "w") would give: 0666 less the umask (mkstemp alone gives 0600)
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert sorted(os.listdir(tmp_path)) == ["x.csv", "x.parquet", "x.png"]  # no temporary files


# ---- item 8: help and error texts, prefix matching ----------------------------------------


def _subparsers():
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return parser, action.choices


def test_help_texts_show_percent_signs_once():
    parser, commands = _subparsers()
    assert "%%" not in parser.format_help()
    for name, sub in commands.items():
        text = sub.format_help()
        assert "%%" not in text, name
    # the four descriptions that said 95%% now say 95%
    for name in ("simulate", "query", "capacity", "plot"):
        assert "95%" in " ".join(commands[name].format_help().split()), name


def test_simulate_errors_name_the_option(stoprace):
    r = stoprace("simulate", "--n-cpus", "1", "--trials", "10")
    assert r.one_line_error("simulate") == "--n-cpus 1 is not allowed: integer in [2, 65536]"
    msg = stoprace("simulate", "--p-stall", "1.5", "--trials", "10").one_line_error("simulate")
    assert msg.startswith("--p-stall 1.5 is not allowed: ") and "option" not in msg


def test_no_prefix_matching_of_options(capsys):
    parser, commands = _subparsers()
    assert parser.allow_abbrev is False
    assert all(sub.allow_abbrev is False for sub in commands.values())
    for argv, abbrev in ((["simulate", "--n-cpu", "4", "--trials", "10"], "--n-cpu 4"),
                         (["query", str(FIXTURE), "--sql", "select 1", "--form", "csv"], "--form csv"),
                         (["run", "x.toml", "--work", "1"], "--work 1")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert f"unrecognized arguments: {abbrev}" in capsys.readouterr().err


def test_one_number_format_per_column():
    from queries.format import render_table

    t = pa.table({"t_max_us": [1011004.0, 1011004.5, 12.0], "t_mean_us": [1011004.0, 12.0, 3.0],
                  "n": pa.array([1011004, 2, 3], pa.int64())})
    lines = render_table(t).splitlines()
    rows = [ln.split() for ln in lines[2:5]]
    # a column with one non-integral value: every value in the same (4 significant digits) form
    assert [r[0] for r in rows] == ["1.011e6", "1.011e6", "12"]
    # an all-integral float column: integers, as the int column
    assert [r[1] for r in rows] == ["1011004", "12", "3"]
    assert [r[2] for r in rows] == ["1011004", "2", "3"]


# ---- item 8: a cluster that refuses us: one line, no flood, no results dir -----------------


@pytest.fixture(scope="module")
def token_cluster():
    """A one-node Ray cluster with token auth and a token nobody else has (its own process)."""
    code = (
        "import os, sys\n"
        "os.environ['RAY_AUTH_MODE'] = 'token'\n"
        f"os.environ['RAY_AUTH_TOKEN'] = '{uuid.uuid4().hex}'\n"
        "from ray.cluster_utils import Cluster\n"
        "c = Cluster(shutdown_at_exit=True)\n"
        "c.add_node(num_cpus=1)\n"
        "print(c.address, flush=True)\n"
        "sys.stdin.read()\n"
        "c.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        address = p.stdout.readline().strip()
        assert address, "the token-auth cluster did not start"
        yield address
    finally:
        p.stdin.close()  # the child shuts its cluster down
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.mark.slow
def test_tokenless_client_gets_one_line_and_no_results_dir(token_cluster, tmp_path):
    home = tmp_path / "home"  # no ~/.ray/auth_token here
    home.mkdir()
    env = {"HOME": str(home), "RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": ""}
    e = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    e.update(env)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(FIXTURE / "spec.toml"), "--address",
                        token_cluster, "--out", str(out)], cwd=ROOT, env=e, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        f"stoprace run: error: the Ray cluster at {token_cluster} requires its auth token: export "
        "RAY_AUTH_MODE=token and provide the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
    ]
    assert not out.exists()  # nothing created, so the next run (another spec, say) is not refused
