"""Compiled eBPF objects (clang, libbpf conventions) on host hooks, through the controller:
attach, swap under UDP load with the counter carried over, several functions on one hook
each swapped alone, malformed objects refused with nothing created.

Marker `root`. One linear lab (h1 - s1 - s2 - h2, eBPF switches) for the module; the
objects are built from ebpf/examples with clang into a temporary folder."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
HOOK = "h2:xdp:ingress"


@pytest.fixture(scope="module")
def objs(tmp_path_factory):
    if shutil.which("clang") is None:
        pytest.skip("clang not found: install Debian's clang (make setup)")
    out = tmp_path_factory.mktemp("objs")
    subprocess.run(["make", "-s", "-C", str(REPO / "ebpf"), f"OBJS_DIR={out}"], check=True)
    for f in (REPO / "ebpf" / "build").glob("*.o"):
        shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def lab():
    from flexnet_lab.lab.network import Lab
    from flexnet_lab.topology import load_topology

    with Lab(load_topology(REPO / "topologies" / "linear.yaml"), switch_kind="ebpf") as lab:
        assert lab.ping_all()["loss_pct"] == 0.0
        yield lab


@pytest.fixture(scope="module")
def ctl(lab):
    from flexnet_lab.control.controller import controller_for
    from flexnet_lab.control.service import Service

    controller = controller_for(lab)
    controller.service = Service(controller)
    try:
        yield controller
    finally:
        controller.close()


@pytest.fixture
def clean_hook(ctl):
    yield
    if HOOK in ctl.intent.devices:
        ctl.detach("h2", "xdp", "ingress")


def _udp(duration_s: float, rate_bps: int = 200_000_000):
    from flexnet_lab.verify.traffic import FlowSpec
    return FlowSpec("udp", "h1", "h2", proto="udp", rate_bps=rate_bps, duration_s=duration_s)


def _run(lab, spec, during):
    from flexnet_lab.verify.traffic import Traffic
    traffic = Traffic(lab, [spec])
    try:
        t0 = traffic.start()
        during(t0)
        res = traffic.results()[0]
    finally:
        traffic.stop()
    assert res.error is None and res.sent > 0, res.to_json()
    return res


def _pins(lab) -> set[str]:
    out = set()
    for root, dirs, files in os.walk(lab.tag.pin_dir):
        out |= {os.path.relpath(os.path.join(root, f), lab.tag.pin_dir) for f in files}
    return out


def test_attach_swap_under_load_keeps_counter(lab, ctl, objs, clean_hook):
    svc = ctl.service
    svc.op_attach("h2", str(objs / "proto_count.o"), "xdp", "ingress")
    di = ctl.intent.devices[HOOK]
    fn = di.functions[0]
    assert fn.section == "xdp" and len(fn.sha256) == 64 and fn.prog_id > 0
    assert os.path.exists(fn.copy)
    lab.net["h1"].cmd("ping -c 3 -i 0.2 -q", lab.net["h2"].IP())
    assert ctl.read_map("h2", "proto_pkts")[1] >= 3           # ICMP counted

    swaps = []

    def during(t0):
        time.sleep(1.5)
        before = ctl.read_map("h2", "proto_pkts")[17]
        swaps.append(svc.op_swap("h2", str(objs / "proto_count_v2.o"), "xdp", "ingress")[0])
        time.sleep(0.3)
        swaps.append(before)
        swaps.append(ctl.read_map("h2", "proto_pkts")[17])

    res = _run(lab, _udp(4.0), during)
    rec, before, after = swaps
    assert res.gap_lost == 0 and res.tail_lost <= 50, res.to_json()
    assert before > 1000 and after > before, (before, after)     # the count went on
    assert rec["swap_ms"] < 5 and "maps carried over: proto_pkts" in rec["notes"]
    counts = ctl.read_map("h2", "proto_pkts")
    # every datagram that reached h2 passed the counter, old version or new
    assert counts[17] >= res.received, (counts[17], res.to_json())
    assert ctl.read_map("h2", "proto_bytes")[17] > 0               # v2's own map
    assert ctl.intent.devices[HOOK].functions[0].name == "proto_count_v2"
    assert ctl.describe("h2")["functions"][0].startswith("proto_count_v2")


def test_two_functions_on_one_hook_each_swapped_alone(lab, ctl, objs, clean_hook):
    """proto_count.o (ELF) then flow_counter (model) on h2's XDP hook: both count the same
    packets; each is replaced alone under UDP load without loss."""
    from flexnet_lab.compiler.ebpf import generate
    from flexnet_lab.program import library
    for p in (library.flow_counter(), library.acl()):
        lab.compiler.compile(generate(p, "xdp", "host", True).text, ["pipeline"])
    svc = ctl.service
    svc.op_attach("h2", f"{objs / 'proto_count.o'},flow_counter", "xdp", "ingress")
    assert [f.name for f in ctl.intent.devices[HOOK].functions] == ["proto_count",
                                                                     "flow_counter"]
    got = []

    def during(t0):
        time.sleep(1.0)
        got.append(svc.op_swap("h2", str(objs / "proto_count_v2.o"), "xdp", "ingress",
                               fn="proto_count")[0])
        time.sleep(1.0)
        got.append(svc.op_swap("h2", "acl", "xdp", "ingress", fn="flow_counter")[0])
        time.sleep(0.5)

    res = _run(lab, _udp(4.0), during)
    assert res.gap_lost == 0 and res.tail_lost <= 50, res.to_json()
    assert all(r["swap_ms"] < 5 for r in got), got
    fns = ctl.intent.devices[HOOK].functions
    assert [f.name for f in fns] == ["proto_count_v2", "acl"]
    assert ctl.read_map("h2", "proto_pkts")[17] >= res.received
    # the ACL after the counter is live: it drops ICMP, which the counter still sees
    h1, h2 = lab.net["h1"], lab.net["h2"]
    icmp_before = ctl.read_map("h2", "proto_pkts")[1]
    ctl.insert_entry(HOOK, "acl", ICMP_ONLY, "drop")
    assert [e.action for e in ctl.entries(HOOK, "acl")] == ["drop"]
    assert " 0 received" in h1.cmd("ping -c 3 -i 0.2 -W 1", h2.IP())
    assert ctl.read_map("h2", "proto_pkts")[1] >= icmp_before + 3
    ctl.detach_function("h2", "acl", "xdp", "ingress")
    assert [f.name for f in ctl.intent.devices[HOOK].functions] == ["proto_count_v2"]
    assert " 0% packet loss" in h1.cmd("ping -c 2 -i 0.2 -W 1", h2.IP())


# acl's five ternary keys (ipv4 src, dst, protocol, l4 sport, dport) as (value, mask)
ICMP_ONLY = ((0, 0), (0, 0), (1, 0xFF), (0, 0), (0, 0))


def test_function_order_is_the_stated_one(lab, ctl, objs, clean_hook):
    """The ACL first, dropping ICMP: the counter after it never sees those packets."""
    ctl.service.op_attach("h2", f"acl,{objs / 'proto_count.o'}", "xdp", "ingress")
    ctl.insert_entry(HOOK, "acl", ICMP_ONLY, "drop")
    h1, h2 = lab.net["h1"], lab.net["h2"]
    assert " 0 received" in h1.cmd("ping -c 3 -i 0.2 -W 1", h2.IP())
    assert ctl.read_map("h2", "proto_pkts")[1] == 0
    # swapping the ACL alone for a function without it lets ICMP through to the counter
    ctl.service.op_swap("h2", "flow_counter", "xdp", "ingress", fn="acl")
    assert " 0% packet loss" in h1.cmd("ping -c 2 -i 0.2 -W 1", h2.IP())
    assert ctl.read_map("h2", "proto_pkts")[1] >= 2
    assert ctl.intent.devices[HOOK].entries == frozenset()


@pytest.mark.parametrize("case", ["not_elf", "host_cpu", "no_section", "wrong_type",
                                  "verifier", "legacy_maps"])
def test_malformed_object_refused_nothing_created(lab, ctl, objs, tmp_path, case,
                                                  clean_hook):
    from flexnet_lab.errors import ObjectError
    src = {"not_elf": None,
           "host_cpu": "int main(void) { return 0; }\n",
           "verifier": ('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                        'SEC("xdp") int bad(struct xdp_md *c) {\n'
                        '  return *(int *)(long)c->data; }\n'
                        'char LICENSE[] SEC("license") = "GPL";\n'),
           "legacy_maps": ('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                           'struct bpf_map_def { unsigned int type, key_size, value_size, '
                           'max_entries, map_flags; };\n'
                           'struct bpf_map_def SEC("maps") cnt = { BPF_MAP_TYPE_ARRAY, 4, 8, 1, 0 };\n'
                           'SEC("xdp") int f(struct xdp_md *c) { int k = 0; '
                           'long *v = bpf_map_lookup_elem(&cnt, &k); if (v) *v += 1; '
                           'return XDP_PASS; }\nchar LICENSE[] SEC("license") = "GPL";\n')}
    path = tmp_path / f"{case}.o"
    if case == "not_elf":
        path.write_text("hello\n")
    elif case in ("no_section", "wrong_type"):
        shutil.copy(objs / ("proto_count.o" if case == "no_section" else "udp_drop.o"), path)
    else:
        c = tmp_path / f"{case}.c"
        c.write_text(src[case])
        target = [] if case == "host_cpu" else ["-target", "bpf", "-g"]
        subprocess.run(["clang", "-O2", *target, "-I/usr/include/x86_64-linux-gnu", "-c",
                        str(c), "-o", str(path)], check=True, capture_output=True)
    pins, changes = _pins(lab), len(ctl.store.changes(1000))
    with pytest.raises(ObjectError) as err:
        ctl.service.op_attach("h2", str(path), "xdp", "ingress",
                              section="nosuch" if case == "no_section" else None)
    msg = str(err.value)
    assert msg.startswith(f"{case}.o: "), msg
    field = {"not_elf": "ELF header", "host_cpu": "ELF header", "no_section": "section nosuch",
             "wrong_type": "section tc", "verifier": "section xdp",
             "legacy_maps": "section maps"}[case]
    assert msg.split(": ")[1] == field, msg
    if case == "verifier":
        assert "verifier" in msg and err.value.log
    assert "\n" not in msg and len(msg) < 400
    assert HOOK not in ctl.intent.devices
    assert _pins(lab) == pins and len(ctl.store.changes(1000)) == changes
