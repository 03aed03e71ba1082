"""The running lab: realises a Topology with Mininet and the lab's targets, and owns every
kernel object it creates until stop()."""
from __future__ import annotations

import ipaddress
import os
import shutil
import threading
import time

from mininet.link import Link, TCLink
from mininet.net import Mininet

from ..compiler.ebpf import generate, root_source
from ..errors import EnvironmentMissing, FlexNetError, LabError
from ..program.library import infrastructure
from ..program.model import Program
from ..targets.bcc_compile import Compiler
from ..targets.bpf_syscall import Bpf
from ..targets.ebpf_switch import EbpfSwitch
from ..topology.model import Topology, resolve_auto
from ..topology.routes import compute_routes
from .fabric import Fabric, HostDesc, SwitchDesc
from .nodes import LabHost, LabSwitch
from .clean import release_bpffs, remove_namespace
from .runstate import RunTag, ensure_bpffs


# "auto" switches become bmv2 where simple_switch_grpc is installed (topology.resolve_auto)
BMV2_TARGET_AVAILABLE = True


def have_bmv2() -> bool:
    """Whether `auto` switches become bmv2 here."""
    return BMV2_TARGET_AVAILABLE and shutil.which("simple_switch_grpc") is not None


class Lab:
    """A live network of the topology's hosts and switches.

    Use as a context manager, or call start() and stop(); stop() runs on every exit path
    of start() itself, so a failed bring-up leaves nothing behind."""

    def __init__(self, topology: Topology, base: str | None = None, switch_kind: str | None = None,
                 p4: dict | None = None):
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
        try:
            ensure_bpffs(self.tag)
            compiled = self._precompile()
            self._build_mininet()
            compiled.join()
            for name in self.topology_switch_names():
                self._start_switch(name)
            self._install_routes()
            if any(s.target == "bridge" for s in self.topology.switches):
                self._static_neighbours()
            if any(s.target == "bmv2" for s in self.topology.switches):
                self._software_checksums()
            self._host_commands()
        except BaseException:
            self.stop()
            raise
        self.bringup_s = time.perf_counter() - t0
        self.fabric().save()
        if self.topology.capture:
            for name in self.topology_switch_names():
                self.capture(name)
        self.tag.write_state(pid=os.getpid(), topology=self.topology.name,
                             source=self.topology.source, status="up", started=time.time(),
                             namespaces=self._netns, bringup_s=self.bringup_s)
        return self

    def stop(self) -> None:
        """Tear down everything this run created; safe to call more than once."""
        if os.getpid() != self._owner:
            return
        errors = []
        if self._capture is not None:
            _quietly(errors, self._capture.stop)
            _quietly(errors, lambda: self._capture.keep(os.path.join(self.keep_dir, "pcap")))
            self._capture = None
        for sw in list(self.switches.values()):
            _quietly(errors, sw.close)
        self.switches.clear()
        if self.net is not None:
            for node in self.net.hosts + self.net.switches:
                _quietly(errors, node.terminate)
            self.net = None
        for ns in self._netns:
            remove_namespace(ns)
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
        topo = self.topology
        net = Mininet(topo=None, build=False, controller=None, autoSetMacs=False,
                      autoStaticArp=False, waitConnected=False)
        self.net = net
        for h in topo.hosts:
            net.addHost(h.name, cls=LabHost, ip=f"{h.ip}/{h.prefixlen}", mac=h.mac,
                        run_tag=self.tag, intf_name=topo.host_intf)
        for i, s in enumerate(topo.switches, start=1):
            net.addSwitch(s.name, cls=LabSwitch, dpid=f"{i:016x}", run_tag=self.tag)
        for link in topo.links:
            pa, pb = topo.port_between(link.a, link.b), topo.port_between(link.b, link.a)
            cls, params = (TCLink, {"bw": link.bw}) if link.bw else (Link, {})
            net.addLink(link.a, link.b, port1=pa.number, port2=pb.number, intfName1=pa.intf,
                        intfName2=pb.intf, cls=cls, **params)
        for node in net.hosts + net.switches:
            self._netns.append(node.name_namespace())
        net.build()
        net.start()

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
        for sw_name, routes in self.routes.items():
            if self.topology.switch(sw_name).p4 is not None:
                continue        # the user's program owns forwarding: its runtime file
            sw = self.switches[sw_name]
            for r in routes:
                kind = getattr(sw, "kind", "")
                if kind == "bridge":
                    sw.add_route(hosts[r.dst_ip].mac, r.port)
                else:
                    sw.insert("l3_fwd", ((int(ipaddress.IPv4Address(r.dst_ip)), r.prefixlen),),
                              "forward", (r.port,))

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
        """Bridges do not flood broadcasts (loops), so ARP is pre-resolved for them."""
        for h in self.net.hosts:
            h.cmd("; ".join(f"ip neigh replace {o.IP()} lladdr {o.MAC()} dev {h.defaultIntf()}"
                            for o in self.net.hosts if o is not h))

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

    def ping_all(self, timeout_s: int = 1) -> dict:
        """Every host pings every other once (all hosts in parallel). Returns counts and
        the failed pairs."""
        hosts = self.net.hosts
        for h in hosts:
            targets = " ".join(o.IP() for o in hosts if o is not h)
            h.sendCmd(f"for ip in {targets}; do ping -c1 -W{timeout_s} -q $ip >/dev/null 2>&1"
                      " && echo ok $ip || echo fail $ip; done")
        sent = received = 0
        failed = []
        for h in hosts:
            for line in h.waitOutput().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] in ("ok", "fail"):
                    sent += 1
                    if parts[0] == "ok":
                        received += 1
                    else:
                        failed.append((h.name, parts[1]))
        loss = 100.0 * (sent - received) / sent if sent else 100.0
        return {"sent": sent, "received": received, "loss_pct": loss, "failed": failed}

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


def _quietly(errors: list, fn) -> None:
    try:
        fn()
    except Exception as exc:  # teardown goes on; the first error is kept for the log
        errors.append(exc)


__all__ = ["Lab", "have_bmv2", "FlexNetError"]
