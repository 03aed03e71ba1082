"""Faults against the controller under a UDP flow, against the same flow with nothing
happening. Prints one JSON object.

    python benchmarks/controller_faults.py [--repeats 5] [--kills 20] [--rate 100M] [--bmv2]

Leaf-spine, eBPF switches; the controller runs as its own process under a Supervisor (as in
`flexnet up`). The flow is h1 -> h8 (h1 - l1 - sp1|sp2 - l4 - h8).

1. baseline: the flow alone.
2. drift: devices changed behind the controller's back, one kind after another (round
   robin), `--repeats` times each, `--interval` s apart, under the flow. Where each kind
   strikes (on the flow's path or not) is in `drift_where`. Detect time: the `at` of the
   first "repair" event for that device after the injection, minus the injection's time;
   repaired: that event came and the device is checked back as it was (filter back, slot 0
   not the intruder, key back in the map, pin back).
3. kills: a thread changes the network continuously through the controller (the ACL table
   added to / removed from every leaf with two deltas, an entry inserted / deleted in l1's
   acl), while the main thread SIGKILLs the controller `--kills` times at random moments.
   After each restart (the controller answers and one reconcile pass went by), the leaves'
   pipelines are read from the kernel (the maps of the program in slot 0 of each leaf's
   tail-call map) and compared with each other, with the intent (the controller's tables),
   and with what the acknowledged calls asked for (a call the kill cut may have happened or
   not). `lost_during_restart`: datagrams lost in the windows [kill, ready + 1 s], against
   the baseline's loss rate over the same total duration.

--bmv2 needs simple_switch_grpc on PATH (exit 3 with a JSON note otherwise).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from flexnet_lab.control.channel import ControlClient, socket_path  # noqa: E402
from flexnet_lab.control.daemon import Supervisor  # noqa: E402
from flexnet_lab.errors import ControlError, EnvironmentMissing, FlexNetError  # noqa: E402
from flexnet_lab.lab.fabric import Fabric  # noqa: E402
from flexnet_lab.lab.network import Lab  # noqa: E402
from flexnet_lab.targets.bpf_syscall import PROG_SCHED_CLS, Bpf  # noqa: E402
from flexnet_lab.topology import load_topology  # noqa: E402
from flexnet_lab.verify.traffic import FlowSpec, Traffic, percentile  # noqa: E402

LEAVES = ("l1", "l2", "l3", "l4")
SRC, DST = "h1", "h8"
ACL_ADD = os.path.join(ROOT, "scenarios/deltas/acl-udp-9999.yaml")
ACL_ENTRY = [17, 9999]
INTRUDER = bytes.fromhex("b700000000000000" + "9500000000000000")  # r0 = 0; exit
BMV2_SWITCH = "sp2"   # --bmv2: this switch runs bmv2, the others eBPF


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


class Net:
    """What the injections need to find: namespaces, interfaces, pins."""

    def __init__(self, lab: Lab):
        self.fabric = Fabric.load(lab.tag.dir)
        self.pin_dir = lab.tag.pin_dir
        self.bpf = Bpf()

    def ns(self, node: str) -> str:
        f = self.fabric
        path = f.hosts[node].netns if node in f.hosts else f.switches[node].netns
        return os.path.basename(path)

    def intf(self, host: str) -> str:
        return self.fabric.hosts[host].intf

    def pin(self, device: str, name: str) -> str:
        return os.path.join(self.pin_dir, device, name)

    def pipeline_maps(self, switch: str) -> set[str]:
        """Names of the maps of the program in slot 0 of the switch's tail-call map: what
        the kernel runs, whatever any process believes."""
        bpf = self.bpf
        pipe = bpf.obj_get(self.pin(switch, "flx_pipe"))
        try:
            slot = bpf.lookup(pipe, (0).to_bytes(4, "little"), 4)
        finally:
            bpf.close(pipe)
        if slot is None:
            return set()
        prog = bpf.prog_fd_by_id(int.from_bytes(slot, "little"))
        names = set()
        try:
            for map_id in bpf.prog_map_ids(prog):
                fd = bpf.map_fd_by_id(map_id)
                names.add(bpf.map_info(fd).name)
                bpf.close(fd)
        finally:
            bpf.close(prog)
        return names


# --- drift kinds -------------------------------------------------------------------------
class Drift:
    """One kind of drift: inject() changes the device behind the controller's back and
    returns a token; repaired(token) checks the device is back as it was."""
    kind = ""
    device = ""
    where = ""

    def __init__(self, net: Net):
        self.net = net
        self.n = 0


class XdpDetached(Drift):
    kind, device = "xdp_detached", "h8:xdp:ingress"
    where = "h8's XDP program (flow_counter) on h8-eth0: the flow's receiver"

    def inject(self):
        sh("ip", "-n", self.net.ns("h8"), "link", "set", "dev", self.net.intf("h8"), "xdp", "off")

    def repaired(self, token) -> bool:
        return "xdp" in sh("ip", "-n", self.net.ns("h8"), "link", "show", "dev",
                           self.net.intf("h8"))


class TcFilterDeleted(Drift):
    kind, device = "tc_filter_deleted", "l1"
    where = "l1-eth1 ingress (h1's port on l1: the flow's first hop)"

    def inject(self):
        sh("tc", "-n", self.net.ns("l1"), "filter", "del", "dev", "l1-eth1", "ingress")

    def repaired(self, token) -> bool:
        return "flexnet_root" in sh("tc", "-n", self.net.ns("l1"), "filter", "show", "dev",
                                    "l1-eth1", "ingress")


class HostTcFilterDeleted(Drift):
    kind, device = "host_tc_filter_deleted", "h1:tc:egress"
    where = "h1-eth0 egress (flow_counter on the flow's sender)"

    def inject(self):
        sh("tc", "-n", self.net.ns("h1"), "filter", "del", "dev", self.net.intf("h1"), "egress")

    def repaired(self, token) -> bool:
        return "flexnet_root" in sh("tc", "-n", self.net.ns("h1"), "filter", "show", "dev",
                                    self.net.intf("h1"), "egress")


class SlotReplaced(Drift):
    kind, device = "slot_replaced", "l4"
    where = "slot 0 of l4's flx_pipe (the flow's last switch)"

    def inject(self):
        bpf = self.net.bpf
        fd = bpf.prog_load(PROG_SCHED_CLS, INTRUDER, "intruder")
        pipe = bpf.obj_get(self.net.pin(self.device, "flx_pipe"))
        try:
            bpf.update(pipe, (0).to_bytes(4, "little"), fd.to_bytes(4, "little"))
            return bpf.prog_id(fd)
        finally:
            bpf.close(pipe)
            bpf.close(fd)   # slot 0 (until repaired) holds the intruder's last reference

    def repaired(self, intruder_id) -> bool:
        bpf = self.net.bpf
        pipe = bpf.obj_get(self.net.pin(self.device, "flx_pipe"))
        try:
            slot = bpf.lookup(pipe, (0).to_bytes(4, "little"), 4)
        finally:
            bpf.close(pipe)
        return slot is not None and int.from_bytes(slot, "little") != intruder_id


class EntryDeleted(Drift):
    kind, device = "entry_deleted", "l1"
    where = "one key of l1's t_l3_fwd (in turn; h8's route among them: the flow's path)"

    def inject(self):
        bpf = self.net.bpf
        fd = bpf.obj_get(self.net.pin(self.device, "t_l3_fwd"))
        try:
            info = bpf.map_info(fd)
            keys = sorted(bpf.keys(fd, info.key_size))
            key = keys[self.n % len(keys)]
            self.n += 1
            if not bpf.delete(fd, key):
                raise RuntimeError("entry_deleted: the key was not there")
            return key, info.value_size
        finally:
            bpf.close(fd)

    def repaired(self, token) -> bool:
        key, value_size = token
        bpf = self.net.bpf
        fd = bpf.obj_get(self.net.pin(self.device, "t_l3_fwd"))
        try:
            return bpf.lookup(fd, key, value_size) is not None
        finally:
            bpf.close(fd)


class MapUnpinned(Drift):
    kind, device = "map_unpinned", "l2"
    where = "l2's m_port_rx pin (off the flow's path)"

    def inject(self):
        os.unlink(self.net.pin(self.device, "m_port_rx"))

    def repaired(self, token) -> bool:
        return os.path.exists(self.net.pin(self.device, "m_port_rx"))


class RootUnpinned(Drift):
    kind, device = "root_unpinned", "sp1"
    where = "sp1's root program pin (a spine: on the path when ECMP picks sp1)"

    def inject(self):
        os.unlink(self.net.pin(self.device, "root"))

    def repaired(self, token) -> bool:
        return os.path.exists(self.net.pin(self.device, "root"))


class Bmv2Killed(Drift):
    """A bmv2 switch's process killed: the controller starts it again with its pipeline,
    its entries and its registers from the last snapshot (--bmv2 only)."""
    kind, device = "bmv2_killed", BMV2_SWITCH
    where = f"{BMV2_SWITCH}'s simple_switch_grpc process (kill -9)"

    def _pids(self) -> list[int]:
        # the switch's own process: simple_switch_grpc inside the switch's namespace (never
        # a match by name across the machine)
        ns_ino = os.stat(self.net.fabric.switches[self.device].netns).st_ino
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/comm") as fh:
                    if fh.read().strip() != "simple_switch_g":
                        continue
                if os.stat(f"/proc/{p}/ns/net").st_ino == ns_ino:
                    pids.append(int(p))
            except OSError:
                continue
        return pids

    def inject(self):
        pids = self._pids()
        if not pids:
            raise RuntimeError(f"bmv2_killed: no simple_switch_grpc in {self.device}'s namespace")
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return set(pids)

    def repaired(self, old) -> bool:
        return bool(set(self._pids()) - old)


class Events:
    """Polls the controller's event log."""

    def __init__(self, client: ControlClient):
        self.client = client
        self.last = 0
        self.errors: list[dict] = []
        self.recovers: list[dict] = []

    def poll(self) -> list[dict]:
        evs = self.client.call("events", since=self.last, limit=1000)
        if evs:
            self.last = evs[-1]["id"]
        for e in evs:
            if e["kind"] == "error":
                self.errors.append(e)
            elif e["kind"] == "recover":
                self.recovers.append(e)
        return evs


