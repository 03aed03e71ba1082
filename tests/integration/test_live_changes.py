"""Live changes on real namespaces and BPF, measured with real iperf3 traffic.

Every test here needs root (marker `root`). Most share one linear lab (h1 - s1 - s2 - h2,
eBPF switches) for the module and its controller (every change goes through it); a test
that changes a device's program undoes its change before it ends, so the next test starts
from the base program. iperf3 processes are stopped on every exit path (Traffic.stop()).
"""
from __future__ import annotations

import dataclasses
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
TOPOLOGIES = REPO / "topologies"
DELTAS = REPO / "scenarios" / "deltas"
ACL_DELTA = DELTAS / "acl-udp-9999.yaml"
SHIM_DELTA = DELTAS / "shim-parser.yaml"
PYTHON = str(REPO / ".venv" / "bin" / "python")
if not os.path.exists(PYTHON):  # e.g. a VM whose venv lives elsewhere
    PYTHON = sys.executable

H2_XDP = "h2:xdp:ingress"


# --- fixtures and helpers -----------------------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    from flexnet_lab.lab.network import Lab
    from flexnet_lab.topology import load_topology

    with Lab(load_topology(TOPOLOGIES / "linear.yaml"), switch_kind="ebpf") as lab:
        reach = lab.ping_all()  # also resolves ARP before any flow
        assert reach["loss_pct"] == 0.0, reach
        yield lab


def _h2_flow_counter(ctl):
    """h2's XDP hook running flow_counter (attached on first use, swapped back if not);
    returns the hook's target."""
    from flexnet_lab.program import library

    running = ctl.host_programs().get(H2_XDP)
    if running is None:
        ctl.attach("h2", library.flow_counter(), "xdp")
    elif running != "flow_counter":
        ctl.swap("h2", library.flow_counter(), "xdp", "ingress")
    return ctl.handle(H2_XDP)


def _precompile(lab, program, hook: str, role: str) -> None:
    """bcc compiles once per source text: do it before the traffic, not during it."""
    from flexnet_lab.compiler.ebpf import generate
    lab.compiler.compile(generate(program, hook, role).text, ["pipeline"])


def _udp(name: str, rate_bps: int, duration_s: float, port: int = 5201, src: str = "h1",
         dst: str = "h2"):
    from flexnet_lab.verify.traffic import FlowSpec
    return FlowSpec(name, src, dst, proto="udp", rate_bps=rate_bps, duration_s=duration_s,
                    port=port)


def _run(lab, specs, during=None):
    """Start the flows, call during(t0) while they run, return their results."""
    from flexnet_lab.verify.traffic import Traffic

    traffic = Traffic(lab, list(specs))
    before = _counters(lab, specs)
    try:
        t0 = traffic.start()
        if during is not None:
            during(t0)
        results = traffic.results()
    finally:
        traffic.stop()
    time.sleep(0.1)
    after = _counters(lab, specs)
    diag = {k: after[k] - before[k] for k in after}
    for r in results:
        r.diag = diag  # where packets went, for failure messages
    for r in results:
        assert r.error is None, f"flow {r.spec.name}: iperf3: {r.error}"
        assert r.sent > 0 and r.received > 0, f"flow {r.spec.name}: {r.to_json()}"
    return results


def _counters(lab, specs) -> dict[str, int]:
    """Counters along the flows' paths: switch drops, what the switch in front of each
    receiver sent it, what the receiver's UDP stack took in or refused."""
    out = {}
    for name, sw in lab.switches.items():
        pc = sw.port_counters()
        out[f"{name}.dropped"] = pc[0]["dropped_packets"]
        for dst in {spec.dst for spec in specs}:
            if lab.topology.host_link(dst)[0] == name:
                out[f"{name}.tx_to_{dst}"] = pc[lab.topology.host_link(dst)[1]]["tx_packets"]
    for dst in {spec.dst for spec in specs}:
        lines = [ln.split() for ln in lab.host(dst).cmd("grep Udp: /proc/net/snmp").splitlines()]
        udp = dict(zip(lines[0][1:], lines[1][1:]))
        for key in ("InDatagrams", "RcvbufErrors", "InErrors"):
            out[f"{dst}.udp.{key}"] = int(udp[key])
    return out


