"""How does `stoprace serve` hold up? N concurrent clients on outcomes and capacity; latency while a sweep runs.

Starts `stoprace serve` as a real process on 127.0.0.1 (a free port) over the
example sweep's result set (issue 13 item 6), then for N = 1, 8, 32 client threads,
each sending requests back to back for `--seconds`:

- GET /api/sweeps/<name>/outcomes        (768 rows x ~60 columns of JSON)
- GET /api/sweeps/<name>/capacity?target_p=1e-3&by=wbinvd_us

and prints requests/s and p50/p99 latency. Then it submits a second sweep through
the API (the example spec under another name: the server runs it on an embedded
Ray in a child process) and measures one client on GET /api/sweeps and on outcomes
while that sweep runs, against the same measured idle: the ratio says how much a
running sweep slows the server down. Never passes or fails on time.

    python benchmarks/bench_serve.py [--results results/tdx] [--seconds 10] [--clients 1,8,32]

Without an existing --results dir it first runs the example sweep into a temp dir.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import httpx
from machine import machine
from serve_helpers import Server

EXAMPLE = ROOT / "examples" / "tdx-kexec-small.toml"


def hammer(url: str, n_clients: int, seconds: float) -> dict:
    """n_clients threads sending GET url back to back for `seconds`: count, rate, p50/p99 in ms, errors."""
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        nonlocal errors
        mine, bad = [], 0
        with httpx.Client(timeout=120) as c:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = c.get(url)
                mine.append(time.perf_counter() - t0)
                bad += r.status_code != 200
        with lock:
            lat.extend(mine)
            errors += bad

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {"n": len(lat), "rps": len(lat) / wall, "p50": 1e3 * lat[len(lat) // 2],
            "p99": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], "errors": errors}


def line(label: str, n: int, r: dict) -> str:
    return (f"{label:<10} {n:>3} clients  {r['rps']:8.1f} req/s  p50 {r['p50']:8.1f} ms  p99 {r['p99']:8.1f} ms"
            f"  ({r['n']} requests, {r['errors']} errors)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results/tdx", help="result set of the example sweep")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", default="1,8,32")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        served = tmp / "results"
        served.mkdir()
        src = Path(args.results)
        if (src / "manifest.json").is_file():
            shutil.copytree(src, served / "tdx")
        else:
            print(f"{src} is not a result set: running the example sweep first ...", flush=True)
            subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(EXAMPLE), "--out", str(served / "tdx"),
                            "--no-progress"], check=True, cwd=ROOT)
        import duckdb
        import fastapi
        import uvicorn

        print(f"# bench_serve  {machine(f'fastapi {fastapi.__version__}', f'uvicorn {uvicorn.__version__}', f'duckdb {duckdb.__version__}')}")
        print(f"# load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        server = Server(str(served), "--query-timeout", "120", cwd=tmp)
        try:
            base = f"{server.url}/api/sweeps/tdx"
            urls = {"outcomes": f"{base}/outcomes", "capacity": f"{base}/capacity?target_p=1e-3&by=wbinvd_us"}
            for u in urls.values():  # warm: connections opened, spec cached
                assert httpx.get(u, timeout=120).status_code == 200
            print(f"# {args.seconds:g} s per row; requests back to back from each client thread")
            for name, u in urls.items():
                for n in (int(x) for x in args.clients.split(",")):
                    print(line(name, n, hammer(u, n, args.seconds)), flush=True)

            list_url = f"{server.url}/api/sweeps"
            idle_list = hammer(list_url, 1, args.seconds / 2)
            idle_out = hammer(urls["outcomes"], 1, args.seconds / 2)
            spec = EXAMPLE.read_text().replace('name = "tdx-kexec-small"', 'name = "tdx-busy"')
            r = httpx.post(f"{server.url}/api/sweeps", content=spec.encode(),
                           headers={"content-type": "application/toml"}, timeout=60)
            assert r.status_code == 202, r.text
            t0 = time.monotonic()
            while httpx.get(f"{server.url}/api/sweeps/tdx-busy", timeout=60).json()["status"] != "running":
                time.sleep(0.2)
            while httpx.get(f"{server.url}/api/sweeps/tdx-busy", timeout=60).json()["tasks_done"] < 1:
                time.sleep(0.2)  # Ray is up and tasks are being stored
            busy_list = hammer(list_url, 1, args.seconds / 2)
            busy_out = hammer(urls["outcomes"], 1, args.seconds / 2)
            s = httpx.get(f"{server.url}/api/sweeps/tdx-busy", timeout=60).json()
            still = s["status"] == "running"
            print(f"# while sweep tdx-busy runs (started {time.monotonic() - t0:.0f} s before; "
                  f"{'still running' if still else 'FINISHED during the measurement'} at {100 * s['progress']:.0f}%):")
            print(line("sweeps idle", 1, idle_list))
            print(line("sweeps busy", 1, busy_list))
            print(line("outc. idle", 1, idle_out))
            print(line("outc. busy", 1, busy_out))
            print(f"# p50 ratio busy/idle: list {busy_list['p50'] / idle_list['p50']:.2f}, "
                  f"outcomes {busy_out['p50'] / idle_out['p50']:.2f}; p99 ratio: list "
                  f"{busy_list['p99'] / idle_list['p99']:.2f}, outcomes {busy_out['p99'] / idle_out['p99']:.2f}")
        finally:
            rc, out = server.stop()
            if rc != 0:
                print(out[-2000:], file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
