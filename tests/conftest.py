"""Test environment: skip what this machine cannot run, with a reason that says what to
install, and make sure root tests leave no kernel state behind.

Markers (declared in setup.cfg):
  root     needs root, network namespaces and BPF (mininet's mnexec, bcc)
  bmv2     needs simple_switch_grpc (p4lang-bmv2)
  p4c      needs p4c-bm2-ss (p4lang-p4c)
  vagrant  needs vagrant
  slow     takes more than 30 s (never skipped automatically)

Nothing here imports bcc or mininet, so unit tests collect under any Python.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import uuid
import warnings

import pytest

from flexnet_lab.lab.runstate import ALIAS_PREFIX, NETNS_PREFIX, proc_starttime, runs_dir

RUNS_DIR = runs_dir()

# Inherited by every process a test starts (and by every lab node's shell, whose
# environment is a copy of ours): tells this session's processes from anyone else's.
SESSION_ENV = "FLEXNET_TEST_SESSION"

_RUNS_ROOT_TESTS = pytest.StashKey[bool]()  # set at collection: will any root test run?


def _root_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, BPF): run as root, e.g. sudo make test"
    if shutil.which("mnexec") is None:
        return "mnexec not found: install Debian's mininet (make setup)"
    if importlib.util.find_spec("bcc") is None:
        return ("bcc not importable: install Debian's python3-bpfcc and use the .venv "
                "made by make setup (system site packages)")
    return None


def _tool_skip_reason(tool: str, hint: str) -> str | None:
    return None if shutil.which(tool) else f"{tool} not found: {hint}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons = {
        "root": _root_skip_reason(),
        "bmv2": _tool_skip_reason(
            "simple_switch_grpc",
            "install p4lang-bmv2 (simple_switch_grpc), e.g. in the Vagrant VM: vagrant up"),
        "p4c": _tool_skip_reason("p4c-bm2-ss", "install p4lang-p4c"),
        "vagrant": _tool_skip_reason("vagrant", "apt-get install vagrant"),
    }
    runs_root_tests = False
    for item in items:
        skipped = False
        for marker, reason in reasons.items():
            if reason is not None and item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason=reason))
                skipped = True
        if not skipped and item.get_closest_marker("root") is not None:
            runs_root_tests = True
    config.stash[_RUNS_ROOT_TESTS] = runs_root_tests


# --- leftovers --------------------------------------------------------------------------

def _lab_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    return {n for n in names if n.startswith(NETNS_PREFIX)}


def _lab_interfaces() -> set[tuple[str, str]]:
    """(interface, alias) of the root namespace's interfaces tagged by a lab run."""
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    try:
        links = json.loads(out or "[]")
    except ValueError:
        return set()
    return {(link.get("ifname", "?"), link["ifalias"]) for link in links
            if str(link.get("ifalias", "")).startswith(ALIAS_PREFIX)}


def _run_of_netns(name: str) -> str:
    # flexnet-<run>-<node>
    return name[len(NETNS_PREFIX):].split("-", 1)[0]


def _foreign(run: str, marker: str) -> bool:
    """True when the run belongs to a live process outside this test session (someone
    else's lab on the same machine), which this session must not blame on itself."""
    try:
        with open(os.path.join(RUNS_DIR, run, "state.json")) as fh:
            state = json.load(fh)
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if pid == os.getpid():
        return False
    if state.get("pid_start") is not None and proc_starttime(pid) != state["pid_start"]:
        return False  # the owner is gone and its pid was reused
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read().split(b"\0")
    except OSError:  # the owner is gone: the run was left behind
        return False
    return f"{SESSION_ENV}={marker}".encode() not in env