def drift_phase(net: Net, events: Events, kinds: list[Drift], repeats: int,
                interval_s: float, timeout_s: float = 3.0) -> dict:
    results = {d.kind: {"injected": 0, "repaired": 0, "detect_s": [], "failures": []}
               for d in kinds}
    stray, windows = [], []
    events.poll()
    for _ in range(repeats):
        for d in kinds:
            r = results[d.kind]
            t_inj = time.time()
            token = d.inject()
            r["injected"] += 1
            found = None
            while found is None and time.time() - t_inj < timeout_s:
                time.sleep(0.02)
                for e in events.poll():
                    if e["kind"] == "repair" and e["device"] == d.device and found is None:
                        found = e
                    elif e["kind"] == "repair":
                        stray.append(e)
            windows.append((d.kind, t_inj, (found["at"] if found else time.time()) + 0.3))
            if found is None:
                r["failures"].append(f"no repair event within {timeout_s} s")
            else:
                ok = d.repaired(token)
                if ok:
                    r["repaired"] += 1
                    r["detect_s"].append(found["at"] - t_inj)
                else:
                    r["failures"].append(f"repair event but not repaired: {found['detail']}")
            time.sleep(max(0.0, t_inj + interval_s - time.time()))
    return {"results": results, "stray_repairs": stray, "windows": windows}


