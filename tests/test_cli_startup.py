"""The command line starts in a blink (issue 22 item 4) and every command module has one shape (issue 20 item 4).

Each check runs a fresh interpreter (sys.modules of this test process holds everything the other
tests imported) and asserts which heavy libraries it loaded: none of pyarrow, pandas, DuckDB,
matplotlib or Ray for `stoprace --help` and any command's `--help`, no Ray for `stoprace simulate`.
The time it takes is benchmarks/bench_startup.py's business, not a test's.
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

from sweeps.cli import COMMAND_MODULES, build_parser

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pyarrow", "pandas", "duckdb", "matplotlib", "ray")
COMMANDS = {cmd: mod for mod in COMMAND_MODULES for cmd in import_module(mod).COMMANDS}


def _loaded_after(argv: list[str]) -> tuple[list[str], str]:
    """Run `stoprace ARGV` in a fresh interpreter; (the HEAVY modules it loaded, its stdout)."""
    code = (
        "import json, sys\n"
        "from sweeps.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stderr.strip().splitlines()[-1]), r.stdout


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_loads_no_heavy_library(command):
    argv = ["--help"] if command is None else [command, "--help"]
    loaded, out = _loaded_after(argv)
    assert loaded == [], f"`stoprace {' '.join(argv)}` imported {loaded}"
    assert out.startswith(f"usage: stoprace {command or ''}".rstrip())
    if command is None:  # the listing names every command with its help line
        for cmd, mod in COMMANDS.items():
            assert f"    {cmd}" in out and import_module(mod).COMMANDS[cmd].split()[0] in out


def test_simulate_runs_without_ray_or_the_query_layer():
    loaded, out = _loaded_after(["simulate", "--trials", "2000", "--n-cpus", "16", "--json"])
    assert loaded == []
    rep = json.loads(out)
    assert rep["trials"] == 2000 and sum(v["k"] for v in rep["p"].values()) <= 2000


def test_the_lazy_parser_lists_what_the_full_one_does():
    """`main` registers only the command it runs and lists the others by their COMMANDS line: the
    top-level help must be the same as with every command registered."""
    assert build_parser("").format_help() == build_parser().format_help()
    for cmd in COMMANDS:
        assert build_parser(cmd).format_help() == build_parser().format_help()


def test_every_command_module_has_the_same_shape():
    """COMMANDS (name -> help line) and register(sub), which adds exactly those commands, each with a
    handler of that module taking the parsed arguments; a one-command module calls it `handle`."""
    seen: set[str] = set()
    for name in COMMAND_MODULES:
        mod = import_module(name)
        assert isinstance(mod.COMMANDS, dict) and mod.COMMANDS and callable(mod.register), name
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="command")
        mod.register(sub)
        assert list(sub.choices) == list(mod.COMMANDS), name
        assert not seen & set(mod.COMMANDS), f"{name} registers a command another module has"
        seen |= set(mod.COMMANDS)
        for cmd, p in sub.choices.items():
            func = p.get_default("func")
            assert inspect.unwrap(func).__module__ == name, (name, cmd)
            assert list(inspect.signature(func).parameters) == ["args"], (name, cmd)
            if len(mod.COMMANDS) == 1:
                assert func.__name__ == "handle", (name, cmd)


def test_command_modules_import_nothing_heavy_at_their_top():
    """What `stoprace --help` imports: every command module, none of whose top-level imports loads
    numpy or pydantic either (a command imports what it needs in register() or its handler)."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {COMMAND_MODULES!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(m for m in {(*HEAVY, 'numpy', 'pydantic', 'fastapi')!r} if m in sys.modules)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout + r.stderr