def _delivered(flow) -> bool:
    """Nothing lost in the network: no sequence gap at the receiver, and at most the few
    datagrams iperf3's server may leave unread when the test ends (the scenario verdict's
    tolerance, verify/scenario.py TAIL_TOLERANCE)."""
    from flexnet_lab.verify.scenario import TAIL_TOLERANCE
    return flow.gap_lost == 0 and flow.tail_lost <= TAIL_TOLERANCE


def _loss(r) -> str:
    bad = [(round(i.start, 1), i.lost) for i in r.intervals if i.lost]
    return (f"flow {r.spec.name}: {r.lost} lost of {r.sent} sent ({r.received} received); "
            f"intervals with loss (start s, lost): {bad[:20]}; counters during the run: "
            f"{getattr(r, 'diag', {})}")


def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


def _pipe_prog_id(lab, device: str) -> int | None:
    """Id of the program in the device's tail-call slot 0, from the kernel (bpftool)."""
    if shutil.which("bpftool") is None:
        return None
    path = os.path.join(lab.tag.pin_dir, device, "flx_pipe")
    out = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", path],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    slots = json.loads(out.stdout)
    assert slots, f"{device}: empty program array"
    return int.from_bytes(bytes(int(b, 16) for b in slots[0]["value"]), "little")


def _dropped(sw) -> int:
    return sw.port_counters()[0]["dropped_packets"]


# --- 1. host hot swap under load ----------------------------------------------------------

def test_host_hot_swap_under_load_loses_nothing(lab, ctl):
    from flexnet_lab.program import library

    dp = _h2_flow_counter(ctl)
    fc = library.flow_counter()
    rl = library.rate_limiter(rate_bytes=125_000_000, burst=12_500_000)  # 1 Gbit/s
    for program in (fc, rl):
        _precompile(lab, program, "xdp", "host")
    before = dp.read_map("pkts")[0][0]
    records = []

    def swaps(t0):
        _sleep_until(t0 + 1.0)
        for _ in range(12):  # flow_counter -> rate_limiter -> flow_counter, 12 times
            records.extend(ctl.swap("h2", rl, "xdp", "ingress"))
            assert dp.program.name == "rate_limiter"
            time.sleep(0.08)
            records.extend(ctl.swap("h2", fc, "xdp", "ingress"))
            assert dp.program.name == "flow_counter"
            time.sleep(0.08)

    (flow,) = _run(lab, [_udp("udp1", 200_000_000, 6)], swaps)
    assert len(records) == 24
    assert all(r.kind in ("pipeline", "full_swap") for r in records), \
        [r.kind for r in records]
    assert all(r.compile_ms < 50 for r in records), \
        f"a swap compiled during the flow: {[round(r.compile_ms) for r in records]}"
    assert ctl.handle(H2_XDP) is dp and dp.program == fc
    assert ctl.device_intent(H2_XDP).program == fc
    assert _delivered(flow), _loss(flow)
    # the pkts counter is shared by both programs: it kept counting across all 24 swaps
    counted = dp.read_map("pkts")[0][0] - before
    assert counted >= flow.received, \
        f"pkts counted {counted} packets, iperf3 received {flow.received} datagrams"


# --- 2. switch table add/remove under load ------------------------------------------------

def test_switch_table_add_remove_under_load_loses_nothing(lab, ctl):
    from flexnet_lab.program.delta import load_delta

    s1 = ctl.handle("s1")
    base = s1.program
    assert s1.program.table("acl") is None
    routes = s1.entries("l3_fwd")
    assert routes, "s1 has no routes"
    acl = load_delta(ACL_DELTA)
    with_acl, undo = acl.apply(base)
    for program in (base, with_acl):
        _precompile(lab, program, "tc", "switch")
    applied = []

    def changes(t0):
        _sleep_until(t0 + 0.8)
        try:
            for i in range(20):
                delta = acl if i % 2 == 0 else undo
                (rec,), _ = ctl.apply_delta("s1", delta)
                applied.append((delta.name, rec))
                has_acl = s1.program.table("acl") is not None
                assert has_acl == (i % 2 == 0), f"change {i}: acl table present={has_acl}"
                got = s1.entries("l3_fwd")
                assert got == routes, f"change {i} ({delta.name}): l3_fwd {got} != {routes}"
                time.sleep(0.15)
        finally:
            if s1.program.table("acl") is not None:  # leave the base program behind
                ctl.apply_delta("s1", undo)

    (flow,) = _run(lab, [_udp("udp1", 200_000_000, 6)], changes)
    assert len(applied) == 20
    assert s1.program == base
    assert s1.entries("l3_fwd") == routes
    assert _delivered(flow), _loss(flow)


