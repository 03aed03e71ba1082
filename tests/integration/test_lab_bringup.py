"""Bringing labs up and down for real: namespaces, eBPF switches, pings, run tags.

Every test here needs root (marker `root`). Tests that start the `flexnet` command as a
subprocess clean up after themselves with `flexnet clean --run <their run>` only, so a lab
someone else runs on the same machine is never touched.
"""
from __future__ import annotations

import glob
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
TOPOLOGIES = REPO / "topologies"
PYTHON = str(REPO / ".venv" / "bin" / "python")
if not os.path.exists(PYTHON):  # e.g. a VM whose venv lives elsewhere
    PYTHON = sys.executable
FLEXNET = [PYTHON, "-m", "flexnet_lab.cli"]
RUNS_DIR = "/run/flexnet/runs"

UP_TIMEOUT_S = 30
EXIT_TIMEOUT_S = 20


# --- helpers ---------------------------------------------------------------------------

def _flexnet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*FLEXNET, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def _state_of_pid(pid: int) -> dict | None:
    """The state.json of the run whose lab process is `pid` (None: no such run folder)."""
    for path in glob.glob(os.path.join(RUNS_DIR, "*", "state.json")):
        try:
            with open(path) as fh:
                state = json.load(fh)
        except (OSError, ValueError):  # being written or removed
            continue
        if state.get("pid") == pid:
            return state
    return None


class _LabProcess:
    """`flexnet up TOPOLOGY --no-cli` in a subprocess (its own session, like a program
    started from a terminal), with its output in files under tmp_path."""

    def __init__(self, tmp_path: Path, topology: str = "linear"):
        self.out = tmp_path / "up.stdout"
        self.err = tmp_path / "up.stderr"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [*FLEXNET, "up", topology, "--no-cli"], cwd=REPO, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True,
                # SIGINT may be ignored in a test runner started in the background; a
                # terminal's Ctrl-C reaches a process that has it at the default
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.run: str | None = None

    def output(self) -> str:
        return f"stdout:\n{self.out.read_text()}\nstderr:\n{self.err.read_text()}"

    def wait_up(self, timeout: float = UP_TIMEOUT_S) -> str:
        """Wait until the run folder of this process says "up"; returns the run id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = _state_of_pid(self.proc.pid)
            if state is not None:
                self.run = state["run"]
                if state.get("status") == "up":
                    return self.run
            if self.proc.poll() is not None:
                pytest.fail(f"flexnet up exited with {self.proc.returncode} before the lab "
                            f"was up\n{self.output()}")
            time.sleep(0.1)
        pytest.fail(f"no run folder with status 'up' and pid {self.proc.pid} after "
                    f"{timeout} s\n{self.output()}")

    def cleanup(self) -> None:
        """On every exit path: stop the process and remove what its run left (this run
        only)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=EXIT_TIMEOUT_S)
        if self.run is None:  # died early: find its run by pid, if it made one
            state = _state_of_pid(self.proc.pid)
            self.run = state["run"] if state else None
        if self.run is not None:
            from flexnet_lab.lab.clean import find_tagged
            if not find_tagged(run=self.run).empty():
                _flexnet("clean", "--run", self.run)


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _link_names() -> set[str]:
    out = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True,
                         check=True).stdout
    # "name@peer  STATE ...": the name without the @peer part
    return {line.split()[0].split("@")[0] for line in out.splitlines() if line.strip()}


def _run_dirs() -> set[str]:
    return set(os.listdir(RUNS_DIR)) if os.path.isdir(RUNS_DIR) else set()


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def _bpftool(*args: str):
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True)
    assert out.returncode == 0, f"bpftool {' '.join(args)}: {out.stdout} {out.stderr}"
    return json.loads(out.stdout) if out.stdout.strip() else None


def _hexbytes(words: list[str]) -> bytes:
    return bytes(int(w, 16) for w in words)


