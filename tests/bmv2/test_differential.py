"""Differential check (issue #5): one program, compiled for bmv2 (write_p4 -> p4c-bm2-ss JSON
-> simple_switch) and for the eBPF switch (C -> bcc), sends the same scapy-built frames
(malformed ones included) out of the same ports, byte for byte.

The device under test is s1 in a star lab (h1, h2, h3 on s1 ports 1, 2, 3): first the lab's
eBPF switch, then simple_switch started in s1's own namespace on the same ports (its thrift
port is reachable only there) with the same table entries. The hosts are plain ends of the
veths: no program is loaded on them, their addresses are removed and IPv4 answers, ARP and
IPv6 are off, so nothing but s1 ever sends a frame. Frames are injected on h1-eth0 and
captured by AF_PACKET taps on h1-eth0 (hairpins), h2-eth0 and h3-eth0.

Each frame is followed by a fence: one marked UDP frame to every host, which the program
forwards. What a tap receives before fence k is what frame k made s1 send there, so no
time window decides which frame caused what (the sender is pinned to one CPU, so the
kernel's per-CPU backlog keeps its frames in order; bmv2 keeps order per egress port).
The next frame goes only once every fence is in (lock step, 1 ms between frames): bmv2
reads its ports with a select() loop over non-blocking libpcap, which loses frames of a
burst unless bmv2 was configured --with-pcap-fix (libpcap issue #169); a hand-built bmv2
(e.g. /opt/p4 here) usually is not.

An earlier version tapped s2-eth1 in a linear lab and saw nothing: that is s2's port to
h2 (linear.yaml lists [h2, s2] before [s1, s2]), so s1's frames only left through it
(PACKET_OUTGOING, which the taps ignore so as not to see h1's own injections) and arrived
on s2-eth2. The star needs no second switch on the path at all.
"""
import importlib.util
import ipaddress
import json
import os
import select
import shutil
import subprocess
import sys
import sysconfig
import time
from types import MappingProxyType

import pytest

from flexnet_lab.compiler.p4 import write_p4
from flexnet_lab.lab.network import Lab
from flexnet_lab.plan.execute import apply_program
from flexnet_lab.program import library
from flexnet_lab.program.delta import load_delta
from flexnet_lab.topology.loader import parse_topology

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.root, pytest.mark.bmv2, pytest.mark.p4c]

scapy = pytest.importorskip("scapy.all", reason="pip install scapy (test extra)")

HOSTS = ("h1", "h2", "h3")          # on s1 ports 1, 2, 3 (link order)
THRIFT_PORT = 9090                  # inside s1's namespace only
FENCE_MAGIC = b"flexnet-fence-v1"   # 16 bytes, in no test frame
FENCE_UDP_PORT = 7777
ROUND_S = 10.0                      # a frame and its fence: out of s1 within this

# variant -> (deltas applied to the infrastructure program, entries beyond the routes)
VARIANTS = MappingProxyType({
    "infra": ((), ()),
    "infra+shim": (("shim-parser.yaml",), ()),
    "infra+acl": (("acl-udp-9999.yaml",), (("acl", (17, 9999), "drop", ()),)),
    "infra+vlan": (("vlan-parser.yaml",), ()),
})

TAP = r'''
import os, select, socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))   # ETH_P_ALL
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.setsockopt(263, 8, 1)   # SOL_PACKET, PACKET_AUXDATA: the VLAN tag the kernel took off
s.bind((sys.argv[1], 0))
s.setblocking(False)
print("ready", flush=True)
def drain():
    while True:
        try:
            data, anc, _, addr = s.recvmsg(65535, socket.CMSG_SPACE(32))
        except BlockingIOError:
            return
        if addr[2] == socket.PACKET_OUTGOING:    # h1's own injections
            continue
        for level, kind, aux in anc:   # put the tag back where it was on the wire (as libpcap)
            if (level, kind) == (263, 8):
                status, _, _, _, _, tci, tpid = struct.unpack("IIIHHHH", aux[:20])
                if status & 0x10:                # TP_STATUS_VLAN_VALID
                    tpid = tpid if status & 0x40 else 0x8100   # TP_STATUS_VLAN_TPID_VALID
                    data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
        print("f", data.hex(), flush=True)
while True:
    ready = select.select([s, sys.stdin], [], [])[0]
    if s in ready:
        drain()
    if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):   # closed: done
        drain()
        break
print("end", struct.unpack("II", s.getsockopt(263, 6, 8))[1], flush=True)   # drops
'''

