"""cluster/configs/: the Ray cluster launcher YAML and the KubeRay RayJob manifest parse, have the
keys their tools require, and every `stoprace ...` command in them (setup commands, the RayJob
entrypoint, the usage lines in their comments) is one this stoprace accepts."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from sweeps.cli import build_parser
from sweeps.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "cluster" / "configs"
LAUNCHER = CONFIGS / "aws-cluster.yaml"
RAYJOB = CONFIGS / "kuberay-rayjob.yaml"

_SHELL_OPS = {"&&", "||", ";", "|", "&"}


def stoprace_commands(shell: str) -> list[list[str]]:
    """The argv (after `stoprace`) of every stoprace invocation in a shell command line."""
    words = shlex.split(shell.replace(";", " ; "), comments=True)
    cmds, cur = [], []
    for w in words + [";"]:
        if w in _SHELL_OPS:
            cmds.append(cur)
            cur = []
        else:
            cur.append(w)
    out = []
    for c in cmds:
        c = [w for i, w in enumerate(c) if not re.match(r"^\d?[<>]", w) and not (i and re.match(r"^\d?[<>]+$", c[i - 1]))]
        for i, w in enumerate(c):
            if w.endswith("/stoprace") or w == "stoprace":
                out.append(c[i + 1 :])
                break
            if w == "-m" and c[i + 1 : i + 2] == ["sweeps.cli"]:
                out.append(c[i + 2 :])
                break
    return out


def parse_stoprace(argv: list[str], where: str):
    """Parse like `stoprace ARGV` would; fail (not exit) naming the command if argparse refuses it."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{where}: not a valid stoprace command (exit {e.code}): stoprace {shlex.join(argv)}")


def comment_commands(path: Path) -> list[list[str]]:
    """stoprace usage lines in a file's comments, with placeholders (JOB_ID, YOUR-BUCKET) as they are."""
    out = []
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*#\s+(stoprace\s.*)$", line)
        if m:
            out += stoprace_commands(m[1])
    return out


def test_stoprace_commands_helper():
    assert stoprace_commands("~/venv/bin/stoprace simulate --n-cpus 8 > /dev/null") == [["simulate", "--n-cpus", "8"]]
    assert stoprace_commands("cd x && python -m sweeps.cli run a.toml; echo hi") == [["run", "a.toml"]]
    assert stoprace_commands("pip install stoprace") == [[]]  # "stoprace" as a word: an empty argv, refused below
    with pytest.raises(pytest.fail.Exception):
        parse_stoprace(["run", "a.toml", "--no-such-option"], "test")


# ---- Ray cluster launcher ------------------------------------------------------------------


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def test_launcher_has_the_required_structure(launcher):
    for key in ("cluster_name", "max_workers", "provider", "auth", "available_node_types", "head_node_type",
                "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in launcher, key
    assert launcher["provider"]["type"] == "aws" and launcher["provider"]["region"]
    assert launcher["auth"]["ssh_user"]
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    workers = [t for t in types if t != launcher["head_node_type"]]
    assert workers
    for name, t in types.items():
        assert "node_config" in t and "resources" in t, name
        assert t["node_config"]["InstanceType"] and t["node_config"]["ImageId"], name
    for name in workers:
        assert 0 <= types[name]["min_workers"] <= types[name]["max_workers"] <= launcher["max_workers"]
    # the head runs the driver, not simulation tasks
    assert types[launcher["head_node_type"]]["resources"].get("CPU") == 0


def test_launcher_validates_against_rays_schema(launcher):
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(launcher, schema)


def test_launcher_starts_ray_and_installs_stoprace(launcher):
    head = " ".join(launcher["head_start_ray_commands"])
    assert "ray start --head" in head and "--dashboard-host=0.0.0.0" in head and "--port=6379" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(launcher["worker_start_ray_commands"])
    setup = launcher["setup_commands"]
    installs = [c for c in setup if "pip install" in c and ("stoprace" in c)]
    assert installs, "no install step for stoprace"
    # the repo is what gets installed: it is synced to the path pip installs from
    mounts = launcher["file_mounts"]
    assert any(remote in " ".join(installs) for remote in mounts), (mounts, installs)
    assert "." in mounts.values()
    assert any('"ray[default]' in c for c in setup)


def test_launcher_stoprace_commands_are_real(launcher):
    cmds = []
    for c in launcher["setup_commands"]:
        if "pip install" not in c:
            cmds += [(argv, c) for argv in stoprace_commands(c)]
    assert cmds, "expected a stoprace smoke test in setup_commands"
    usage = comment_commands(LAUNCHER)
    assert {a[0] for a in usage} >= {"submit", "status", "logs", "stop"}
    for argv, where in cmds + [(a, "comment") for a in usage]:
        args = parse_stoprace(argv, f"{LAUNCHER.name} {where}")
        if args.command == "submit":
            assert args.no_ship  # the nodes have stoprace installed
            assert (ROOT / args.spec).is_file() and load_spec(ROOT / args.spec)
            assert args.out.startswith("s3://")


# ---- KubeRay RayJob ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rayjob_docs() -> dict:
    docs = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_rayjob_has_the_required_structure(rayjob_docs):
    job = rayjob_docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert isinstance(spec["entrypoint"], str) and spec["shutdownAfterJobFinishes"] is True
    rc = spec["rayClusterSpec"]
    assert rc["rayVersion"]
    head = rc["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # KubeRay requires strings
    assert head["rayStartParams"]["num-cpus"] == "0"
    (hc,) = head["template"]["spec"]["containers"]
    assert {p["containerPort"] for p in hc["ports"]} >= {6379, 8265}
    images = {hc["image"]}
    assert rc["workerGroupSpecs"]
    for g in rc["workerGroupSpecs"]:
        assert g["groupName"] and isinstance(g["rayStartParams"], dict)
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        (wc,) = g["template"]["spec"]["containers"]
        images.add(wc["image"])
        assert wc["resources"]["requests"]["cpu"]
    assert len(images) == 1, "head and workers must run the same image (same Ray, same stoprace)"
    assert rc["rayVersion"] in next(iter(images)) or "stoprace" in next(iter(images))


def test_rayjob_entrypoint_is_a_real_run_of_the_mounted_spec(rayjob_docs):
    job = rayjob_docs["RayJob"]
    (argv,) = stoprace_commands(job["spec"]["entrypoint"])
    args = parse_stoprace(argv, f"{RAYJOB.name} entrypoint")
    assert args.command == "run" and args.no_progress and args.workers is None
    assert args.out.startswith(("s3://", "gs://", "/"))
    # the spec path is a key of the ConfigMap mounted in the head pod, where the entrypoint runs
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    vols = {v["name"]: v for v in head["volumes"]}
    spec_path = Path(args.spec)
    (vol,) = [n for n, p in mounts.items() if Path(p) == spec_path.parent]
    cm_name = vols[vol]["configMap"]["name"]
    cm = rayjob_docs["ConfigMap"]
    assert cm["metadata"]["name"] == cm_name and spec_path.name in cm["data"]
    # ... and it is the example cluster spec, valid and unchanged
    spec = parse_spec(cm["data"][spec_path.name], where="configmap")
    assert spec.spec_hash == load_spec(ROOT / "examples" / "tdx-kexec-cluster.toml").spec_hash
    for a in comment_commands(RAYJOB):
        parse_stoprace(a, f"{RAYJOB.name} comment")


def test_configs_are_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'cluster = ["configs/*"]' in text