@pytest.fixture(scope="session", autouse=True)
def no_lab_leftovers(request: pytest.FixtureRequest):
    """In sessions that run root tests: fail the run if a lab namespace (flexnet-*) or a
    tagged interface (alias flexnet:*) that appeared during the session is still there
    at its end. Clean up with `flexnet clean`."""
    if not request.config.stash.get(_RUNS_ROOT_TESTS, False):
        yield
        return
    marker = os.environ.setdefault(SESSION_ENV, uuid.uuid4().hex)
    namespaces_before, interfaces_before = _lab_namespaces(), _lab_interfaces()
    if namespaces_before or interfaces_before:
        warnings.warn(f"lab state from before this session (not checked): "
                      f"{len(namespaces_before)} flexnet-* namespaces, "
                      f"{len(interfaces_before)} flexnet:* interfaces; `flexnet clean` "
                      "removes what belongs to dead runs")
    yield
    namespaces = sorted(n for n in _lab_namespaces() - namespaces_before
                        if not _foreign(_run_of_netns(n), marker))
    interfaces = sorted(f"{name} ({alias})" for name, alias in _lab_interfaces() - interfaces_before
                        if not _foreign(alias[len(ALIAS_PREFIX):], marker))
    if namespaces or interfaces:
        pytest.fail("lab state left behind by this test session: "
                    + "; ".join(filter(None, [
                        "namespaces " + ", ".join(namespaces) if namespaces else "",
                        "interfaces " + ", ".join(interfaces) if interfaces else "",
                    ]))
                    + " (remove with: flexnet clean)", pytrace=False)


@pytest.fixture(scope="module")
def ctl(lab):
    """The controller of the module's `lab` (a module-scoped fixture of the test file), in
    this process; closed before the lab stops."""
    from flexnet_lab.control.controller import controller_for
    with controller_for(lab) as controller:
        yield controller


# --- raw frames from a lab host (the version-tag tests, eBPF and bmv2) ---------------------

def _send_frames(lab, host: str, frames_hex: list[str], count: int = 20) -> None:
    """Raw frames out of a host's interface (AF_PACKET, inside its namespace)."""
    h = lab.host(host)
    code = ("import socket,sys,time\n"
            f"s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW); s.bind(({h.defaultIntf().name!r},0))\n"
            f"for _ in range({count}):\n"
            f"    for f in {frames_hex!r}: s.send(bytes.fromhex(f)); time.sleep(0.002)\n")
    h.cmd(f"python3 -c \"{code}\"")


def _probe_frame(lab, src: str, dst: str, pid: int, stag: int | None) -> str:
    import struct
    from flexnet_lab.compiler.probe import PROBE_PORT, probe_payload
    s, d = lab.host(src), lab.host(dst)
    mac = lambda m: bytes.fromhex(m.replace(":", ""))  # noqa: E731
    payload = probe_payload(pid)     # UDP checksum 0, as the oracle's sender sends it
    udp = struct.pack(">HHHH", 40000, PROBE_PORT, 8 + len(payload), 0) + payload
    ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                               bytes(map(int, s.IP().split("."))),
                               bytes(map(int, d.IP().split(".")))))
    csum = sum(struct.unpack(">10H", bytes(ip)))
    csum = (csum & 0xFFFF) + (csum >> 16)
    ip[10:12] = struct.pack(">H", ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF)
    eth = mac(d.MAC()) + mac(s.MAC())
    if stag is not None:
        eth += struct.pack(">HH", 0x88A8, stag)
    return (eth + struct.pack(">H", 0x0800) + bytes(ip) + udp).hex()