# --- 3. the ACL does what it says ---------------------------------------------------------

def test_acl_drops_udp_9999_and_nothing_else(lab, ctl):
    from flexnet_lab.program.delta import load_delta

    s1 = ctl.handle("s1")
    base = s1.program
    _, undo = ctl.apply_delta("s1", load_delta(ACL_DELTA))
    try:
        dropped_before = []

        def block(t0):
            # after iperf3's UDP handshake (its first datagram to the port): the ACL
            # drops every data datagram from here on
            _sleep_until(t0 + 0.3)
            dropped_before.append(_dropped(s1))
            ctl.insert_entry("s1", "acl", (17, 9999), "drop")

        blocked, other = _run(lab, [_udp("udp9999", 50_000_000, 5, port=9999),
                                    _udp("udp5201", 100_000_000, 5, port=5201)], block)
        time.sleep(0.2)
        dropped = _dropped(s1) - dropped_before[0]
        assert [e.match for e in s1.entries("acl")] == [(17, 9999)]
    finally:
        ctl.apply_inverses(undo)
    assert s1.program == base
    assert blocked.spec.port == 9999 and other.spec.port == 5201
    lost = blocked.sent - blocked.received
    assert lost >= 0.9 * blocked.sent, _loss(blocked)
    assert _delivered(other), _loss(other)
    # s1 counted the ACL's drops (and perhaps a few stray packets of its own)
    assert lost <= dropped <= lost * 1.02 + 20, \
        f"s1 dropped {dropped} packets; the 9999 flow lost {lost}"


# --- 4. a parser state added at runtime -----------------------------------------------------

RECEIVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((sys.argv[1], 0))
s.settimeout(0.05)
print("ready", flush=True)
n, end = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        data, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    if addr[2] != socket.PACKET_OUTGOING and data[12:14] == b"\x88\xb5":
        n += 1
print(n, flush=True)
"""

SENDER = r"""
import socket, struct, sys, time
ifname, dst_mac, src_mac, src_ip, dst_ip, count = sys.argv[1:7]
mac = lambda m: bytes.fromhex(m.replace(":", ""))
payload = b"flexnet shim test".ljust(32, b".")
udp = struct.pack("!HHHH", 40000, 40001, 8 + len(payload), 0)
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(payload), 1, 0, 64, 17, 0,
                 socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
c = sum(struct.unpack("!10H", ip))
c = (c & 0xFFFF) + (c >> 16)
c = (c & 0xFFFF) + (c >> 16)
ip = ip[:10] + struct.pack("!H", ~c & 0xFFFF) + ip[12:]
shim = struct.pack("!HBBH", 7, 0, 0, 0x0800)   # path_id, hop_count, flags, next_type
frame = mac(dst_mac) + mac(src_mac) + struct.pack("!H", 0x88B5) + shim + ip + udp + payload
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
for _ in range(int(count)):
    s.send(frame)
    time.sleep(0.001)
