"""The running lab: realises a Topology with Mininet and the lab's targets, and owns every
kernel object it creates until stop()."""
from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from mininet.net import Mininet

from ..compiler.ebpf import generate, root_source
from ..errors import EnvironmentMissing, FlexNetError, LabError
from ..program.library import infrastructure
from ..program.model import Program
from ..progress import Silent
from ..targets.bcc_compile import Compiler
from ..targets.bpf_syscall import Bpf
from ..targets.ebpf_switch import EbpfSwitch
from ..targets.netlink import Netns, add_neighbour
from ..topology.model import Topology, resolve_auto
from ..topology.routes import compute_routes
from .clean import release_bpffs, remove_namespaces
from .fabric import Fabric, HostDesc, SwitchDesc
from .nodes import (LabHost, LabSwitch, NodeSpec, VethSpec, configure_node, create_veths,
                    name_namespaces, start_nodes)
from .pingall import ping_all
from .runstate import RunTag, ensure_bpffs, signals_deferred


# "auto" switches become bmv2 where simple_switch_grpc is installed (topology.resolve_auto)
BMV2_TARGET_AVAILABLE = True


def have_bmv2() -> bool:
    """Whether `auto` switches become bmv2 here."""
    return BMV2_TARGET_AVAILABLE and shutil.which("simple_switch_grpc") is not None


def neighbour_budget() -> int:
    """How many dynamic ARP entries (hosts x hosts) a lab may need before it pre-resolves
    them: a quarter of the machine-wide limit, which other labs share."""
    try:
        with open("/proc/sys/net/ipv4/neigh/default/gc_thresh3") as fh:
            return int(fh.read()) // 4
    except (OSError, ValueError):
        return 1024 // 4  # the kernel's default limit