def _forged_tag_trial(lab, ctl, switches, stamper: str = "l1", src: str = "h1",
                      dst: str = "h8", count: int = 20) -> tuple[dict, str]:
    """Tagging on in every switch, `stamper` stamping version slot 1 and the others 0;
    `src` sends `count` probe frames untagged and `count` with a forged tag claiming slot
    0. Returns the packets each switch ran per slot meanwhile, and what a capture on `dst`
    printed (tcpdump -e -xx). Tagging and stamps are put back on every exit path."""
    import time
    from flexnet_lab.plan.two_phase import link_switches
    handles = {n: ctl.handle(n) for n in switches}
    link_switches(handles, ctl.fabric)
    base = {n: h.stamp for n, h in handles.items()}
    host = lab.host(dst)
    tcpdump = host.popen(["tcpdump", "-i", host.defaultIntf().name, "-l", "-n", "-e", "-xx",
                          "udp"])
    time.sleep(1.0)
    try:
        for n, h in handles.items():
            h.set_tagging(True)
            h.set_stamp(1 if n == stamper else 0)
        before = {n: h.version_counts() for n, h in handles.items()}
        frame = _probe_frame(lab, src, dst, 7, None)
        forged = _probe_frame(lab, src, dst, 8, 0xFF0)     # claims slot 0
        _send_frames(lab, src, [frame, forged], count)
        time.sleep(0.5)
        counts = {n: [a - b for a, b in zip(h.version_counts(), before[n])]
                  for n, h in handles.items()}
    finally:
        for n, h in handles.items():
            h.set_tagging(False)
            h.set_stamp(base[n])
        time.sleep(0.3)
        tcpdump.terminate()
        out = tcpdump.communicate(timeout=5)[0]
    return counts, out.decode() if isinstance(out, bytes) else out


@pytest.fixture
def frames():
    """Raw frames from lab hosts: probe(lab, src, dst, id, stag) builds an oracle probe
    (hex), with an S-tag when stag is given; send(lab, host, frames_hex, count) sends them;
    forged_tag_trial(lab, ctl, switches) sends probes, half with a forged version tag,
    while one switch stamps another slot (the tag tests of eBPF and bmv2)."""
    from types import SimpleNamespace
    return SimpleNamespace(probe=_probe_frame, send=_send_frames,
                           forged_tag_trial=_forged_tag_trial)


# --- eBPF devices read back (the transaction tests) -----------------------------------------

def read_back_ebpf(ctl, names: list[str], hosts: tuple = ()) -> dict:
    """Every named eBPF device as the kernel says: program, both version slots the same
    pipeline, stamp, tagging, flow tracking, entries, defaults, maps (switches only;
    counters excluded: traffic moves them), health."""
    from flexnet_lab.compiler.ebpf import FCFG_MAP
    out = {}
    for n in names:
        h = ctl.handle(n)
        prog = h.program
        slots = [h._bpf.lookup(h._pipe_fd, i.to_bytes(4, "little"), 4) for i in (0, 1)]
        fcfg = h._root_maps.get(FCFG_MAP)
        out[n] = {
            "program": prog,
            "slots_same": slots[0] == slots[1] == h.running_prog_id().to_bytes(4, "little"),
            "stamp": h.stamp,
            "tagging": h._read_u32(h._slot_fd, 1),
            "flow_tracking": h._read_u32(fcfg, 0) if fcfg is not None else None,
            "entries": {t.name: sorted(map(repr, h.entries(t.name))) for t in prog.tables},
            "defaults": {t.name: h.default(t.name) for t in prog.tables},
            "maps": {m.name: h.read_map(m.name) for m in prog.maps
                     if m.kind != "counter" and n not in hosts},
            "health": h.health(),
        }
    return out


@pytest.fixture
def read_back():
    """read_back(ctl, names, hosts=()): eBPF devices read back from the kernel."""
    return read_back_ebpf


# --- failure injection (the transaction tests, eBPF and bmv2) --------------------------------

@contextlib.contextmanager
def _failing_once(handle, step: str, device: str):
    """handle.<step> raises TargetError(device, "injected failure") at its first call and
    works again after; yields the list of its calls (empty: it was never called)."""
    from flexnet_lab.errors import TargetError
    real, calls = getattr(handle, step), []

    def boom(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise TargetError(device, "injected failure")
        return real(*a, **kw)
    setattr(handle, step, boom)
    try:
        yield calls
    finally:
        delattr(handle, step)


@pytest.fixture
def fail_once():
    """with fail_once(handle, step, device) as calls: one injected failure of that step."""
    return _failing_once