print("sent", count, flush=True)
"""


def _shim_frames_received(lab, count: int = 200, listen_s: float = 2.0) -> int:
    """Send `count` shimmed frames h1 -> h2; how many h2-eth0 saw."""
    h1, h2 = lab.host("h1"), lab.host("h2")
    rx = h2.popen([PYTHON, "-c", RECEIVER, h2.defaultIntf().name, str(listen_s)])
    tx = None
    try:
        ready, _, _ = select.select([rx.stdout], [], [], 10)
        assert ready, "the receiver did not start"
        line = rx.stdout.readline().decode().strip()
        assert line == "ready", f"receiver: {line!r} {rx.stderr.read().decode()}"
        tx = h1.popen([PYTHON, "-c", SENDER, h1.defaultIntf().name, h2.MAC(), h1.MAC(),
                       h1.IP(), h2.IP(), str(count)])
        out, err = tx.communicate(timeout=20)
        assert tx.returncode == 0, f"sender: {out!r} {err.decode()}"
        out, err = rx.communicate(timeout=listen_s + 10)
        assert rx.returncode == 0, f"receiver: {err.decode()}"
        return int(out.decode().split()[-1])
    finally:
        for p in (tx, rx):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_parser_state_added_at_runtime_forwards_shim_and_removing_restores(lab, ctl):
    from flexnet_lab.program.delta import load_delta

    s1, s2 = ctl.handle("s1"), ctl.handle("s2")
    bases = {"s1": s1.program, "s2": s2.program}
    shim = load_delta(SHIM_DELTA)

    d0 = _dropped(s1)
    assert _shim_frames_received(lab) == 0
    assert _dropped(s1) - d0 >= 200, "s1 did not count the shimmed frames as dropped"

    undo = {}
    try:
        records, undo = ctl.apply_delta("s[12]", shim)  # the frames cross both switches
        assert sorted(r.device for r in records) == ["s1", "s2"]
        assert s1.program.state("shim") is not None and s2.program.state("shim") is not None
        d1 = _dropped(s1)
        assert _shim_frames_received(lab) == 200
        assert _dropped(s1) - d1 < 200
    finally:
        if undo:
            ctl.apply_inverses(undo)
    assert s1.program == bases["s1"] and s2.program == bases["s2"]

    d2 = _dropped(s1)
    assert _shim_frames_received(lab) == 0
    assert _dropped(s1) - d2 >= 200


# --- 5. a bad delta changes nothing ---------------------------------------------------------

_FUNCTION_START = "    struct flx_std std = {}; struct flx_meta meta = {}; u32 off = 0;\n"
# a map lookup dereferenced without a NULL check: clang compiles it, the verifier refuses
# it. Two traps: clang deletes a load whose value is never used (so the value decides a
# return), and recent kernels (6.18 here) prove an array lookup with a constant in-bounds
# key non-NULL and accept it unchecked (so: a hash map, flx_inport of the switch).
_UNCHECKED = ("    { u32 zz = ctx->ingress_ifindex; u32 *unchecked = flx_inport.lookup(&zz);\n"
              "      if (*unchecked == 0xFFFFFFFFu) return TC_ACT_SHOT; }\n")


def _state(lab, ctl, device: str) -> dict:
    dev = ctl.handle(device)
    out = {"program": dev.program, "name": dev.program.name,
           "prog_fd": dev._running.prog_fd, "slot": _pipe_prog_id(lab, dev.device),
           "tables": {t.name: dev.entries(t.name) for t in dev.program.tables}}
    return out


def test_bad_delta_changes_nothing_and_traffic_is_unaffected(lab, ctl, monkeypatch):
    from flexnet_lab.errors import DeltaError, TargetError, VerifierError
    from flexnet_lab.program.delta import delta_from_dict, load_delta
    from flexnet_lab.targets import ebpf_datapath

    _h2_flow_counter(ctl)
    acl = load_delta(ACL_DELTA)
    real_generate = ebpf_datapath.generate

    def unverifiable(program, hook="tc", role="switch"):
        src = real_generate(program, hook, role)
        assert _FUNCTION_START in src.text
        return dataclasses.replace(src, text=src.text.replace(
            _FUNCTION_START, _FUNCTION_START + _UNCHECKED, 1))

    # compile the broken program now (clang accepts it): only the kernel refuses it later
    with_acl, _ = acl.apply(ctl.handle("s1").program)
    lab.compiler.compile(unverifiable(with_acl, "tc", "switch").text, ["pipeline"])

    push_vlan = delta_from_dict({"name": "tag-vlan", "ops": [{
        "add_table": {"name": "tagger", "keys": [["meta.ip_proto", "exact"]],
                      "actions": ["tag"], "default": "tag", "size": 16},
        "actions": {"tag": {"ops": [["push_vlan", 100]]}}}]})
    nosuch = delta_from_dict({"ops": [{"remove_tables": "nosuch"}]})

    before = {d: _state(lab, ctl, d) for d in ("s1", "s2", H2_XDP)}
    intent = {d: ctl.device_intent(d) for d in before}
    errors = {}

    def bad_changes(t0):
        _sleep_until(t0 + 0.8)
        with pytest.raises(DeltaError) as exc:          # (a) an unknown table
            ctl.apply_delta("s1", nosuch)
        errors["a"] = exc.value
        time.sleep(0.3)
        with pytest.raises(TargetError) as exc:         # (b) XDP cannot push a VLAN tag
            ctl.apply_delta(H2_XDP, push_vlan)
        errors["b"] = exc.value
        time.sleep(0.3)
        with monkeypatch.context() as m:                # (c) the verifier refuses it
            m.setattr(ebpf_datapath, "generate", unverifiable)
            with pytest.raises(VerifierError) as exc:
                ctl.apply_delta("s1", acl)
        errors["c"] = exc.value

    (flow,) = _run(lab, [_udp("udp1", 200_000_000, 4)], bad_changes)

    assert "nosuch" in str(errors["a"]), errors["a"]
    assert not isinstance(errors["b"], VerifierError)
    assert "push_vlan" in str(errors["b"]), errors["b"]
    assert errors["b"].device == ctl.handle(H2_XDP).device
    assert errors["c"].device == "s1"
    assert "map_value_or_null" in errors["c"].log, errors["c"].log[-2000:]
    for device, state in before.items():
        after = _state(lab, ctl, device)
        assert after["program"] is state["program"], f"{device}: program object replaced"
        assert after == state, f"{device}: {state} -> {after}"
        assert ctl.device_intent(device) == intent[device], f"{device}: intent changed"
    assert _delivered(flow), _loss(flow)
    # and the untouched devices still do their job
    assert lab.ping_all()["loss_pct"] == 0.0


# --- 6. scenarios through the CLI -----------------------------------------------------------

def _flexnet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "flexnet_lab.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_scenario_with_failing_expectation_exits_1_and_names_it(tmp_path):
    path = tmp_path / "impossible.yaml"
    path.write_text(f"""\