# --- kill phase ------------------------------------------------------------------------
def _is_cut(exc: Exception) -> bool:
    """The controller died under the call (or was not there): not a refusal."""
    msg = str(exc)
    return isinstance(exc, ControlError) and (msg.startswith("controller at ") or
                                              msg.startswith("no controller at "))


class Changer(threading.Thread):
    """Changes the network through the controller, one call after another; keeps the state
    the acknowledged calls asked for. A cut call makes it wait until the main thread has
    read the devices after the restart (and resynchronised the expected state)."""

    def __init__(self, client: ControlClient, remove_path: str):
        super().__init__(daemon=True, name="changer")
        self.client, self.remove_path = client, remove_path
        self.lock = threading.Lock()
        self.expected = {"acl": False, "entry": False}
        self.alt = None            # a cut call's outcome if it happened
        self.inflight = None
        self.resumed = threading.Event()
        self.halt = threading.Event()
        self.acked = self.cut = 0
        self.refused: list[str] = []
        self.latency: dict[str, list[float]] = {}
        self.cut_op = None         # the op of the last cut call
        self.n = 0

    def _next(self):
        acl, entry = self.expected["acl"], self.expected["entry"]
        self.n += 1
        if not acl:
            return ("delta_add", {"acl": True, "entry": False},
                    ("delta", {"target": "l*", "path": ACL_ADD}))
        remove = ("delta_remove", {"acl": False, "entry": False},
                  ("delta", {"target": "l*", "path": self.remove_path}))
        if not entry:
            if self.n % 3 == 2:
                return remove
            return ("entry_insert", {"acl": True, "entry": True},
                    ("entry", {"target": "l1", "table": "acl", "match": ACL_ENTRY,
                               "action": "drop"}))
        if self.n % 2:
            return remove
        return ("entry_delete", {"acl": True, "entry": False},
                ("delete_entry", {"target": "l1", "table": "acl", "match": ACL_ENTRY}))

    def run(self):
        while not self.halt.is_set():
            with self.lock:
                name, after, (op, args) = self._next()
                self.inflight = name
                t0 = time.monotonic()
                try:
                    self.client.call(op, **args)
                    self.latency.setdefault(name, []).append(time.monotonic() - t0)
                    self.expected = after
                    self.acked += 1
                    cut = False
                except FlexNetError as exc:
                    cut = _is_cut(exc)
                    if cut:
                        self.cut += 1
                        self.alt, self.cut_op = after, name
                        self.resumed.clear()
                    else:
                        self.refused.append(f"{name}: {exc}"[:200])
                        self.alt = after   # resynchronise from the devices at the next check
                finally:
                    self.inflight = None
            if cut:
                self.resumed.wait()
            else:
                time.sleep(0.05)


