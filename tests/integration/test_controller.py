"""The controller (issue 9): apps by URI from another process, the control channel's
permissions, exact removal, drift repaired, a controller killed and restarted.

Root: real namespaces, BPF, the daemon as its own process."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")
if not os.path.exists(PYTHON):
    PYTHON = sys.executable
FLEXNET = [PYTHON, "-m", "flexnet_lab.cli"]


def _flexnet(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*FLEXNET, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def running_lab(tmp_path):
    """`flexnet up leaf-spine --no-cli` in another process, its controller answering."""
    from flexnet_lab.control.channel import ControlClient, socket_path
    from flexnet_lab.lab.runstate import runs_dir
    out = open(tmp_path / "up.log", "w")
    # eBPF switches even where bmv2 is installed (`auto` would make them bmv2): the drift
    # injected below is the eBPF datapath's
    topo = (REPO / "topologies" / "leaf-spine.yaml").read_text().replace(
        "target: auto", "target: ebpf")
    assert "target: ebpf" in topo
    (tmp_path / "leaf-spine.yaml").write_text(topo)
    proc = subprocess.Popen([*FLEXNET, "up", str(tmp_path / "leaf-spine.yaml"), "--no-cli"],
                            cwd=REPO, stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    run = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and run is None:
            text = (tmp_path / "up.log").read_text()
            if "controller on" in text:
                run = text.split(", run ", 1)[1].split(";", 1)[0]
            if proc.poll() is not None:
                pytest.fail(f"flexnet up exited: {text}")
            time.sleep(0.1)
        assert run, (tmp_path / "up.log").read_text()
        run_dir = os.path.join(runs_dir(), run)
        client = ControlClient(socket_path(run_dir))
        client.call("ping")
        yield run, run_dir, client
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if run:
            from flexnet_lab.lab.clean import clean, find_tagged
            if not find_tagged(run=run).empty():
                clean(run=run)
        out.close()
        assert proc.returncode is not None


def _device_view(client) -> dict:
    """Every switch's tables with their entries, and every host's programs, read back
    through the controller from the devices."""
    view = {}
    for sw in ("sp1", "sp2", "l1", "l2", "l3", "l4"):
        d = client.call("tables", device=sw)
        view[sw] = (d["program"], d["parser"], sorted(d["maps"]),
                    {t["name"]: sorted(map(str, client.call("entries", device=sw,
                                                            table=t["name"])))
                     for t in d["tables"]})
    for h in ("h1", "h3", "h8"):
        view[h] = client.call("programs", host=h)
    return view


def test_app_from_another_process_counts_and_removes_exactly(running_lab):
    run, run_dir, client = running_lab
    before = _device_view(client)
    pins_before = sorted(os.listdir(os.path.join("/run/flexnet/bpffs", run)))
    # a second process deploys: the sketch fits on no switch with 8 KiB, so it goes to h3
    r = _flexnet("app", "--run", run, "deploy", "flexnet://acme/cm", "count_min",
                 "--on", "l2,h3", "--switch-state-kb", "8")
    assert r.returncode == 0, r.stderr
    assert '"h3:xdp:ingress"' in r.stdout and "passed over" in r.stdout
    r = _flexnet("app", "--run", run, "deploy", "flexnet://acme/fc", "count_min",
                 "--on", "l2")
    assert r.returncode == 0, r.stderr
    # traffic to h3: the app's counter on the device moves
    ns = f"flexnet-{run}-h1"
    subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "20", "-i", "0.01", "-q",
                    "10.0.0.3"], capture_output=True, timeout=20,
                   env={**os.environ, "FLEXNET_RUN": run})
    shown = client.call("show", uri="flexnet://acme/cm")
    assert shown["runs_on"][0]["device"] == "h3:xdp:ingress"
    assert shown["runs_on"][0]["counters"]["packets"] >= 20
    assert shown["runs_on"][0]["maps"]["cms"]["non_zero"] > 0
    r = _flexnet("app", "--run", run, "show", "flexnet://acme/fc")
    assert r.returncode == 0 and '"l2"' in r.stdout
    listed = {a["uri"] for a in client.call("list")}
    assert listed == {"flexnet://acme/cm", "flexnet://acme/fc"}
    for uri in ("flexnet://acme/cm", "flexnet://acme/fc"):
        r = _flexnet("app", "--run", run, "remove", uri)
        assert r.returncode == 0, r.stderr
    assert client.call("list") == []
    assert _device_view(client) == before
    assert sorted(os.listdir(os.path.join("/run/flexnet/bpffs", run))) == pins_before


def test_migrate_and_scale_move_and_replicate_an_app(running_lab):
    run, run_dir, client = running_lab
    before = _device_view(client)
    # the sketch serves h1 -> h8: candidates are the switches on that path, then the hosts
    r = client.call("deploy", uri="flexnet://acme/cm",
                    spec={"function": "count_min", "serves": ["h1", "h8"]})
    path = r["devices"]
    assert path == ["l1"], r
    r = client.call("scale", uri="flexnet://acme/cm", to=3)
    assert r["devices"][0] == "l1" and len(r["devices"]) == 3, r
    for dev in r["devices"]:
        if ":" not in dev:   # a switch: the app's table is in its pipeline
            names = {t["name"] for t in client.call("tables", device=dev)["tables"]}
            assert "count_min_fn" in names, (dev, names)
        else:
            assert client.call("programs", host=dev.split(":")[0])
    scaled = r["devices"]
    r = client.call("scale", uri="flexnet://acme/cm", to=1)
    assert r["devices"] == ["l1"]
    for dev in scaled[1:]:
        if ":" not in dev:
            assert "count_min_fn" not in {t["name"] for t in
                                          client.call("tables", device=dev)["tables"]}
    # migrate: make-before-break in one change; the old device is as before
    r = client.call("migrate", uri="flexnet://acme/cm", to="h8")
    assert r["from"] == "l1" and r["to"] == "h8:xdp:ingress", r
    assert client.call("programs", host="h8") == {"h8:xdp:ingress": "count_min"}
    assert "count_min_fn" not in {t["name"] for t in client.call("tables", device="l1")["tables"]}
    shown = client.call("show", uri="flexnet://acme/cm")
    assert [d["device"] for d in shown["runs_on"]] == ["h8:xdp:ingress"]
    with pytest.raises(Exception, match="already runs on h8"):
        client.call("migrate", uri="flexnet://acme/cm", to="h8")
    client.call("remove", uri="flexnet://acme/cm")
    assert _device_view(client) == before


@pytest.mark.parametrize("words,needle", [
    (["show", "flexnet:/acme/cm"], "starts with flexnet://"),
    (["show", "flexnet://acme/nosuch"], "no such app"),
    (["remove", "flexnet://acme/nosuch"], "no such app"),
    (["deploy", "acme/cm", "count_min", "--on", "h3"], "starts with flexnet://"),
    (["deploy", "flexnet://Acme/cm", "count_min", "--on", "h3"], "tenant name"),
    (["deploy", "flexnet://acme/cm", "nosuchfn", "--on", "h3"], "not a library function"),
    (["deploy", "flexnet://acme/cm", "count_min", "--on", "zz9"], "no device"),
    (["deploy", "flexnet://acme/cm", "count_min", "--on", "l1", "--switch-state-kb", "1"],
     "no device can hold it"),
    (["migrate", "flexnet://acme/nosuch", "--to", "h1"], "no such app"),
    (["scale", "flexnet://acme/nosuch", "--to", "2"], "no such app"),
])
def test_bad_requests_refused_and_nothing_changes(running_lab, words, needle):
    run, run_dir, client = running_lab
    before = _device_view(client)
    changes = client.call("changes")
    r = _flexnet("app", "--run", run, *words)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert _device_view(client) == before and client.call("changes") == changes


def test_store_and_socket_are_roots_only(running_lab):
    run, run_dir, client = running_lab
    for name in ("intent.db", "control.sock", "fabric.json"):
        assert stat.S_IMODE(os.stat(os.path.join(run_dir, name)).st_mode) == 0o600, name
    sock = os.path.join(run_dir, "control.sock")
    pid = os.fork()
    if pid == 0:  # a non-root user tries the socket
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            import socket
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(sock)
            except PermissionError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "a non-root user reached the socket"
    assert client.call("ping")["pid"] > 0


def _events_after(client, since: int, kind: str, device: str, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in client.call("events", since=since)
                 if e["kind"] == kind and e["device"] == device]
        if found:
            return found
        time.sleep(0.05)
    return []


def test_drift_repaired_and_controller_restart_keeps_intent(running_lab):
    from flexnet_lab.targets.bpf_syscall import Bpf
    run, run_dir, client = running_lab
    client.call("delta", target="l*", path=str(REPO / "scenarios/deltas/acl-udp-9999.yaml"))
    client.call("entry", target="l*", table="acl", match=[17, 9999], action="drop")
    # drift: a tc filter deleted, a route entry deleted, a pin removed
    last = client.call("events")[-1]["id"]
    env = {**os.environ, "FLEXNET_RUN": run}
    subprocess.run(["ip", "netns", "exec", f"flexnet-{run}-l1", "tc", "filter", "del", "dev",
                    "l1-eth1", "ingress"], check=True, env=env)
    t0 = time.time()
    bpf = Bpf()
    fd = bpf.obj_get(f"/run/flexnet/bpffs/{run}/l2/t_l3_fwd")
    key = bpf.keys(fd, bpf.map_info(fd).key_size)[0]
    assert bpf.delete(fd, key)
    os.unlink(f"/run/flexnet/bpffs/{run}/l3/m_port_rx")
    for dev in ("l1", "l2", "l3"):
        found = _events_after(client, last, "repair", dev)
        assert found, f"{dev}: no repair"
        assert found[0]["at"] - t0 < 2.0
    assert bpf.lookup(fd, key, bpf.map_info(fd).value_size) is not None
    assert os.path.exists(f"/run/flexnet/bpffs/{run}/l3/m_port_rx")
    bpf.close(fd)
    # SIGKILL the controller: the supervisor starts another; the acknowledged changes
    # are in its intent and on the devices, and nothing is reloaded
    pid = client.call("ping")["pid"]
    before = _device_view(client)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if client.call("ping")["pid"] != pid:
                break
        except Exception:
            time.sleep(0.05)
    assert client.call("ping")["pid"] != pid
    assert _device_view(client) == before
    assert "acl" in {t["name"] for t in client.call("tables", device="l4")["tables"]}
    events = client.call("events", since=last)
    restarted = [e for e in events if e["kind"] == "start"]
    assert restarted and "restarted" in restarted[-1]["detail"]
    after_start = [e for e in events if e["id"] > restarted[-1]["id"] and e["kind"] == "repair"]
    assert after_start == [], after_start
