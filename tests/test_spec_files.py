"""Reading a spec file (issue 24 item 5): a UTF-8 byte-order mark is accepted, a UTF-16 file is
refused by name, and anything but a regular file (a character device, a FIFO, a directory, a socket)
or a file too big to be a spec is refused with one line before it is read, so nothing can block
or read without end. Each case as a user meets it: `stoprace run FILE` in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.spec import MAX_SPEC_BYTES, SpecError, load_spec, parse_spec

from sweep_helpers import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "release1-naive"


def _stoprace(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    return subprocess.run([sys.executable, "-m", "sweeps.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _one_line(r: subprocess.CompletedProcess, command: str = "run") -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    err = r.stderr
    assert err.count("\n") == 1 and err.startswith(f"stoprace {command}: error: ") and "Traceback" not in err, err
    return err.strip()


def test_non_regular_files_are_refused_by_what_they_are(tmp_path):
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)  # nobody writes it: opening it for reading the ordinary way would wait forever
    d = tmp_path / "specdir"
    d.mkdir()
    sock_path = tmp_path / "spec.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    link = tmp_path / "zero.toml"
    link.symlink_to("/dev/zero")  # a name that looks right, a device that never ends
    cases = [(fifo, "is a FIFO (named pipe)"), (d, "is a directory"), (sock_path, "is a socket"),
             (link, "is a character device")]
    try:
        for path, what in cases:
            out = tmp_path / "out"
            msg = _one_line(_stoprace("run", str(path), "--out", str(out), timeout=60))
            assert msg.endswith(f"{path}: {what}, expected a TOML spec file"), msg
            assert not out.exists()
        # the same one rule for submit (before any cluster is contacted)
        msg = _one_line(_stoprace("submit", str(fifo), "--address", "http://127.0.0.1:1", timeout=60), "submit")
        assert "is a FIFO (named pipe)" in msg
    finally:
        sock.close()


def test_a_file_too_big_to_be_a_spec_is_refused_after_a_bounded_read(tmp_path):
    p = tmp_path / "huge.toml"
    with open(p, "wb") as f:
        f.write(b"# " + b"x" * (MAX_SPEC_BYTES + 10) + b"\n")
    msg = _one_line(_stoprace("run", str(p), "--out", str(tmp_path / "o")))
    assert msg.endswith(f"{p}: larger than {MAX_SPEC_BYTES >> 20} MiB, not a spec file")
    # exactly at the bound it is read (and then judged as TOML: here a valid, empty-ish spec is not one)
    p.write_bytes(b"#" * (MAX_SPEC_BYTES - 1) + b"\n")
    with pytest.raises(SpecError) as ei:
        load_spec(p)
    assert "larger than" not in str(ei.value)


def test_a_utf8_byte_order_mark_is_accepted_and_utf16_is_named(tmp_path):
    text = (FIXTURE / "spec.toml").read_text()
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_spec(bom) == parse_spec(text)
    assert parse_spec("\ufeff" + text) == parse_spec(text)
    # a real run of the fixture's spec saved with a BOM: same spec hash, the stored spec without the BOM
    out = tmp_path / "out"
    r = _stoprace("run", str(bom), "--out", str(out), "--workers", "2", "--no-progress", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["spec_hash"] == parse_spec(text).spec_hash  # the spec's own hash: the mark is not part of it
    assert not (out / "spec.toml").read_bytes().startswith(b"\xef\xbb\xbf")
    # UTF-16 (what some Windows editors call "Unicode") is refused by name
    u16 = tmp_path / "u16.toml"
    u16.write_bytes(text.encode("utf-16"))
    msg = _one_line(_stoprace("run", str(u16), "--out", str(tmp_path / "o16")))
    assert msg.endswith(f"{u16}: is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    assert not Path(tmp_path / "o16").exists()