def _kernel_map_id(pin_dir: str, switch: str, map_name: str) -> int:
    """Id of the map `map_name` used by the pipeline that `switch` runs now, found from the
    kernel alone: the pinned program array -> the pipeline program -> its maps."""
    slots = _bpftool("map", "dump", "pinned", os.path.join(pin_dir, switch, "flx_pipe"))
    assert slots, f"{switch}: the program array has no pipeline in it"
    prog_id = int.from_bytes(_hexbytes(slots[0]["value"]), "little")
    prog = _bpftool("prog", "show", "id", str(prog_id))
    for map_id in prog.get("map_ids", []):
        if _bpftool("map", "show", "id", str(map_id))["name"] == map_name:
            return map_id
    pytest.fail(f"{switch}: pipeline program {prog_id} uses no map named {map_name}")


# --- tests -----------------------------------------------------------------------------

def test_fat_tree_ebpf_pings_all_and_leaves_nothing():
    from flexnet_lab.lab.clean import find_tagged
    from flexnet_lab.lab.network import Lab
    from flexnet_lab.topology import load_topology

    topo = load_topology(TOPOLOGIES / "fat-tree-k4.yaml")
    with Lab(topo, switch_kind="ebpf") as lab:
        run = lab.tag.run
        assert {s.target for s in lab.topology.switches} == {"ebpf"}
        assert {getattr(sw, "kind", None) for sw in lab.switches.values()} == {"ebpf"}
        assert len(lab.switches) == 20 and len(lab.net.hosts) == 16
        assert lab.bringup_s is not None and lab.bringup_s <= 10.0, \
            f"bring-up took {lab.bringup_s:.2f} s (limit 10 s)"
        result = lab.ping_all()
        assert result["sent"] == 16 * 15
        assert result["loss_pct"] == 0.0, f"failed pairs: {result['failed']}"
        assert result["received"] == result["sent"]
        assert not find_tagged(run=run).empty()  # the tags do find the live lab
    left = find_tagged(run=run)
    assert left.empty(), f"run {run} left tagged objects behind: {left}"


def test_ping_all_retries_then_names_the_unreachable_pairs():
    """A host whose link is down for a moment is reached on a retry; a host whose link
    stays down makes exactly its pairs fail, named, after every retry."""
    import threading

    from flexnet_lab.lab.network import Lab
    from flexnet_lab.topology import load_topology

    topo = load_topology(TOPOLOGIES / "leaf-spine.yaml")
    with Lab(topo, switch_kind="ebpf") as lab:
        h3 = lab.host("h3")
        link = ["ip", "-n", h3.netns_name, "link", "set", "dev", h3.defaultIntf().name]
        others = [f"h{n}" for n in range(1, 9) if n != 3]

        # down for 0.3 s: the first probes to and from h3 go unanswered, the retries
        # (after 1 s) get through
        subprocess.run(link + ["down"], check=True)
        timer = threading.Timer(0.3, lambda: subprocess.run(link + ["up"], check=True))
        timer.start()
        try:
            result = lab.ping_all(timeout_s=1.0, retries=2)
        finally:
            timer.cancel()
            subprocess.run(link + ["up"], check=True)
        assert result["sent"] == 56 and result["received"] == 56, result["failed"]
        assert result["loss_pct"] == 0.0 and result["failed"] == []
        assert result["retried"] >= 1
        assert all("h3" in pair for pair in result["retried_pairs"]), result["retried_pairs"]
        assert result["probes"] >= 56 + result["retried"]  # a retried pair: 2-3 probes
        # down for good: h3's 14 pairs fail after 1 + 2 probes each, the rest pass
        subprocess.run(link + ["down"], check=True)
        result = lab.ping_all(timeout_s=0.3, retries=2)
        expected = sorted([("h3", o) for o in others] + [(o, "h3") for o in others])
        assert result["failed"] == expected
        assert result["received"] == 42 and result["loss_pct"] == 100.0 * 14 / 56
        assert result["probes"] == 42 + 14 * 3


def test_bringup_failing_halfway_leaves_nothing():
    """The batched bring-up fails for real when a namespace name is taken (here by a
    namespace made in the run's own name beforehand): one clear error, and every shell,
    namespace and veth the run had made by then is gone."""
    from flexnet_lab.errors import LabError
    from flexnet_lab.lab.clean import find_tagged
    from flexnet_lab.lab.network import Lab
    from flexnet_lab.topology import load_topology

    lab = Lab(load_topology(TOPOLOGIES / "fat-tree-k4.yaml"), switch_kind="ebpf")
    taken = lab.tag.netns("h7")
    subprocess.run(["ip", "netns", "add", taken], check=True)
    try:
        with pytest.raises(LabError, match="naming namespaces"):
            lab.start()
        left = find_tagged(run=lab.tag.run)
        assert left.empty(), f"run {lab.tag.run} left tagged objects behind: {left}"
    finally:
        subprocess.run(["ip", "netns", "del", taken], capture_output=True)