def observe(net: Net, client: ControlClient) -> dict:
    """The leaves as the kernel runs them and as the controller's intent has them."""
    device = {n: "t_acl" in net.pipeline_maps(n) for n in LEAVES}
    intent = {n: "acl" in {t["name"] for t in client.call("tables", device=n)["tables"]}
              for n in LEAVES}
    entry = False
    if device["l1"] and intent["l1"]:
        entry = any(e["match"] == ACL_ENTRY for e in client.call("entries", device="l1",
                                                                 table="acl"))
    return {"device": device, "intent": intent, "entry": entry}


def wait_restart(sup: Supervisor, old_pid: int, client: ControlClient,
                 timeout_s: float = 30.0) -> float:
    """Until the new controller answers and one reconcile pass of its loop went by;
    returns when it answered (time.time())."""
    t0 = time.monotonic()
    while sup.proc is None or sup.proc.pid == old_pid:
        if time.monotonic() - t0 > timeout_s:
            raise ControlError("the supervisor did not restart the controller")
        time.sleep(0.005)
    sup.wait_ready(timeout_s)
    ready = time.time()
    # passes == 1 is the pass before serving; > 1: the reconcile loop ran once
    while client.call("ping")["passes"] < 2:
        time.sleep(0.02)
    return ready


def kill_phase(net: Net, sup: Supervisor, client: ControlClient, events: Events,
               kills: int, rng: random.Random, remove_path: str) -> dict:
    changer = Changer(client, remove_path)
    out = {"kill_times": [], "ready_times": [], "restart_s": [], "mid_change": 0,
           "half_applied": 0, "intent_lost": 0, "problems": [], "seen": {},
           "cut_outcome": {}}
    changer.start()
    try:
        for k in range(kills):
            time.sleep(rng.uniform(0.3, 1.5))
            pid = sup.proc.pid
            mid = changer.inflight
            t_kill = time.time()
            os.kill(pid, signal.SIGKILL)
            ready = wait_restart(sup, pid, client)
            out["kill_times"].append(t_kill)
            out["ready_times"].append(ready)
            out["restart_s"].append(ready - t_kill)
            if mid is not None:
                out["mid_change"] += 1
            with changer.lock:
                obs = observe(net, client)
                dev, intent = obs["device"], obs["intent"]
                if len(set(dev.values())) > 1 or dev != intent:
                    out["half_applied"] += 1
                    out["problems"].append(f"kill {k} ({mid or 'between calls'}): device "
                                           f"{dev}, intent {intent}")
                state = {"acl": dev["l1"], "entry": obs["entry"]}
                allowed = [changer.expected] + ([changer.alt] if changer.alt else [])
                if len(set(dev.values())) == 1 and state not in allowed:
                    out["intent_lost"] += 1
                    cut = f", or the cut call's {changer.alt}" if changer.alt else ""
                    out["problems"].append(f"kill {k} ({mid or 'between calls'}): on the "
                                           f"devices {state}, acknowledged {changer.expected}"
                                           + cut)
                seen = ("acl+entry" if state["entry"] else "acl") if state["acl"] else "no acl"
                out["seen"][seen] = out["seen"].get(seen, 0) + 1
                if changer.alt is not None and changer.alt != changer.expected:
                    how = "applied" if state == changer.alt else "not applied"
                    key = f"{changer.cut_op}: {how}"
                    out["cut_outcome"][key] = out["cut_outcome"].get(key, 0) + 1
                changer.expected, changer.alt = state, None
                changer.resumed.set()
            events.poll()
    finally:
        changer.halt.set()
        changer.resumed.set()
        changer.join(30)
    out.update(acked=changer.acked, cut=changer.cut, refused=changer.refused,
               latency={k: [round(percentile(v, 50), 3), round(max(v), 3), len(v)]
                        for k, v in sorted(changer.latency.items())})
    return out


