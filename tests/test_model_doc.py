"""The parameter table of MODEL.md ("Defaults") equals Params: same names, same order, same
defaults, so the normative model and the code cannot drift apart silently (issue 14 item 5).

MODEL.md lives beside the repo (../shared/docs/MODEL.md); the test is skipped, saying so,
where that file is absent (e.g. a clone of the repo alone).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.params import PARAM_SPECS, Params

MODEL_MD = Path(__file__).resolve().parents[2] / "shared/docs/MODEL.md"


def model_defaults(text: str) -> list[tuple[str, str]]:
    """(name, default as written) per parameter of the "## Defaults" table, in its order."""
    section = text.split("## Defaults", 1)[1].split("\n## ", 1)[0]
    out: list[tuple[str, str]] = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue  # header, separator, prose
        names = re.findall(r"`([a-z0-9_]+)`", cells[0])
        values = [v.strip().strip("`") for v in cells[1].split(",")]
        assert len(names) == len(values), f"MODEL.md row {line!r}: {len(names)} names, {len(values)} defaults"
        out += list(zip(names, values))
    return out


def test_parser_reads_a_known_table():
    text = "x\n## Defaults (a note)\n\n| parameter | default | note |\n|---|---|---|\n" \
           "| `a_us`, `b` | 1e-3, 5 | x, y |\n| `m` | `none` | |\n\n## Next\n| `z` | 1 | |\n"
    assert model_defaults(text) == [("a_us", "1e-3"), ("b", "5"), ("m", "none")]


@pytest.mark.skipif(not MODEL_MD.is_file(), reason=f"MODEL.md not found at {MODEL_MD} (the repo is not beside shared/docs)")
def test_model_md_parameter_table_equals_params():
    doc = model_defaults(MODEL_MD.read_text(encoding="utf-8"))
    assert [n for n, _ in doc] == list(Params.model_fields)
    for (name, written), s in zip(doc, PARAM_SPECS):
        value = written if s.kind == "str" else s.py_type(float(written))
        assert value == s.default and (s.kind == "str" or float(written) == s.default), (name, written, s.default)
