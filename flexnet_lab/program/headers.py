"""The header library: the protocols every program may use by name."""
from __future__ import annotations

from .model import Field, Header


def _h(name: str, *fields: tuple[str, int]) -> Header:
    return Header(name, tuple(Field(n, b) for n, b in fields))


ETHERNET = _h("ethernet", ("dst", 48), ("src", 48), ("ethertype", 16))
VLAN = _h("vlan", ("pcp", 3), ("dei", 1), ("vid", 12), ("ethertype", 16))
ARP = _h("arp", ("htype", 16), ("ptype", 16), ("hlen", 8), ("plen", 8), ("oper", 16),
         ("sha", 48), ("spa", 32), ("tha", 48), ("tpa", 32))
IPV4 = _h("ipv4", ("version", 4), ("ihl", 4), ("diffserv", 8), ("total_len", 16),
          ("identification", 16), ("flags", 3), ("frag_offset", 13), ("ttl", 8),
          ("protocol", 8), ("checksum", 16), ("src", 32), ("dst", 32))
TCP = _h("tcp", ("sport", 16), ("dport", 16), ("seq", 32), ("ack", 32), ("data_offset", 4),
         ("res", 4), ("flags", 8), ("window", 16), ("checksum", 16), ("urgent", 16))
UDP = _h("udp", ("sport", 16), ("dport", 16), ("length", 16), ("checksum", 16))
# A small in-band telemetry header carried over UDP (the lab's example of a new header).
TELEMETRY = _h("telemetry", ("magic", 16), ("hop_count", 8), ("flags", 8), ("path_id", 32))

# A path shim between Ethernet and IPv4 (ethertype 0x88B5, IEEE local experimental): a packet
# class the base program does not parse, so a switch drops it until a parser state is added.
SHIM = _h("shim", ("path_id", 16), ("hop_count", 8), ("flags", 8), ("next_type", 16))

LIBRARY: dict[str, Header] = {h.name: h for h in (ETHERNET, VLAN, ARP, IPV4, TCP, UDP, TELEMETRY,
                                                  SHIM)}

ETHERTYPE_IPV4, ETHERTYPE_ARP, ETHERTYPE_VLAN = 0x0800, 0x0806, 0x8100
IPPROTO_TCP, IPPROTO_UDP = 6, 17
TELEMETRY_UDP_PORT = 5555
ETHERTYPE_SHIM = 0x88B5