# --- flows -------------------------------------------------------------------------------
def start_flow(lab: Lab, rate: int, duration: float) -> Traffic:
    t = Traffic(lab, [FlowSpec("udp", SRC, DST, "udp", rate, duration)])
    t.start()
    return t


def lost_in(traffic: Traffic, result, windows: list[tuple[float, float]]) -> tuple[int, float]:
    """Datagrams lost in intervals whose middle falls in a window; the windows' total
    length (merged)."""
    merged: list[list[float]] = []
    for a, b in sorted(windows):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    lost = 0
    for i in result.intervals:
        mid = traffic.t0 + (i.start + i.end) / 2
        if any(a <= mid <= b for a, b in merged):
            lost += i.lost
    return lost, sum(b - a for a, b in merged)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM too goes through the clean-up in main()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bmv2", action="store_true",
                    help=f"run {BMV2_SWITCH} on bmv2 and kill its process as a drift kind")
    ap.add_argument("--rate", default="100M")
    ap.add_argument("--repeats", type=int, default=5, help="injections of each drift kind")
    ap.add_argument("--interval", type=float, default=1.2, help="s between injections")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--baseline-s", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep-log", default=None, help="copy controller.log here at the end")
    args = ap.parse_args()
    rate = int(float(args.rate.rstrip("MG")) * (1e9 if args.rate.endswith("G") else 1e6))
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)

    if args.bmv2 and shutil.which("simple_switch_grpc") is None:
        print(json.dumps({"note": "--bmv2: simple_switch_grpc is not on PATH (bmv2 is not "
                                  "installed; try PATH=/opt/p4/bin:$PATH)"}))
        return 3

    topo = load_topology(os.path.join(ROOT, "topologies/leaf-spine.yaml"))
    if args.bmv2:
        topo = topo.with_targets(lambda s: "bmv2" if s.name == BMV2_SWITCH else "ebpf")
    else:
        topo = topo.with_targets(lambda s: "ebpf")
    tmp = tempfile.mkdtemp(prefix="controller-faults-")
    remove_path = os.path.join(tmp, "acl-remove.yaml")
    with open(remove_path, "w") as fh:
        fh.write("# Remove the ACL table acl-udp-9999.yaml adds.\nname: acl-remove\n"
                 "ops:\n  - remove_tables: acl\n")

    signal.signal(signal.SIGTERM, _interrupt)
    lab = Lab(topo)
    sup = None
    traffic = None
    log_text = ""
    try:
        t_start = time.monotonic()
        lab.start()
        bringup_s = time.monotonic() - t_start
        lab.release_devices()
        sup = Supervisor(lab.tag.dir, lab.tag.env())
        sup.start()
        client = ControlClient(socket_path(lab.tag.dir), timeout_s=60)
        net = Net(lab)
        events = Events(client)
        client.call("attach", host="h8", program="flow_counter", hook="xdp")
        client.call("attach", host="h1", program="flow_counter", hook="tc", direction="egress")

        # 1. baseline
        traffic = start_flow(lab, rate, args.baseline_s)
        base = traffic.results()[0]
        traffic.stop()

        # 2. drift
        kinds = [XdpDetached(net), TcFilterDeleted(net), SlotReplaced(net),
                 EntryDeleted(net), MapUnpinned(net), RootUnpinned(net),
                 HostTcFilterDeleted(net)]
        if args.bmv2:
            kinds.append(Bmv2Killed(net))
        n_inj = len(kinds) * args.repeats
        traffic = start_flow(lab, rate, round(n_inj * args.interval + 3, 1))
        time.sleep(0.5)
        drift = drift_phase(net, events, kinds, args.repeats, args.interval)
        drift_flow = traffic.results()[0]
        traffic.stop()
        drift_lost = {d.kind: lost_in(traffic, drift_flow, [(a, b) for k, a, b in
                                                            drift["windows"] if k == d.kind])[0]
                      for d in kinds}

        # 3. kills: one unmeasured kill first, to size the flow to the phase
        pid = sup.proc.pid
        t_kill = time.time()
        os.kill(pid, signal.SIGKILL)
        warm = wait_restart(sup, pid, client) - t_kill
        # mean random delay, the restart (later ones run slower than the first: the flow
        # and the changes load the CPUs), the reconcile pass and the checks
        per_kill = 0.9 + 1.5 * max(warm, 0.7) + 0.8
        kill_flow_s = round(args.kills * per_kill + 4, 1)
        traffic = start_flow(lab, rate, kill_flow_s)
        time.sleep(0.5)
        kp = kill_phase(net, sup, client, events, args.kills, rng, remove_path)
        kill_flow = traffic.results()[0]
        traffic.stop()
        windows = [(k, r + 1.0) for k, r in zip(kp["kill_times"], kp["ready_times"])]
        flow_end = traffic.t0 + kill_flow_s
        lost_restart, window_s = lost_in(traffic, kill_flow, windows)
        events.poll()
        with open(sup.log_path, errors="replace") as fh:
            log_text = fh.read()
        if args.keep_log:
            shutil.copy(sup.log_path, args.keep_log)
    finally:
        if traffic is not None:
            traffic.stop()
        if sup is not None:
            sup.stop()
        lab.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    res = drift["results"]
    detects = [d for r in res.values() for d in r["detect_s"]]
    base_rate = base.lost / args.baseline_s
    log_problems = [ln for ln in log_text.splitlines()
                    if "Traceback" in ln or "Error" in ln or "error" in ln][:20]
    out = {
        "topology": "leaf-spine", "switches": "ebpf" + (f" ({BMV2_SWITCH} bmv2)" if args.bmv2
                                                         else ""),
        "flow": f"{SRC} -> {DST} UDP {rate / 1e6:g} Mbit/s, 1200 B datagrams, 4 MB buffer",
        "seed": seed, "bringup_s": round(bringup_s, 2),
        "baseline_s": args.baseline_s, "baseline_sent": base.sent, "baseline_lost": base.lost,
        "drift_kinds": [d.kind for d in kinds],
        "drift_where": {d.kind: d.where for d in kinds},
        "drift_injected": sum(r["injected"] for r in res.values()),
        "repaired": sum(r["repaired"] for r in res.values()),
        "detect_p50_s": round(percentile(detects, 50), 3) if detects else None,
        "detect_max_s": round(max(detects), 3) if detects else None,
        "drift_per_kind": {k: {"injected": r["injected"], "repaired": r["repaired"],
                               "detect_max_s": round(max(r["detect_s"]), 3) if r["detect_s"]
                               else None, "flow_lost": drift_lost[k],
                               "failures": r["failures"][:3]}
                           for k, r in res.items()},
        "drift_flow_note": "flow_lost per kind: datagrams lost from each injection to 0.3 s "
                           "after its repair event",
        "drift_flow": {"sent": drift_flow.sent, "lost": drift_flow.lost,
                       "error": drift_flow.error},
        "stray_repairs": [f"{e['device']}: {e['detail']}" for e in drift["stray_repairs"]][:10],
        "controller_kills": len(kp["kill_times"]),
        "kills_mid_change": kp["mid_change"],
        "changes_acknowledged": kp["acked"], "changes_cut": kp["cut"],
        "changes_refused": kp["refused"][:5],
        "change_latency_s": {k: {"p50": v[0], "max": v[1], "n": v[2]}
                             for k, v in kp["latency"].items()},
        "cut_calls_outcome": kp["cut_outcome"],
        "states_seen_after_restart": kp["seen"],
        "half_applied_after_restart": kp["half_applied"],
        "intent_lost": kp["intent_lost"],
        "kill_problems": kp["problems"][:10],
        "restart_p50_s": round(percentile(kp["restart_s"], 50), 3),
        "restart_max_s": round(max(kp["restart_s"]), 3),
        "restart_warmup_s": round(warm, 3),
        "supervisor_restarts": sup.restarts,
        "recovered_changes": len(events.recovers),
        "lost_during_restart": lost_restart,
        "restart_windows_s": round(window_s, 2),
        "baseline_lost_same_duration": round(base_rate * window_s, 2),
        "kill_flow": {"duration_s": kill_flow_s, "sent": kill_flow.sent,
                      "lost": kill_flow.lost, "error": kill_flow.error,
                      "kills_after_flow_end": sum(1 for t in kp["kill_times"] if t > flow_end)},
        "controller_error_events": [f"{e['device']}: {e['detail']}" for e in events.errors][:10],
        "controller_log_problems": log_problems,
    }
    print(json.dumps(out, indent=1))
    ok = (out["repaired"] == out["drift_injected"] and (out["detect_max_s"] or 99) <= 2.0
          and out["half_applied_after_restart"] == 0 and out["intent_lost"] == 0
          and out["controller_kills"] >= 20 and not events.errors)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(json.dumps({"error": "interrupted (the lab was cleaned up)"}))
        sys.exit(130)
    except FlexNetError as exc:
        print(json.dumps({"error": str(exc)[:300]}))
        sys.exit(3 if isinstance(exc, EnvironmentMissing) else 1)