def test_linear_route_entries_read_back_from_kernel():
    from flexnet_lab.lab.network import Lab
    from flexnet_lab.program.model import action_id
    from flexnet_lab.topology import load_topology

    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not found: apt-get install bpftool (make setup)")
    topo = load_topology(TOPOLOGIES / "linear.yaml")
    forward = action_id("forward")
    with Lab(topo, switch_kind="ebpf") as lab:
        assert set(lab.routes) == {"s1", "s2"}
        for name, routes in lab.routes.items():
            assert routes, f"the lab computed no routes for {name}"
            expected = {((int(ipaddress.IPv4Address(r.dst_ip)), r.prefixlen),): r.port
                        for r in routes}
            entries = lab.switches[name].entries("l3_fwd")
            assert len(entries) == len(routes)
            assert all(e.table == "l3_fwd" and e.action == "forward" and e.priority == 0
                       for e in entries), entries
            got = {e.match: e.args[0] for e in entries}
            assert all(len(e.args) == 1 for e in entries), entries
            assert got == expected, f"{name}: read back {got}, computed {expected}"

            # the same entries straight from the kernel (bpftool: no library code involved)
            map_id = _kernel_map_id(lab.tag.pin_dir, name, "t_l3_fwd")
            raw = _bpftool("map", "dump", "id", str(map_id))
            kernel = {}
            for item in raw:
                key, value = _hexbytes(item["key"]), _hexbytes(item["value"])
                plen = int.from_bytes(key[:4], "little")
                dst = int.from_bytes(key[4:8], "big")
                assert int.from_bytes(value[:4], "little") == forward
                kernel[((dst, plen),)] = int.from_bytes(value[8:16], "little")
            assert kernel == expected, f"{name}: kernel map {kernel}, computed {expected}"

        # entries() reads the map, not a copy: an entry written behind the library's back
        # shows up, and is gone again once deleted
        map_id = _kernel_map_id(lab.tag.pin_dir, "s1", "t_l3_fwd")
        key = ["0x20", "0", "0", "0", "192", "168", "99", "1"]
        value = [str(b) for b in forward.to_bytes(4, "little")] + ["0"] * 4 \
            + [str(b) for b in (7).to_bytes(8, "little")] + ["0"] * 24
        subprocess.run(["bpftool", "map", "update", "id", str(map_id), "key", *key,
                        "value", *value], check=True, capture_output=True)
        extra = ((int(ipaddress.IPv4Address("192.168.99.1")), 32),)
        matched = [e for e in lab.switches["s1"].entries("l3_fwd") if e.match == extra]
        assert len(matched) == 1 and matched[0].action == "forward" and matched[0].args == (7,)
        subprocess.run(["bpftool", "map", "delete", "id", str(map_id), "key", *key],
                       check=True, capture_output=True)
        assert extra not in {e.match for e in lab.switches["s1"].entries("l3_fwd")}
        assert lab.ping_all()["loss_pct"] == 0.0