name: impossible-pkts
topology: linear
setup:
  - {{host: h2, attach: flow_counter, hook: xdp}}
traffic:
  duration: 3
  baseline: 1
  flows:
    - {{name: udp1, src: h1, dst: h2, proto: udp, rate: 10M}}
changes:
  - {{at: 1, switch: s1, delta: {ACL_DELTA}}}
expect:
  - {{host: h2, map: pkts, index: 0, at_least: {10 ** 12}}}
""")
    results = tmp_path / "results"
    out = _flexnet("run", str(path), "--results", str(results))
    assert out.returncode == 1, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    assert "FAIL" in out.stdout and "pkts" in out.stdout, out.stdout
    fail_lines = [ln for ln in out.stdout.splitlines() if "[FAIL]" in ln]
    assert len(fail_lines) == 1 and "pkts" in fail_lines[0], out.stdout
    report_path = results / "impossible-pkts" / "report.json"
    assert report_path.is_file(), f"no {report_path}\n{out.stdout}"
    report = json.loads(report_path.read_text())
    assert report["passed"] is False
    assert [c["device"] for c in report["changes"]] == ["s1"]
    rows = [r for r in report["expectations"] if "map" in r["expect"]]
    (row,) = rows                      # besides it, one "the flow ran" row, which passes
    assert row["ok"] is False and row["expect"]["map"] == "pkts"
    assert all(r["ok"] for r in report["expectations"] if r is not row)


def test_malformed_scenario_exits_2_naming_the_change(tmp_path):
    path = tmp_path / "malformed.yaml"
    path.write_text(f"""\
name: malformed
topology: linear
traffic:
  duration: 3
  flows:
    - {{name: udp1, src: h1, dst: h2, proto: udp, rate: 10M}}
changes:
  - {{at: 1, switch: s1, delta: {ACL_DELTA}, when: never}}
""")
    out = _flexnet("run", str(path), "--results", str(tmp_path / "results"))
    assert out.returncode == 2, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    assert "changes[0]" in out.stderr, out.stderr
    assert "when" in out.stderr, out.stderr
    assert not (tmp_path / "results").exists()