class Lab:
    """A live network of the topology's hosts and switches.

    Use as a context manager, or call start() and stop(); stop() runs on every exit path
    of start() itself, so a failed bring-up leaves nothing behind."""

    def __init__(self, topology: Topology, base: str | None = None, switch_kind: str | None = None,
                 progress=None, p4: dict | None = None):
        self.topology = resolve_auto(topology, have_bmv2())
        if switch_kind:  # force every switch to one kind (benchmarks: "bridge")
            self.topology = self.topology.with_targets(lambda s: switch_kind)
        self.tag = RunTag.new(base) if base else RunTag.new()
        self.compiler = Compiler()
        self.bpf = Bpf()
        self.net: Mininet | None = None
        self.switches: dict[str, object] = {}
        self.routes = compute_routes(self.topology)
        self.infra: Program = infrastructure()
        self.bringup_s: float | None = None
        self._netns: list[str] = []
        self._p4_compiled: dict = {}
        self._owner = os.getpid()  # a forked copy of this object must never tear down
        # a flexnet_lab.progress.Progress to report bring-up to (silent by default)
        self.progress = progress or Silent()
        self._capture = None       # lab.capture.PortCapture once a port is captured
        # switches running a user's own P4 program: lab.p4_programs.SwitchP4 by name
        # (prepared in start() unless given)
        self.p4 = p4
        self.notes: list[str] = []  # what the user should know (host commands that failed)
        # where pcap files are kept after the run (the run folder goes with the run)
        self.keep_dir = os.path.abspath(os.path.join("results",
                                                     f"{self.topology.name}-{self.tag.run}"))

    # --- life cycle -----------------------------------------------------------------------
    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Lab":
        t0 = time.perf_counter()
        if self.p4 is None and any(s.p4 for s in self.topology.switches):
            from .p4_programs import prepare_p4   # bad files fail here: nothing exists yet
            self.p4 = prepare_p4(self.topology)
        self._check_tools()
        if self.p4 and shutil.which("simple_switch_grpc") is None:
            raise EnvironmentMissing("simple_switch_grpc not found (switches "
                                     f"{', '.join(sorted(self.p4))} run P4 programs): "
                                     "install p4lang-bmv2")
        self.tag.write_state(pid=os.getpid(), topology=self.topology.name,
                             source=self.topology.source, status="starting", started=time.time())
        compiled = None
        try:
            ensure_bpffs(self.tag)
            compiled = self._precompile()
            self._build_mininet()
            self.progress.step("compiling the switch program")
            compiled.join()
            self.progress.step("switches", len(self.topology.switches))
            for name in self.topology_switch_names():
                self._start_switch(name)
                self.progress.advance()
            self.progress.step("routes", sum(len(r) for r in self.routes.values()))
            self._install_routes()
            if (any(s.target == "bridge" for s in self.topology.switches)
                    or len(self.topology.hosts) ** 2 > neighbour_budget()):
                self._static_neighbours()
            if any(s.target == "bmv2" for s in self.topology.switches):
                self._software_checksums()
            self._host_commands()
        except BaseException:
            if compiled is not None:  # nothing of a failed start runs on after it
                threading.Thread.join(compiled)
            self.stop()
            raise
        self.bringup_s = time.perf_counter() - t0
        self.progress.finish("up")
        self.fabric().save()
        if self.topology.capture:
            for name in self.topology_switch_names():
                self.capture(name)
        self.tag.write_state(pid=os.getpid(), topology=self.topology.name,
                             source=self.topology.source, status="up", started=time.time(),
                             namespaces=self._netns, bringup_s=self.bringup_s)
        return self

    def stop(self) -> None:
        """Tear down everything this run created; safe to call more than once. A Ctrl-C
        or SIGTERM arriving meanwhile waits until it is done."""
        if os.getpid() != self._owner:
            return
        with signals_deferred():
            self._stop()

    def _stop(self) -> None:
        errors = []
        if self._capture is not None:
            _quietly(errors, self._capture.stop)
            _quietly(errors, lambda: self._capture.keep(os.path.join(self.keep_dir, "pcap")))
            self._capture = None
        for sw in list(self.switches.values()):
            _quietly(errors, sw.close)
        self.switches.clear()
        if self.net is not None:
            nodes = self.net.hosts + self.net.switches
            for node in nodes:  # signal every shell first: they exit in parallel
                _quietly(errors, lambda: _hang_up(node))
            for node in nodes:
                _quietly(errors, node.terminate)
            self.net = None
        remove_namespaces(self._netns)
        self._netns.clear()
        shutil.rmtree(self.tag.pin_dir, ignore_errors=True)
        shutil.rmtree(self.tag.dir, ignore_errors=True)
        release_bpffs(self.tag.base)

    # --- bring-up steps -------------------------------------------------------------------
    @staticmethod
    def _check_tools() -> None:
        for tool, pkg in (("mnexec", "mininet"), ("ip", "iproute2"), ("tc", "iproute2")):
            if shutil.which(tool) is None:
                raise EnvironmentMissing(f"{tool} not found: install Debian's {pkg}")
        if os.geteuid() != 0:
            raise EnvironmentMissing("the lab needs root (network namespaces, BPF)")

    def topology_switch_names(self) -> list[str]:
        return [s.name for s in self.topology.switches]

    def _precompile(self) -> threading.Thread:
        """Compile the switch programs while Mininet builds (bcc releases the GIL)."""
        errors: list[BaseException] = []

        def work():
            try:
                if any(s.target == "ebpf" for s in self.topology.switches):
                    self.compiler.compile(generate(self.infra, "tc", "switch").text, ["pipeline"])
                    self.compiler.compile(root_source("tc"), ["root"])
            except BaseException as exc:  # surfaced by join()
                errors.append(exc)

        class _Join(threading.Thread):
            def join(self, timeout=None):
                super().join(timeout)
                if errors:
                    raise errors[0]

        th = _Join(target=work, daemon=True)
        th.start()
        return th

    def _build_mininet(self) -> None:
        """Nodes, namespaces and links, batched (see nodes.py): shells start in parallel,
        one `ip -batch` names the namespaces and one creates every veth inside them, and
        each namespace is configured by one netlink batch."""
        topo = self.topology
        net = Mininet(topo=None, build=False, controller=None, autoSetMacs=False,
                      autoStaticArp=False, waitConnected=False)
        self.net = net
        specs = [NodeSpec(h.name, LabHost, {"ip": f"{h.ip}/{h.prefixlen}", "mac": h.mac,
                                           "run_tag": self.tag}) for h in topo.hosts]
        specs += [NodeSpec(s.name, LabSwitch, {"dpid": f"{i:016x}", "run_tag": self.tag})
                  for i, s in enumerate(topo.switches, start=1)]
        # every namespace is listed before it exists: stop() removes whatever got made
        self._netns.extend(self.tag.netns(spec.name) for spec in specs)
        self.progress.step("node shells", len(specs))
        start_nodes(net, specs, self.progress.advance)
        nodes = net.hosts + net.switches
        self.progress.step(f"namespaces and {len(topo.links)} links")
        name_namespaces(nodes)
        macs = {h.name: h.mac for h in topo.hosts}
        links = []
        def intf(node: str, port) -> str:
            # coursework hosts call their interface eth0 (their commands say so); veths
            # are made inside their namespaces, so the name need not be unique
            return topo.host_intf if topo.host_intf and topo.is_host(node) else port.intf
        for link in topo.links:
            pa, pb = topo.port_between(link.a, link.b), topo.port_between(link.b, link.a)
            links.append(VethSpec(link.a, intf(link.a, pa), pa.number, macs.get(link.a),
                                  link.b, intf(link.b, pb), pb.number, macs.get(link.b),
                                  link.bw))
        create_veths(net, links)
        self.progress.step("configure nodes", len(nodes))
        hosts = {h.name: h for h in topo.hosts}
        for node in nodes:
            h = hosts.get(node.name)
            configure_node(node, self.tag.alias, (h.ip, h.prefixlen) if h else None)
            self.progress.advance()
        net.built = True

    def _start_switch(self, name: str) -> None:
        spec = self.topology.switch(name)
        node = self.net.get(name)
        # every port hands packets straight to the peer namespace's ingress
        # (bpf_redirect_peer); a host port falls back to bpf_redirect while the host runs
        # an XDP program, which only sees packets that arrive through the veth
        ports = {p.number: (p.intf, True) for p in self.topology.ports(name)}
        if spec.target == "ebpf":
            sw = EbpfSwitch(name, node.netns_path, ports, self.compiler, self.bpf,
                            self.tag.pin_dir)
            self.switches[name] = sw
            sw.boot(self.infra)
        elif spec.target == "bridge":
            from ..targets.bridge import BridgeSwitch
            sw = BridgeSwitch(name, node, ports)
            self.switches[name] = sw
            sw.boot()
        elif spec.target == "bmv2" and spec.p4 is not None:
            from ..compiler.p4_user import save
            from ..targets.bmv2_p4 import P4ProgramSwitch
            sw = P4ProgramSwitch(name, node, ports, self.tag.dir)
            self.switches[name] = sw
            plan = self.p4[name]
            sw.boot_p4(save(plan.build, os.path.join(self.tag.dir, "p4"), plan.runtime),
                       plan.runtime.entries)
        elif spec.target == "bmv2":
            from ..targets.bmv2_switch import Bmv2Switch
            sw = Bmv2Switch(name, node, ports, self.tag.dir, self._p4_compiled)
            self.switches[name] = sw
            sw.boot(self.infra)
        else:
            raise LabError(f"switch {name}: unknown target {spec.target!r}")

    def _install_routes(self) -> None:
        hosts = {h.ip: h for h in self.topology.hosts}
        address = {ip: int(ipaddress.IPv4Address(ip)) for ip in hosts}
        for sw_name, routes in self.routes.items():
            if self.topology.switch(sw_name).p4 is not None:
                continue        # the user's program owns forwarding: its runtime file
            sw = self.switches[sw_name]
            kind = getattr(sw, "kind", "")
            if kind == "bridge":
                sw.add_routes([(hosts[r.dst_ip].mac, r.port) for r in routes])
            else:
                entries = [(((address[r.dst_ip], r.prefixlen),), "forward", (r.port,))
                           for r in routes]
                if isinstance(sw, EbpfSwitch):
                    sw.insert_many("l3_fwd", entries)
                else:
                    for match, action, args in entries:
                        sw.insert("l3_fwd", match, action, args)
            self.progress.advance(len(routes))

    def _software_checksums(self) -> None:
        """bmv2 reads and writes raw frames (pcap): a checksum left to offload would go out
        wrong, and a TSO/GSO super-frame would not fit. Hosts finish their packets in
        software when a bmv2 switch is in the lab."""
        for node in self.net.hosts + [self.net.get(n) for n, sw in self.switches.items()
                                      if getattr(sw, "kind", "") == "bmv2"]:
            node.cmd("; ".join(f"ethtool -K {i.name} tx off tso off gso off >/dev/null 2>&1"
                               for i in node.intfList() if i.name != "lo"))

    def _host_commands(self) -> None:
        """Hosts' `commands` (coursework topology.json), run unchanged once the network is
        up; one that fails is noted (the coursework tools go on too)."""
        for spec in self.topology.hosts:
            node = self.net.get(spec.name)
            for cmd in spec.commands:
                out = node.cmd(f"{cmd} 2>&1; echo __rc=$?").strip().splitlines()
                rc = out[-1][5:] if out and out[-1].startswith("__rc=") else "?"
                if rc != "0":
                    text = " ".join(out[:-1])[:120]
                    self.notes.append(f"{spec.name}: `{cmd[:60]}` exited {rc}: {text}")

    def _static_neighbours(self) -> None:
        """Permanent ARP entries on every host for every other host (one netlink batch per
        host). Bridges do not flood broadcasts (loops), so ARP is pre-resolved for them.
        And the kernel's neighbour table is shared by all namespaces: resolved entries of
        all hosts together count against one machine-wide limit (gc_thresh3), which a big
        lab overflows ("neighbor table overflow", pings lost); permanent entries do not
        count against it."""
        hosts = [(h.IP(), h.MAC()) for h in self.net.hosts]
        self.progress.step("static neighbours", len(hosts))

        def one(h):
            ns = Netns(h.netns_path)
            try:
                idx = ns.ifindex(h.defaultIntf().name)
                ns.request([add_neighbour(idx, ip, mac) for ip, mac in hosts if ip != h.IP()])
            finally:
                ns.close()
            self.progress.advance()

        # the kernel's share of the work (the send) runs without the GIL: a few threads
        # keep both cores busy
        with ThreadPoolExecutor(max_workers=4) as pool:
            for fut in [pool.submit(one, h) for h in self.net.hosts]:
                fut.result()

    # --- using the lab --------------------------------------------------------------------
    def host(self, name: str) -> LabHost:
        node = self.net.get(name) if self.net else None
        if node is None or not isinstance(node, LabHost):
            raise LabError(f"no host {name!r}")
        return node

    def switch(self, name: str):
        if name not in self.switches:
            raise LabError(f"no switch {name!r} (have {', '.join(self.switches)})")
        return self.switches[name]

    def ping_all(self, timeout_s: float = 1.0, retries: int = 2) -> dict:
        """Every host pings every other (see pingall.py: paced raw ICMP from each host's
        namespace, unanswered pairs retried before they count as lost). Returns counts,
        the failed pairs and the pairs that needed a retry."""
        hosts = [(h.name, h.IP(), h.netns_path) for h in self.net.hosts]
        self.progress.step("ping all pairs", len(hosts) * (len(hosts) - 1))
        result = ping_all(hosts, timeout_s, retries, progress=self.progress).as_dict()
        self.progress.end()
        return result

    def capture(self, switch: str, port: int | None = None) -> list[str]:
        """Capture a switch's ports (or one) to pcap files in the run folder; kept under
        keep_dir/pcap when the lab stops (lab/capture.py)."""
        from .capture import PortCapture
        if self._capture is None:
            self._capture = PortCapture(self.fabric(), self.tag.env())
        return self._capture.start(switch, port)

    def captures(self) -> dict[str, str]:
        """Running captures: SWITCH-pPORT -> pcap file."""
        return self._capture.running() if self._capture is not None else {}

    def fabric(self) -> Fabric:
        """What a controller needs to drive this network (also written to the run folder
        as fabric.json, for a controller in another process)."""
        hosts = {}
        for h in self.topology.hosts:
            sw, port = self.topology.host_link(h.name)
            node = self.net.get(h.name)
            hosts[h.name] = HostDesc(h.name, node.netns_path, node.defaultIntf().name, h.ip,
                                     h.mac, sw, port)
        switches = {}
        for spec in self.topology.switches:
            sw = self.switches[spec.name]
            node = self.net.get(spec.name)
            ports = {p.number: (p.intf, True) for p in self.topology.ports(spec.name)}
            peers = {p.number: p.peer_node for p in self.topology.ports(spec.name)}
            extra = sw.descriptor()
            switches[spec.name] = SwitchDesc(spec.name, spec.target, node.netns_path, ports,
                                             peers=peers, **extra)
        routes = {sw: [[r.dst_ip, r.prefixlen, r.port] for r in rs]
                  for sw, rs in self.routes.items()}
        return Fabric(self.tag.run, self.tag.dir, self.tag.pin_dir, self.topology.source or "",
                      switches, hosts, routes)

    def release_devices(self) -> None:
        """Hand the devices over: close this process's handles (fds, P4Runtime sessions)
        without stopping anything; a controller adopts them. stop() still removes it all."""
        for sw in self.switches.values():
            sw.release()


def _hang_up(node) -> None:
    """SIGHUP a node's shell (what Mininet's terminate sends) without waiting for it."""
    if node.shell is not None and node.shell.poll() is None:
        os.killpg(node.shell.pid, signal.SIGHUP)


def _quietly(errors: list, fn) -> None:
    try:
        fn()
    except Exception as exc:  # teardown goes on; the first error is kept for the log
        errors.append(exc)


__all__ = ["Lab", "have_bmv2", "FlexNetError"]
