"""What a manifest commit costs: a plain atomic manifest write (formats 1 and 2, object stores) against a
generation (format 3 on a local filesystem: the manifest plus a link per committed file, made current
by one rename; queries.resultset.view), at a few set sizes, in the same run (ratios hold on a loaded
machine; the absolute times measure its neighbours). Never passes or fails on time.

    python benchmarks/bench_commit.py [--commits 40] [--files 2 30 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402  (benchmarks/machine.py)

from queries.resultset.manifest import FileEntry, Manifest, Segment, dump_manifest  # noqa: E402
from queries.resultset.storage import LocalBackend  # noqa: E402
from queries.resultset.view import collect_generations, commit  # noqa: E402


def _manifest(n_files: int) -> Manifest:
    segs = [Segment(tasks=[(i, i)], points=FileEntry(path=f"points/seg-ab-{i:06d}.parquet", size=1, sha256="x", rows=1))
            for i in range(n_files)]
    return Manifest(spec_hash="h", segments=segs, data_dir=".data")


def _time(kind: str, root: Path, m: Manifest, commits: int) -> float:
    (root / ".data" / "points").mkdir(parents=True)
    (root / ".data" / "events").mkdir()
    b = LocalBackend(root)
    data = dump_manifest(m)
    t0 = time.perf_counter()
    for i in range(commits):
        if kind == "plain":
            b.replace_bytes("manifest.json", data, "ab")
        else:
            commit(b, m, data, "ab", i)
            collect_generations(b, 0.0)  # as a writer does after each commit (here: at once)
    return (time.perf_counter() - t0) / commits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=40)
    ap.add_argument("--files", type=int, nargs="+", default=[2, 30, 200])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.files:
            m = _manifest(n)
            got: dict[str, list[float]] = {"plain": [], "generation": []}
            for r in range(args.repeats):
                for kind in got:  # interleaved, so both see the same load
                    got[kind].append(_time(kind, Path(tmp) / f"{kind}-{n}-{r}", m, args.commits))
            plain, gen = statistics.median(got["plain"]), statistics.median(got["generation"])
            print(f"{n:>5} files: plain manifest write {plain * 1e3:7.1f} ms, generation {gen * 1e3:7.1f} ms, "
                  f"ratio {gen / plain:5.1f}x")


if __name__ == "__main__":
    main()
