"""Malformed inputs through the real `flexnet` command, as a new user would meet them.

Every file under tests/data/malformed/ is one distinct defect (its first lines say which,
and the field the error must name). Each case must exit 2 within 2 s with one line on
stderr naming the file and the field, no traceback, and nothing created on the machine:
no namespace, tagged link, pin folder or run folder of a run this command started, no
process carrying its environment, and no output folder.
"""
from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data", "malformed")
FLEXNET = os.path.join(ROOT, ".venv", "bin", "flexnet")
LIMIT_S = 2.0
# root: what a case might leave (namespaces, links, pins, other users' processes) can
# only be seen as root
pytestmark = pytest.mark.root


def _cases(kind: str, ext: str = "yaml") -> list[str]:
    return sorted(glob.glob(os.path.join(DATA, kind, f"*.{ext}")))


def _header(path: str) -> dict:
    out = {}
    with open(path, errors="replace") as fh:
        for line in fh.read(4096).splitlines():
            if line.startswith("# ") and ":" in line:
                key, _, value = line[2:].partition(":")
                out[key.strip()] = value.strip()
    return out


def _machine() -> dict[str, set]:
    """Tagged objects by run tag, plus state files (pid per run)."""
    from flexnet_lab.lab.clean import find_tagged
    from flexnet_lab.lab.runstate import read_states
    found = find_tagged()
    objects = set(found.namespaces) | {f"link:{n}" for n in found.links} | \
        set(found.pin_dirs) | set(found.run_dirs)
    return {"objects": objects,
            "pids": {str(st.get("run")): st.get("pid") for st in read_states()}}


def _marked_processes(marker: str) -> list[int]:
    me = os.getpid()
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if marker.encode() in fh.read() and pid != me:
                    found.append(pid)
        except OSError:
            continue
    return found


def _run(args: list[str], tmp_path) -> tuple[subprocess.CompletedProcess, float, list[str]]:
    """Run flexnet; returns the result, its wall time, and what it left on the machine."""
    marker = f"FLEXNET_MALFORMED_CASE={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    before = _machine()
    t0 = time.monotonic()
    proc = subprocess.Popen([FLEXNET, *args], cwd=str(tmp_path), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    after = _machine()
    # other labs may run on this machine: only what a run of this command owns counts
    ours = {run for run, pid in after["pids"].items() if pid == proc.pid}
    left = [o for o in after["objects"] - before["objects"] if any(r in o for r in ours)]
    left += [f"process {p}" for p in _marked_processes(marker)]
    return res, elapsed, left


def _check(res, elapsed: float, left: list[str], names: list[str], field: str,
           limit: float = LIMIT_S) -> None:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    shown = res.stderr.strip()
    assert res.returncode == 2, f"exit {res.returncode}: {res.stdout[-500:]} {shown[-500:]}"
    assert "Traceback" not in res.stderr + res.stdout, shown[-800:]
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {shown[:800]}"
    assert len(lines[0]) < 600, f"a long message: {lines[0][:200]}..."
    for name in names:
        assert name in lines[0], f"{name!r} not named: {lines[0]}"
    assert field in lines[0], f"field {field!r} not named: {lines[0]}"
    assert elapsed < limit, f"took {elapsed:.2f} s: {lines[0]}"
    assert not left, f"left behind: {left}"


@pytest.mark.parametrize("path", _cases("topologies"), ids=os.path.basename)
def test_malformed_topology(path, tmp_path):
    res, elapsed, left = _run(["check", path], tmp_path)
    _check(res, elapsed, left, [os.path.basename(path)], _header(path)["field"])


@pytest.mark.parametrize("path", _cases("scenarios"), ids=os.path.basename)
def test_malformed_scenario(path, tmp_path):
    field = _header(path)["field"]
    res, elapsed, left = _run(["run", path, "--results", str(tmp_path / "results")], tmp_path)
    named = [] if field == "<name>" else [os.path.basename(path)]  # the topology's name
    _check(res, elapsed, left, named, field)
    assert not (tmp_path / "results").exists(), "a results folder was made for a refused run"


@pytest.mark.parametrize("path", _cases("deltas"), ids=os.path.basename)
def test_malformed_delta(path, tmp_path):
    """A delta goes to the lab in a scenario: this one applies it to l1 at t=2 s."""
    scenario = tmp_path / "apply-delta.yaml"
    scenario.write_text(json.dumps({
        "topology": "leaf-spine",
        "traffic": {"duration": 5, "flows": [{"name": "f", "src": "h1", "dst": "h8"}]},
        "changes": [{"at": 2, "switch": "l1", "delta": path}]}))
    res, elapsed, left = _run(["run", str(scenario), "--results", str(tmp_path / "r")], tmp_path)
    _check(res, elapsed, left, [os.path.basename(path), "changes[0].delta"],
           _header(path)["field"])


@pytest.mark.parametrize("path", _cases("programs"), ids=os.path.basename)
def test_malformed_program(path, tmp_path):
    res, elapsed, left = _run(["compile", path, "--target", "ebpf", "-o",
                               str(tmp_path / "out")], tmp_path)
    _check(res, elapsed, left, [os.path.basename(path)], _header(path)["field"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", _cases("cli", "args"), ids=os.path.basename)
def test_malformed_command_line(path, tmp_path):
    line = [ln for ln in open(path).read().splitlines() if ln and not ln.startswith("#")][0]
    args = shlex.split(line.format(tmp=tmp_path, repo=ROOT))
    res, elapsed, left = _run(args, tmp_path)
    _check(res, elapsed, left, [], _header(path)["field"])
    assert not (tmp_path / "out").exists()


EXERCISE = os.path.join(ROOT, "tests", "data", "exercises", "triangle")


def _exercise_cases() -> list[str]:
    return sorted(glob.glob(os.path.join(DATA, "exercises", "*", "case.txt")))


@pytest.mark.parametrize("case", _exercise_cases(),
                         ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_malformed_exercise(case, tmp_path):
    """A coursework exercise (tests/data/exercises/triangle) with one file replaced by the
    case's: `flexnet check DIR` refuses it naming the file and the field. Cases marked
    `needs: p4c` are found against the compiled program's P4Info (p4c runs first: up to
    8 s allowed)."""
    import shutil
    head = _header(case)
    if head.get("needs") == "p4c" and shutil.which("p4c-bm2-ss") is None:
        pytest.skip("p4c-bm2-ss not found: install p4lang-p4c")
    ex = tmp_path / "ex"
    shutil.copytree(EXERCISE, ex)
    folder = os.path.dirname(case)
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f != "case.txt":
                rel = os.path.relpath(os.path.join(dirpath, f), folder)
                shutil.copyfile(os.path.join(dirpath, f), ex / rel)
    res, elapsed, left = _run(["check", str(ex)], tmp_path)
    limit = 8.0 if head.get("needs") == "p4c" else LIMIT_S   # p4c: 1-2.5 s when loaded
    _check(res, elapsed, left, [head["file"]], head["field"], limit)


def test_there_are_at_least_60_distinct_cases():
    files = [p for kind in ("topologies", "scenarios", "deltas", "programs")
             for p in _cases(kind)] + _cases("cli", "args")
    defects = {_header(p)["defect"] for p in files}
    assert len(files) >= 60 and len(defects) == len(files)
