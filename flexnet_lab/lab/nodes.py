"""Mininet node classes of the lab, and the batched bring-up of its nodes and links.

No Open vSwitch: a switch node is a namespace whose ports are driven by a target (the eBPF
datapath, or bmv2). Every node's shell carries the run tag in its environment, so every
process started on it does too, and its namespace is given a name under /run/netns.

Mininet builds a network one shell round trip at a time (several per node and per link);
a lab of hundreds of nodes spends most of its bring-up waiting on them. Here the node shells
start in parallel, the namespaces are named and all veth pairs created by one `ip -batch`
each (every veth made directly inside its namespace, never in the root namespace), and each
namespace is configured (IPv6 off, tags, addresses, links up) by batched netlink from this
process. Mininet's node, link and interface objects are still built, so everything that uses
the lab through Mininet (cmd, popen, IP(), the CLI) works as before.
"""
from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from mininet.link import Intf, Link, TCIntf
from mininet.node import Host, Switch

from ..errors import LabError
from ..targets.netlink import Rtnl, in_namespace, set_link, add_address

# node shells starting at once: most of a shell's start is waiting on exec and the kernel's
# namespace set-up, which overlap well beyond the core count
SHELL_WORKERS = 16


class _Tagged:
    """Mixin: run tag in the shell's environment; a named namespace."""

    def _popen(self, cmd, **params):
        tag = self.params.get("run_tag")
        if tag is not None:
            params.setdefault("env", tag.env())
        if cmd and cmd[0] == "mnexec" and cmd[1].startswith("-") and "c" in cmd[1]:
            # mnexec -c closes every descriptor up to the fd limit one by one (20,000
            # close() calls here, ~7 ms per shell); Python closes the same ones with one
            # close_range() after placing the shell's pty on 0-2
            cmd = [cmd[0], cmd[1].replace("c", "")] + list(cmd[2:])
            params["close_fds"] = True
        return super()._popen(cmd, **params)

    @property
    def netns_name(self) -> str:
        """/run/netns/flexnet-<run>-<node> (named by build_nodes)."""
        return self.params["run_tag"].netns(self.name)

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns_name}"


class LabHost(_Tagged, Host):
    """A host. Its address, MAC, tag and IPv6 off are set by build_nodes (netlink)."""

    def config(self, **_params):
        return {}


class LabSwitch(_Tagged, Switch):
    """A switch namespace. Its forwarding is installed by the lab's target for it."""

    def __init__(self, name, **params):
        params["inNamespace"] = True
        super().__init__(name, **params)

    def start(self, controllers):
        pass  # ports are configured by build_nodes

    def stop(self, deleteIntfs=True):
        super().stop(deleteIntfs=deleteIntfs)

    @staticmethod
    def batchShutdown(switches, run=None):
        return switches

    def connected(self):
        return True


class LabIntf(Intf):
    """An interface configured by build_nodes: records its MAC and address, no shell."""

    def config(self, ip=None, **_params):
        if ip:
            self.ip, self.prefixLen = ip.split("/")[0], int(ip.split("/")[1])
        return {}


class PrebuiltLink(Link):
    """Mininet's view of a veth pair that create_veths already made."""

    def __init__(self, *args, **kwargs):
        kwargs["intf"] = LabIntf  # Mininet.addLink passes its own default
        super().__init__(*args, **kwargs)

    def makeIntfPair(self, *args, **kwargs):
        pass


class PrebuiltTCIntf(TCIntf):
    """A shaped interface: Mininet's tc commands, but no shell round trip for the rest."""

    def config(self, up=None, ip=None, **params):
        result = TCIntf.config(self, up=None, **params)
        if ip:
            self.ip, self.prefixLen = ip.split("/")[0], int(ip.split("/")[1])
        return result


class PrebuiltTCLink(PrebuiltLink):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("cls1", PrebuiltTCIntf)
        kwargs.setdefault("cls2", PrebuiltTCIntf)
        super().__init__(*args, **kwargs)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cls: type
    params: dict