SEND = r'''
import json, os, socket, sys, time
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})   # one CPU: one backlog, in order
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for line in sys.stdin:
    for h in json.loads(line):
        s.send(bytes.fromhex(h))
        time.sleep(0.001)
    print("sent", flush=True)
'''


def _mac(n: int) -> str:
    return f"00:00:00:00:00:{n:02x}"


def packets() -> list[tuple[str, bytes]]:
    """Named frames from h1 (00:..:01, 10.0.0.1) into s1 port 1."""
    from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, IPv6, Raw
    src, h2 = _mac(1), _mac(2)
    eth = Ether(src=src, dst=h2)
    ip = IP(src="10.0.0.1", dst="10.0.0.2")
    frames = [
        ("udp", eth / ip / UDP(sport=1234, dport=5201) / Raw(b"x" * 40)),
        ("udp-h3", Ether(src=src, dst=_mac(3)) / IP(src="10.0.0.1", dst="10.0.0.3")
         / UDP(sport=1234, dport=5201) / Raw(b"w" * 20)),
        ("tcp", eth / ip / TCP(sport=1234, dport=80, flags="S")),
        ("icmp", eth / ip / ICMP()),
        ("udp-9999", eth / ip / UDP(sport=1, dport=9999) / Raw(b"y" * 10)),
        ("hairpin", Ether(src=src, dst=src) / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP()),
        ("no-route", eth / IP(src="10.0.0.1", dst="10.9.9.9") / UDP() / Raw(b"z")),
        ("arp", Ether(src=src, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.0.0.1", pdst="10.0.0.2",
                                                               hwsrc=src)),
        ("arp-unknown", Ether(src=src, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.7.7.7")),
        ("ipv6", Ether(src=src, dst=h2) / IPv6() / UDP()),
        ("ip-options", eth / IP(src="10.0.0.1", dst="10.0.0.2", options=b"\x01\x01\x01\x00")
         / UDP(dport=53)),
        ("bad-checksum", eth / IP(src="10.0.0.1", dst="10.0.0.2", chksum=0x1234) / UDP()),
        ("shim", Ether(src=src, dst=h2, type=0x88B5)
         / Raw(bytes.fromhex("0007" "00" "00" "0800")) / ip / UDP(dport=7)),
        ("shim-bad-next", Ether(src=src, dst=h2, type=0x88B5)
         / Raw(bytes.fromhex("0007" "00" "00" "86dd")) / ip / UDP(dport=7)),
    ]
    out = [(name, bytes(f)) for name, f in frames]
    out.append(("truncated-ip", bytes(eth / ip)[:24]))
    out.append(("truncated-udp", bytes(eth / ip / UDP())[:38]))
    out.append(("runt", bytes.fromhex("000000000002" "000000000001" "0800")))
    out.append(("garbage", bytes(range(60))))
    return out


def expected_ports(variant: str) -> dict[str, list[int]]:
    """What the program says, per frame: the ports it leaves by (both targets must agree
    with each other, and this keeps them from agreeing on a wrong answer)."""
    want = {"udp": [2], "udp-h3": [3], "tcp": [2], "icmp": [2], "udp-9999": [2],
            "hairpin": [1], "arp": [2], "ip-options": [2], "bad-checksum": [2]}
    if variant == "infra+shim":
        want["shim"] = [2]                  # forwarded by its inner IPv4 destination
    if variant == "infra+acl":
        del want["udp-9999"]                # the ACL entry drops UDP to port 9999
    return want


def _fences(round_: int) -> list[bytes]:
    """Fence `round_`: one marked UDP frame from h1 to each host (h1's is a hairpin)."""
    from scapy.all import IP, UDP, Ether, Raw
    payload = FENCE_MAGIC + round_.to_bytes(4, "big") + bytes(12)
    return [bytes(Ether(src=_mac(1), dst=_mac(n)) / IP(src="10.0.0.1", dst=f"10.0.0.{n}")
                  / UDP(sport=FENCE_UDP_PORT, dport=FENCE_UDP_PORT) / Raw(payload))
            for n in range(1, len(HOSTS) + 1)]


def fence_round(data: bytes) -> int | None:
    """The round of a fence frame, None for any other frame."""
    at = data.find(FENCE_MAGIC)
    if at < 0:
        return None
    at += len(FENCE_MAGIC)
    return int.from_bytes(data[at:at + 4], "big")


class _Lines:
    """Lines from a process's stdout, never waiting past a deadline."""

    def __init__(self, proc, what: str):
        self.proc, self.what, self.buf = proc, what, b""

    def line(self, deadline: float, waiting_for: str) -> str:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            fd = self.proc.stdout.fileno()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError(f"{self.what}: no {waiting_for} within the time limit")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self.proc.wait()
                raise AssertionError(f"{self.what} ended while waiting for {waiting_for}: "
                                     f"{self.proc.stderr.read().decode(errors='replace')}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


def exchange(lab: Lab, frames: list[tuple[str, bytes]]) -> dict[str, list[tuple[int, bytes]]]:
    """Send every frame from h1 into s1, one at a time (each followed by a fence, the next
    only once every port has its fence); per frame, the sorted (s1 port, bytes) of
    everything that came out of s1."""
    procs, taps = [], {}
    segments: dict[int, list[list[bytes]]] = {}
    try:
        for port, host in enumerate(HOSTS, start=1):
            node = lab.host(host)
            proc = node.popen([sys.executable, "-c", TAP, node.defaultIntf().name],
                              stdin=subprocess.PIPE)
            procs.append(proc)
            taps[port] = _Lines(proc, f"the tap on {host} (s1 port {port})")
            segments[port] = []
        for tap in taps.values():
            assert tap.line(time.monotonic() + 10, "start") == "ready"
        h1 = lab.host("h1")
        send = h1.popen([sys.executable, "-c", SEND, h1.defaultIntf().name],
                        stdin=subprocess.PIPE)
        procs.append(send)
        sent = _Lines(send, "the sender on h1")
        for k in range(len(frames) + 1):
            after = f"fence {k} (after frame {frames[k - 1][0]!r})" if k else "fence 0"
            wire = ([frames[k - 1][1]] if k else []) + _fences(k)
            send.stdin.write((json.dumps([f.hex() for f in wire]) + "\n").encode())
            send.stdin.flush()
            deadline = time.monotonic() + ROUND_S
            assert sent.line(deadline, "confirmation") == "sent"
            for port, tap in taps.items():
                segment = []
                while True:
                    data = bytes.fromhex(tap.line(deadline, after).split()[1])
                    seq = fence_round(data)
                    if seq is None:
                        segment.append(data)
                    elif seq == k:
                        break
                    else:
                        raise AssertionError(f"{tap.what}: fence {seq} where {after} was due")
                segments[port].append(segment)
        deadline = time.monotonic() + 10
        for port, tap in taps.items():
            tap.proc.stdin.close()
            late = []
            while (line := tap.line(deadline, "its end")).startswith("f "):
                late.append(line[2:])
            assert not late, f"{tap.what}: frames after the last fence: {late}"
            assert line == "end 0", f"{tap.what}: its socket dropped frames ({line})"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    spontaneous = {p: segs[0] for p, segs in segments.items() if segs[0]}
    assert not spontaneous, f"frames before the first fence (a host is not silent?): " \
                            f"{spontaneous}"
    return {name: sorted((port, data) for port, segs in segments.items()
                         for data in segs[k])
            for k, (name, _) in enumerate(frames, start=1)}


def _silence_hosts(lab: Lab) -> None:
    """The hosts are wire ends: no address (so no ARP or ICMP answer, and with forwarding
    off no ICMP error either), IPv6 off. Frames s1 hands them are only tapped."""
    for host in HOSTS:
        node = lab.host(host)
        node.cmd(f"ip addr flush dev {node.defaultIntf().name}; sysctl -qw "
                 "net.ipv6.conf.all.disable_ipv6=1 net.ipv4.conf.all.arp_ignore=8 "
                 "net.ipv4.icmp_echo_ignore_all=1 net.ipv4.ip_forward=0")


def _cli_command() -> list[str]:
    """simple_switch_CLI run by this interpreter (it sees Debian's python3-thrift)."""
    return [sys.executable, shutil.which("simple_switch_CLI")]


def _cli_env(lab: Lab) -> dict[str, str]:
    """The run tag's environment, plus bmv2's own Python modules from its install prefix
    (a hand-built bmv2 puts them there, not on the interpreter's path)."""
    env = lab.tag.env()
    prefix = os.path.dirname(os.path.dirname(shutil.which("simple_switch_CLI")))
    site = os.path.join(prefix, "lib", f"python{sysconfig.get_python_version()}",
                        "site-packages")
    if os.path.isdir(site):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [site, env.get("PYTHONPATH")]))
    return env


def cli_line(program, table: str, match: tuple, action: str, args: tuple,
             priority: int = 0) -> str:
    """A model table entry as a simple_switch_CLI table_add command."""
    keys = []
    for key, m in zip(program.table(table).keys, match):
        if key.kind == "lpm":
            keys.append(f"{m[0]}/{m[1]}")
        elif key.kind == "ternary":
            keys.append(f"{m[0]}&&&{m[1]}")
        else:
            keys.append(str(m))
    line = (f"table_add ingress.{table} ingress.{action} {' '.join(keys)} => "
            + " ".join(str(a) for a in args))
    if any(k.kind == "ternary" for k in program.table(table).keys):
        line += f" {priority}"
    return line.rstrip()


def run_bmv2(lab: Lab, program, json_path: str, entries: list, log_path: str):
    """Stop s1's eBPF datapath, run simple_switch on its ports and install `entries`.
    Returns the process (the caller kills it; Lab.stop would too: it carries the tag)."""
    s1 = lab.net.get("s1")
    lab.switch("s1").stop(detach=True)
    args = ["simple_switch", "--log-console", "--thrift-port", str(THRIFT_PORT)]
    for port in lab.topology.ports("s1"):
        args += ["-i", f"{port.number}@{port.intf}"]
    log = open(log_path, "w")
    try:
        proc = s1.popen(args + [json_path], stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()
    try:
        deadline = time.monotonic() + 15
        while f":{THRIFT_PORT}" not in s1.cmd(f"ss -ltnH 'sport = :{THRIFT_PORT}'"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"simple_switch did not open its thrift port; log: "
                                     f"{_tail(log_path)}")
            time.sleep(0.1)
        cmds = "".join(cli_line(program, *e) + "\n" for e in entries)
        cli = s1.popen(_cli_command() + ["--thrift-port", str(THRIFT_PORT)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, env=_cli_env(lab))
        out, _ = cli.communicate(cmds, timeout=60)
        added = out.count("Entry has been added")
        assert cli.returncode == 0 and added == len(entries), \
            f"simple_switch_CLI added {added} of {len(entries)} entries:\n{cmds}{out}"
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def _tail(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()[-600:].strip() or "(empty)"
    except OSError:
        return "(no log)"


def _star() -> dict:
    return {"hosts": {h: {} for h in HOSTS}, "switches": {"s1": {"target": "ebpf"}},
            "links": [[h, "s1"] for h in HOSTS]}


def _skip_without_bmv2() -> None:
    for tool, hint in (("simple_switch", "install p4lang-bmv2 (simple_switch)"),
                       ("simple_switch_CLI", "install p4lang-bmv2 (simple_switch_CLI)"),
                       ("p4c-bm2-ss", "install p4lang-p4c")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: {hint}")
    if importlib.util.find_spec("thrift") is None:
        pytest.skip("simple_switch_CLI needs Python thrift: apt-get install python3-thrift")


def run_both(variant: str, frames: list[tuple[str, bytes]], tmp_path) -> tuple[dict, dict]:
    """The variant's program on the eBPF switch, then on simple_switch, in one star lab:
    per frame name, the sorted (port, bytes) each sent out."""
    _skip_without_bmv2()
    deltas, extra = VARIANTS[variant]
    program = library.infrastructure()
    for name in deltas:
        program, _ = load_delta(os.path.join(ROOT, "scenarios/deltas", name)).apply(program)
    paths = write_p4(program.with_(name="dut"), str(tmp_path))
    json_path = next(p for p in paths if p.endswith(".json"))
    with Lab(parse_topology(_star(), "differential.yaml")) as lab:
        assert [p.peer_node for p in lab.topology.ports("s1")] == list(HOSTS)
        entries = [("l3_fwd", ((int(ipaddress.IPv4Address(r.dst_ip)), r.prefixlen),),
                    "forward", (r.port,)) for r in lab.routes["s1"]] + list(extra)
        s1 = lab.switch("s1")
        if program != s1.program:
            apply_program(s1, program, f"differential: {variant}")
        for table, match, action, args in extra:    # the routes are in already
            s1.insert(table, match, action, args)
        _silence_hosts(lab)
        ebpf = exchange(lab, frames)
        bmv2 = run_bmv2(lab, program, json_path, entries, str(tmp_path / "simple_switch.log"))
        try:
            got = exchange(lab, frames)
        finally:
            bmv2.kill()
            bmv2.wait()
    return ebpf, got


def _mismatches(ebpf: dict, bmv2: dict) -> dict:
    return {n: {"ebpf": [(p, d.hex()) for p, d in ebpf[n]],
                "bmv2": [(p, d.hex()) for p, d in bmv2[n]]}
            for n in ebpf if ebpf[n] != bmv2[n]}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bmv2_and_ebpf_switch_agree(variant, tmp_path):
    frames = packets()
    ebpf, bmv2 = run_both(variant, frames, tmp_path)
    sent = dict(frames)
    # the eBPF switch does what the program says: these ports, the frame unchanged
    want = expected_ports(variant)
    assert {n: [p for p, _ in out] for n, out in ebpf.items() if out} == want
    assert all(data == sent[n] for n, out in ebpf.items() for _, data in out)
    # ... and bmv2 does exactly the same, frame by frame
    assert not _mismatches(ebpf, bmv2)


@pytest.mark.parametrize("variant", ["infra", "infra+vlan"])
def test_a_vlan_tagged_frame_is_parsed_as_on_the_wire(variant, tmp_path):
    """The kernel hands tc a frame's outer tag out of band (skb->vlan_*); the eBPF switch
    still parses the frame as on the wire: without a vlan parser state a tagged frame is
    dropped (l3_fwd never sees an address), with one it is forwarded, tag kept — as bmv2."""
    from scapy.all import IP, UDP, Dot1Q, Ether
    frames = [(f"vlan-{vid}", bytes(Ether(src=_mac(1), dst=_mac(2)) / Dot1Q(vlan=vid)
                                  / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=53)))
              for vid in (0, 5)]
    ebpf, bmv2 = run_both(variant, frames, tmp_path)
    if variant == "infra":                 # what the program says
        assert not any(ebpf.values())
    else:
        assert ebpf == {n: [(2, data)] for n, data in frames}
    assert not _mismatches(ebpf, bmv2)
