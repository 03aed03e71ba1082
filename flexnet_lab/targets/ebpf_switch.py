"""The embedded default switch: an eBPF datapath on every port of a switch namespace.

Each port runs the same root tc-ingress program; it tail-calls the switch's pipeline, which
was generated from the program model and forwards with bpf_redirect (towards a host, so the
host's own XDP/tc programs see the packet) or bpf_redirect_peer (towards another switch:
straight into that namespace's ingress, skipping a backlog queue per hop).
"""
from __future__ import annotations

from ..program.model import Program
from .bcc_compile import Compiler
from .bpf_syscall import Bpf
from .ebpf_datapath import EbpfDatapath
from .netlink import Netns
from .port_counters import read_port_counters


class EbpfSwitch(EbpfDatapath):
    """Switch target on the eBPF datapath (tc ingress, role switch)."""

    kind = "ebpf"

    def __init__(self, name: str, netns_path: str, ports: dict[int, tuple[str, bool]],
                 compiler: Compiler, bpf: Bpf, pin_dir: str | None):
        super().__init__(name, Netns(netns_path), "tc", "switch", compiler, bpf, pin_dir)
        self.ports = ports

    def boot(self, program: Program) -> None:
        self.start(program, [ifname for ifname, _ in self.ports.values()], self.ports)

    def set_port_mode(self, port: int, peer: bool) -> None:
        """Hand packets out of `port` to the peer's ingress directly (peer=True) or through
        the veth (peer=False: XDP on the peer sees them). One map write, atomic."""
        ifname, _ = self.ports[port]
        self.ports[port] = (ifname, peer)
        self._set_ports(self._running.maps, {port: self.ports[port]})

    def descriptor(self) -> dict:
        """What a controller in another process needs beyond the fabric: nothing (the
        pins hold the rest)."""
        return {}

    def port_counters(self) -> dict[int, dict[str, int]]:
        return read_port_counters(self)

    def close(self) -> None:
        self.stop(detach=False)  # the switch's namespace is deleted right after
        self.netns.close()