@dataclass(frozen=True)
class VethSpec:
    """One link: both ends' node, interface name, port number and (optional) MAC."""
    a: str
    a_intf: str
    a_port: int
    a_mac: str | None
    b: str
    b_intf: str
    b_port: int
    b_mac: str | None
    bw: float | None = None


def start_nodes(net, specs: list[NodeSpec], on_started=None) -> None:
    """Start the nodes' shells in parallel, then add them to `net` in the given order
    (hosts to net.hosts, switches to net.switches). A node that started is added even when
    another failed, so the caller's teardown finds it; then the first error is raised."""
    def make(spec: NodeSpec):
        node = spec.cls(spec.name, **spec.params)
        if on_started:
            on_started()
        return node

    pool = ThreadPoolExecutor(max_workers=SHELL_WORKERS)
    futures = [pool.submit(make, spec) for spec in specs]
    error = None
    try:
        wait(futures)
    finally:
        # also on Ctrl-C: shells being started finish, the rest never start, and every
        # shell that runs is handed to `net`, where the caller's teardown finds it (its
        # namespace has no name yet, so nothing else would)
        pool.shutdown(wait=True, cancel_futures=True)
        for spec, fut in zip(specs, futures):
            if fut.cancelled():
                continue
            if fut.exception() is not None:
                error = error or fut.exception()
                continue
            node = fut.result()
            (net.switches if isinstance(node, Switch) else net.hosts).append(node)
            net.nameToNode[spec.name] = node
    if error is not None:
        raise error


def ip_batch(lines: list[str], what: str) -> None:
    """Run `ip -batch -`; one process for any number of commands."""
    if not lines:
        return
    res = subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n",
                         capture_output=True, text=True)
    if res.returncode != 0:
        detail = (res.stderr.strip().splitlines() or ["failed"])[-1][:200]
        raise LabError(f"{what}: ip -batch: {detail}")


def name_namespaces(nodes) -> None:
    """Bind every node's namespace to /run/netns/<its netns_name> (one ip -batch)."""
    ip_batch([f"netns attach {n.netns_name} {n.pid}" for n in nodes], "naming namespaces")


def create_veths(net, links: list[VethSpec]) -> None:
    """Create every veth pair with both ends directly in their nodes' namespaces (one ip
    -batch), then Mininet's link objects for them."""
    def end(name, intf, mac):
        node = net.get(name)
        return f"name {intf}" + (f" address {mac}" if mac else "") + f" netns {node.netns_name}"

    ip_batch([f"link add {end(l.a, l.a_intf, l.a_mac)} type veth peer "
              f"{end(l.b, l.b_intf, l.b_mac)}" for l in links], "creating links")
    for l in links:
        cls, params = (PrebuiltTCLink, {"bw": l.bw}) if l.bw else (PrebuiltLink, {})
        net.addLink(l.a, l.b, port1=l.a_port, port2=l.b_port, intfName1=l.a_intf,
                    intfName2=l.b_intf, addr1=l.a_mac, addr2=l.b_mac, cls=cls, **params)


def configure_node(node, alias: str, address: tuple[str, int] | None = None) -> None:
    """IPv6 off (keeps the switches' drop counters clean), every interface tagged with the
    run's alias and up, lo up, and the host's address: one netlink batch, from here."""
    intfs = [i for i in node.intfList() if i.name != "lo"]

    def work():
        with open("/proc/sys/net/ipv6/conf/all/disable_ipv6", "w") as fh:
            fh.write("1")
        rtnl = Rtnl()
        try:
            index = rtnl.links()
            missing = [i.name for i in intfs if i.name not in index]
            if missing:
                raise LabError(f"{node.name}: interface {missing[0]} missing")
            reqs = [set_link(index["lo"], up=True, what="lo up")]
            if address and intfs:
                reqs.append(add_address(index[intfs[0].name], *address,
                                        what=f"address of {intfs[0].name}"))
            reqs += [set_link(index[i.name], up=True, alias=alias, what=f"tag and up {i.name}")
                     for i in intfs]
            rtnl.run(reqs)
        finally:
            rtnl.close()

    in_namespace(node.netns_path, work)
    if address and intfs:
        intfs[0].ip, intfs[0].prefixLen = address