def test_sigkill_then_clean_removes_only_the_run(tmp_path):
    from flexnet_lab.lab.clean import find_tagged

    for name in ("fxtest-a", "fxtest-b"):
        if _link_exists(name):
            pytest.fail(f"interface {name} already exists: not ours, not touching it")
    if "fxtest-ns" in _netns_names():
        pytest.fail("namespace fxtest-ns already exists: not ours, not touching it")

    lab = _LabProcess(tmp_path)
    sleeper = None
    made_veth = made_ns = False
    try:
        run = lab.wait_up()
        sleeper = subprocess.Popen(
            ["ip", "netns", "exec", f"flexnet-{run}-h1", "sleep", "1000"],
            env={**os.environ, "FLEXNET_RUN": run}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "add", "fxtest-a", "type", "veth", "peer", "name",
                        "fxtest-b"], check=True, capture_output=True)
        made_veth = True
        subprocess.run(["ip", "netns", "add", "fxtest-ns"], check=True, capture_output=True)
        made_ns = True
        deadline = time.monotonic() + 5  # the sleeper has exec'ed into the namespace
        while sleeper.pid not in {p for p, _ in find_tagged(run=run).processes}:
            assert sleeper.poll() is None, "the tagged sleep process died on its own"
            assert time.monotonic() < deadline, "the tagged sleep process is not found"
            time.sleep(0.05)

        lab.proc.send_signal(signal.SIGKILL)
        assert lab.proc.wait(timeout=EXIT_TIMEOUT_S) == -signal.SIGKILL

        left = find_tagged(run=run)
        assert not left.empty()
        assert left.namespaces, f"the namespaces of run {run} should survive a SIGKILL"
        assert sleeper.pid in {p for p, _ in left.processes}

        cleaned = _flexnet("clean", "--run", run)
        assert cleaned.returncode == 0, cleaned.stderr

        left = find_tagged(run=run)
        assert left.empty(), f"after clean --run {run}: {left}"
        assert sleeper.wait(timeout=5) == -signal.SIGKILL, "the tagged sleep survived"
        assert not any(n.startswith(f"flexnet-{run}-") for n in _netns_names())
        assert _link_exists("fxtest-a") and _link_exists("fxtest-b")
        assert "fxtest-ns" in _netns_names()
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait(timeout=5)
        lab.cleanup()
        if made_veth:
            subprocess.run(["ip", "link", "del", "fxtest-a"], capture_output=True)
        if made_ns:
            subprocess.run(["ip", "netns", "del", "fxtest-ns"], capture_output=True)
    assert not _link_exists("fxtest-a") and not _link_exists("fxtest-b")
    assert "fxtest-ns" not in _netns_names()


MALFORMED = {
    "netem-delay": ("links[0].delay", """\
name: bad
hosts:
  h1:
  h2:
switches:
  s1:
links:
  - {a: h1, b: s1, delay: 10ms}
  - [h2, s9]
"""),
    "unknown-node": ("links[1].b", """\
name: bad
hosts:
  h1:
  h2:
switches:
  s1:
links:
  - [h1, s1]
  - [h2, s9]
"""),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_check_malformed_topology_exits_2_and_touches_nothing(tmp_path, case):
    field, text = MALFORMED[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    # another lab may come or go meanwhile: a real leak shows on every attempt, someone
    # else's bring-up at the wrong moment does not
    for attempt in range(3):
        before = (_netns_names(), _link_names(), _run_dirs())
        result = _flexnet("check", str(path))
        after = (_netns_names(), _link_names(), _run_dirs())
        assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr}"
        assert str(path) in result.stderr, result.stderr
        assert field in result.stderr, result.stderr
        if case == "netem-delay":
            assert "netem" in result.stderr
        else:
            assert "s9" in result.stderr
        if before == after:
            break
    assert after[0] == before[0], f"namespaces changed: {after[0] ^ before[0]}"
    assert after[1] == before[1], f"interfaces changed: {after[1] ^ before[1]}"
    assert after[2] == before[2], f"run folders changed: {after[2] ^ before[2]}"


def test_cli_check_linear_passes():
    result = _flexnet("check", "linear")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert any("0.0% loss" in line for line in result.stdout.splitlines()), result.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_lab_tears_itself_down_on_signal(tmp_path, sig):
    from flexnet_lab.lab.clean import find_tagged

    lab = _LabProcess(tmp_path)
    try:
        run = lab.wait_up()
        assert not find_tagged(run=run).empty()
        if sig == signal.SIGINT:  # Ctrl-C: the terminal signals the foreground group
            os.killpg(lab.proc.pid, sig)
        else:  # what `flexnet down` does
            os.kill(lab.proc.pid, sig)
        try:
            rc = lab.proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"flexnet up still running {EXIT_TIMEOUT_S} s after "
                        f"{sig.name}\n{lab.output()}")
        assert rc == 130, f"exit {rc}\n{lab.output()}"
        left = find_tagged(run=run)
        assert left.empty(), f"after {sig.name}, run {run} left {left}\n{lab.output()}"
    finally:
        lab.cleanup()
