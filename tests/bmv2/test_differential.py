"""Differential check: one program, compiled for bmv2 (P4 -> p4c -> simple_switch) and for
the eBPF switch (C -> bcc), forwards the same scapy-built packets (malformed ones included)
to the same ports, byte for byte.

Runs in a real linear lab: switch s1 is first the eBPF switch, then bmv2's simple_switch
started in s1's own namespace on the same ports (its thrift port is reachable only there).
Packets are injected from h1 and captured on both of s1's neighbours (h1-eth0 for
hairpins, s2-eth1 for port 2); h1 and h2 are kept from answering, so only s1 acts.
"""
import os
import shutil
import time

import pytest

from flexnet_lab.compiler.p4 import write_p4
from flexnet_lab.lab.network import Lab
from flexnet_lab.program import library
from flexnet_lab.program.delta import load_delta
from flexnet_lab.topology import load_topology

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.root, pytest.mark.bmv2, pytest.mark.p4c]

scapy = pytest.importorskip("scapy.all", reason="pip install scapy (test extra)")


def packets() -> list[tuple[str, bytes]]:
    """Named frames from h1 (00:..:01, 10.0.0.1) into s1 port 1."""
    from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, IPv6, Raw
    src, h2 = "00:00:00:00:00:01", "00:00:00:00:00:02"
    eth = Ether(src=src, dst=h2)
    ip = IP(src="10.0.0.1", dst="10.0.0.2")
    frames = [
        ("udp", eth / ip / UDP(sport=1234, dport=5201) / Raw(b"x" * 40)),
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


def _sniff_and_send(lab, frames) -> dict[str, list[tuple[str, bytes]]]:
    """Send each frame from h1 and record what reached h1-eth0 (not our own) and s2-eth1."""
    script = r'''
import socket, sys, select, time, json
ETH_P_ALL = 3
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
s.bind((sys.argv[1], 0))
s.setblocking(False)
print("ready", flush=True)
deadline = time.time() + float(sys.argv[2])
out = []
while time.time() < deadline:
    r, _, _ = select.select([s], [], [], 0.05)
    if r:
        data, addr = s.recvfrom(65535)
        if addr[2] != socket.PACKET_OUTGOING:
            out.append(data.hex())
print(json.dumps(out), flush=True)
'''
    import json
    import sys
    results = {}
    h1, s2 = lab.host("h1"), lab.net.get("s2")
    for name, frame in frames:
        procs = [node.popen([sys.executable, "-c", script, intf, "0.6"], text=True)
                 for node, intf in ((h1, "h1-eth0"), (s2, "s2-eth1"))]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        tx = h1.popen([sys.executable, "-c",
                       "import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW);"
                       "s.bind(('h1-eth0',0)); s.send(bytes.fromhex(sys.argv[1]))", frame.hex()])
        tx.wait()
        got = []
        for port, p in zip(("port1", "port2"), procs):
            out, _ = p.communicate(timeout=5)
            got += [(port, bytes.fromhex(h)) for h in json.loads(out.strip().splitlines()[-1])]
        results[name] = got
    return results


def _bmv2_run(lab, json_path: str):
    """Stop s1's eBPF datapath and run simple_switch on its ports with the same entries."""
    s1 = lab.net.get("s1")
    lab.switch("s1").stop(detach=True)
    proc = s1.popen(["simple_switch", "--thrift-port", "9090", "-i", "1@s1-eth1",
                     "-i", "2@s1-eth2", json_path])
    deadline = time.time() + 10
    while time.time() < deadline:
        if "9090" in s1.cmd("ss -ltnH 'sport = :9090'"):
            break
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("simple_switch did not open its thrift port")
    cmds = "\n".join(
        f"table_add ingress.l3_fwd ingress.forward {r.dst_ip}/{r.prefixlen} => {r.port}"
        for r in lab.routes["s1"]) + "\n"
    out = s1.cmd(f"printf '{cmds}' | {_cli_command()} --thrift-port 9090")
    assert "Error" not in out, out
    return proc


def _blackhole():
    """A host function that drops every frame."""
    from flexnet_lab.program.headers import ETHERNET
    from flexnet_lab.program.model import Op, ParserState, Program, Stmt
    return Program("blackhole", headers=(ETHERNET,), parser=(ParserState("start", "ethernet"),),
                   control=(Stmt(ops=(Op("drop"),)),))


def _cli_command() -> str:
    """simple_switch_CLI run by this interpreter (it sees Debian's python3-thrift), with
    bmv2's own Python modules from its install prefix on the path when they are there."""
    import sys
    import sysconfig
    cli = shutil.which("simple_switch_CLI")
    prefix = os.path.dirname(os.path.dirname(cli))
    site = os.path.join(prefix, "lib", f"python{sysconfig.get_python_version()}", "site-packages")
    env = f"PYTHONPATH={site} " if os.path.isdir(site) else ""
    return f"{env}{sys.executable} {cli}"


@pytest.mark.xfail(reason="harness incomplete: with bmv2 built by hand here, frames injected on "
                   "h1 reach h2 but are not seen by the AF_PACKET tap on s2-eth1 (replies "
                   "are), so the per-port comparison is not yet meaningful", strict=False)
@pytest.mark.parametrize("variant", ["infra", "infra+shim"])
def test_bmv2_and_ebpf_switch_agree(variant, tmp_path):
    if shutil.which("simple_switch") is None or shutil.which("simple_switch_CLI") is None:
        pytest.skip("install p4lang-bmv2 (simple_switch, simple_switch_CLI)")
    program = library.infrastructure()
    if variant == "infra+shim":
        program, _ = load_delta(os.path.join(ROOT, "scenarios/deltas/shim-parser.yaml")).apply(
            program)
    paths = write_p4(program.with_(name="dut"), str(tmp_path))
    json_path = next(p for p in paths if p.endswith(".json"))
    frames = packets()
    with Lab(load_topology(os.path.join(ROOT, "topologies/linear.yaml")), switch_kind="ebpf") as lab:
        s1 = lab.switch("s1")
        if variant != "infra":
            from flexnet_lab.plan.execute import apply_program
            apply_program(s1, program, "differential")
        for port in list(s1.ports):   # through the veths, where the taps are
            s1.set_port_mode(port, False)
        # only s1 may react: h2 drops everything it receives (an XDP program) and h1's
        # stack stays silent, so no reply or ARP traffic differs between the two runs
        lab.attach_host_program("h2", _blackhole(), "xdp")
        lab.host("h1").cmd("sysctl -qw net.ipv4.icmp_echo_ignore_all=1 "
                           "net.ipv4.conf.all.arp_ignore=8")
        ebpf = _sniff_and_send(lab, frames)
        bmv2 = _bmv2_run(lab, json_path)
        try:
            got = _sniff_and_send(lab, frames)
        finally:
            bmv2.kill()
            bmv2.wait()
    forwarded = [n for n, out in ebpf.items() if out]
    assert {"udp", "tcp", "icmp", "hairpin", "arp"} <= set(forwarded)
    assert not ebpf["no-route"] and not ebpf["truncated-ip"] and not ebpf["garbage"]
    assert bool(ebpf["shim"]) == (variant == "infra+shim")
    mismatches = {n: (ebpf[n], got[n]) for n in ebpf if sorted(ebpf[n]) != sorted(got[n])}
    assert not mismatches, mismatches
