"""Grouped changes in scenarios (several parts over switches and host functions, one
transaction at one level), on real namespaces, BPF and iperf3 on leaf-spine (eBPF):

- the shipped scenarios/network-transaction.yaml passes through `flexnet run`: its
  per-packet transactions (an ACL table into all six switches and two hosts' tc-egress
  functions swapped, and back) show 0 mixed probes, the report lists each one's parts,
  level, phases and oracle figures as one change;
- a part a device refuses during the run (the kernel verifier refuses a host function; a
  switch's table is full after the other parts were committed) leaves no part applied:
  every device read back right after the refusal is as it was right before the change,
  the intent too, and the report names the change, the device and what was undone."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACL = os.path.join(ROOT, "scenarios", "deltas", "acl-udp-9999.yaml")
SWITCHES = ["l1", "l2", "l3", "l4", "sp1", "sp2"]
H1 = "h1:tc:egress"
TC_EGRESS = {"hook": "tc", "direction": "egress"}
pytestmark = pytest.mark.root


def test_shipped_transaction_scenario_passes_with_zero_mixed_probes(tmp_path):
    res = subprocess.run([sys.executable, "-m", "flexnet_lab.cli", "run",
                          os.path.join(ROOT, "scenarios", "network-transaction.yaml"),
                          "--results", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    report = json.load(open(tmp_path / "network-transaction" / "report.json"))
    assert report["passed"] and all(r["ok"] for r in report["expectations"])
    assert report["oracle"]["mixed_by_level"]["per-packet"] == 0
    assert len(report["changes"]) == 4          # four transactions, one record each
    for c in report["changes"]:
        assert len(c["parts"]) == 3 and c["device"] == "*,h1,h3"
        assert any("h1: swap to" in p for p in c["parts"])
        # every switch and both hosts' functions changed in the one change
        assert c["notes"][0].startswith("8 devices: ") and H1 in c["notes"][0]
        assert c["oracle"]["probes"] > 1000
    packet = [c for c in report["changes"] if c["requested"] == "per-packet"]
    assert len(packet) == 2
    for c in packet:
        assert c["consistency"] == "per-packet" and c["oracle"]["mixed"] == 0
        # the ingress points that flipped together: six switches and the two hosts
        assert c["phases"]["ingress_points"] == 8
        assert all(c["phases"][k] >= 0 for k in ("install_ms", "flip_ms", "drain_ms",
                                                  "retire_ms"))
    png = tmp_path / "network-transaction" / "timeline.png"
    assert png.stat().st_size > 10_000


# --- a refused part: nothing stays applied ----------------------------------------------------




def _unverifiable(real):
    """The generator, except that count_min on a host dereferences a sketch lookup
    without a NULL check: clang compiles it, the kernel verifier refuses it."""
    def generate(program, hook="tc", role="switch", **kw):
        src = real(program, hook, role, **kw)
        if program.name != "count_min" or role != "host":
            return src
        checked = "if (c) __sync_fetch_and_add(c, 1);"
        assert checked in src.text
        return dataclasses.replace(src, text=src.text.replace(
            checked, "__sync_fetch_and_add(c, 1);", 1))
    return generate


@pytest.mark.parametrize("failure,level", [("verifier", "per-packet"),
                                           ("table-full", "per-packet"),
                                           ("table-full", "per-device")])
def test_a_refused_part_leaves_no_part_of_the_change_applied(tmp_path, monkeypatch, read_back,
                                                             failure, level):
    """changes[2] is one transaction: the ACL into five switches, h1's tc-egress function
    swapped, an entry on l1. verifier: h1's new function is refused by the kernel when
    loaded. table-full: l1's ACL holds one entry and has it, so l1 refuses the entry after
    the five switches and h1 were changed (entries come after programs)."""
    from flexnet_lab.errors import FlexNetError, VerifierError
    from flexnet_lab.targets import ebpf_datapath
    from flexnet_lab.verify import scenario

    tiny_acl = {"name": "tiny-acl", "ops": [{
        "add_table": {"name": "acl", "keys": [["meta.ip_proto", "exact"],
                                              ["meta.l4_dport", "exact"]],
                      "actions": ["drop", "nop"], "default": "nop",
                      "size": 1 if failure == "table-full" else 4, "before": "l3_fwd"},
        "actions": {"nop": {"ops": [["nop"]]}}}]}
    path = tmp_path / "refused-part.yaml"
    path.write_text(json.dumps({
        "name": "refused-part", "topology": "leaf-spine",
        "setup": [{"host": "h1", "attach": "flow_counter", **TC_EGRESS}],
        "traffic": {"duration": 6, "baseline": 1.2,
                    "flows": [{"name": "udp1", "src": "h1", "dst": "h8", "rate": "20M"}]},
        "changes": [
            {"at": 1.5, "switch": "l1", "delta": tiny_acl},
            {"at": 2, "switch": "l1", "entry": {"table": "acl", "match": [17, 1],
                                                "action": "drop"}},
            {"at": 3, "consistency": level, "parts": [
                {"switch": "sp*", "delta": ACL},
                {"switch": "l[234]", "delta": ACL},
                {"host": "h1", "swap": "count_min", **TC_EGRESS},
                {"switch": "l1", "entry": {"table": "acl", "match": [17, 2],
                                           "action": "drop"}}]},
            {"at": 4, "host": "h1", "swap": "acl", **TC_EGRESS}]}))   # never runs
    if failure == "verifier":
        monkeypatch.setattr(ebpf_datapath, "generate", _unverifiable(ebpf_datapath.generate))
    seen = {}
    real_apply = scenario._apply

    def watched(ctl, c, i, inverses, base):
        """The run's own apply; around the grouped change, every device read back and
        every controller change counted."""
        if c.kind != "group":
            return real_apply(ctl, c, i, inverses, base)
        seen["before"] = read_back(ctl, SWITCHES + [H1], hosts=(H1,))
        seen["intent"] = dict(ctl.intent.devices)
        calls = seen.setdefault("changes", [])
        real_change = ctl.change
        ctl.change = lambda op, *a, **kw: (calls.append(op), real_change(op, *a, **kw))[1]
        try:
            return real_apply(ctl, c, i, inverses, base)
        except FlexNetError as exc:
            seen["error"] = exc
            raise
        finally:
            del ctl.change
            seen["after"] = read_back(ctl, SWITCHES + [H1], hosts=(H1,))
            seen["intent_after"] = dict(ctl.intent.devices)

    monkeypatch.setattr(scenario, "_apply", watched)
    outcome = scenario.run_scenario(str(path), os.path.join(ROOT, "topologies"),
                                    str(tmp_path / "r"), quiet=True)

    assert len(seen["changes"]) == 1, seen["changes"]     # the parts: one controller change
    err = str(seen["error"])
    if failure == "verifier":
        assert isinstance(seen["error"], VerifierError), err[:600]
        assert seen["error"].device == H1 and "map_value_or_null" in seen["error"].log
        assert "nothing had been applied" in err, err[:600]
        assert seen["before"][H1]["program"].name == "flow_counter"
    else:
        assert "l1" in err and "undone" in err, err[:600]
        # the other parts had been made, and were undone: the five switches and h1
        for n in ("sp1", "sp2", "l2", "l3", "l4", H1):
            assert n in err.split("undone", 1)[1], (n, err[:800])
    for n in SWITCHES + [H1]:
        assert seen["after"][n] == seen["before"][n], (failure, level, n)
    assert seen["intent_after"] == seen["intent"]
    assert all(seen["after"][n]["program"].table("acl") is None for n in SWITCHES[1:])
    report = json.load(open(tmp_path / "r" / "refused-part" / "report.json"))
    failed = report["failed_change"]
    assert failed["index"] == 2 and failed["skipped"] == 1 and not report["passed"]
    assert outcome.failed_change and outcome.failed_change.startswith("changes[2]")
    assert [c["index"] for c in report["changes"]] == [0, 1]
    ran = next(r for r in report["expectations"] if r["expect"].get("ran"))
    assert ran["ok"], ran                          # the flow kept getting through
