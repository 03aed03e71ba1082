"""The lab's own programs, written in the model: the switches' infrastructure program and
the host functions. Targets compile these; nothing in ebpf/ or p4src/ is written by hand."""
from __future__ import annotations

from .headers import (ARP, ETHERNET, ETHERTYPE_ARP, ETHERTYPE_IPV4, IPPROTO_TCP, IPPROTO_UDP,
                      IPV4, TCP, UDP)
from .model import (Action, Field, Key, Map, Op, ParserState, Program, Stmt, Table,
                    Transition)

FIVE_TUPLE = ("ipv4.src", "ipv4.dst", "meta.ip_proto", "meta.l4_sport", "meta.l4_dport")


def _l3l4_parser(with_arp: bool) -> tuple[ParserState, ...]:
    eth_cases = [((ETHERTYPE_IPV4,), "ipv4")] + ([((ETHERTYPE_ARP,), "arp")] if with_arp else [])
    states = [
        ParserState("start", "ethernet",
                    transition=Transition(("ethernet.ethertype",), tuple(eth_cases))),
        ParserState("ipv4", "ipv4",
                    sets=(("meta.l3_dst", "ipv4.dst"), ("meta.ip_proto", "ipv4.protocol")),
                    transition=Transition(("ipv4.ihl", "ipv4.protocol"),
                                          (((5, IPPROTO_TCP), "tcp"), ((5, IPPROTO_UDP), "udp")))),
        ParserState("tcp", "tcp", sets=(("meta.l4_sport", "tcp.sport"),
                                        ("meta.l4_dport", "tcp.dport"))),
        ParserState("udp", "udp", sets=(("meta.l4_sport", "udp.sport"),
                                        ("meta.l4_dport", "udp.dport"))),
    ]
    if with_arp:
        states.insert(2, ParserState("arp", "arp", sets=(("meta.l3_dst", "arp.tpa"),)))
    return tuple(states)


_META = (Field("l3_dst", 32), Field("ip_proto", 8), Field("l4_sport", 16), Field("l4_dport", 16))
_HEADERS = (ETHERNET, ARP, IPV4, TCP, UDP)
FORWARD = Action("forward", (("port", 16),), (Op("forward", ("$port",)),))
DROP = Action("drop", (), (Op("drop"),))
NOP = Action("nop", (), (Op("nop"),))
PORTS = 32


def infrastructure() -> Program:
    """The switches' base program: parse Ethernet/ARP/IPv4/L4, forward by destination
    address (ARP by its target address, so no flooding is needed), count per port.
    port_tx index 0 counts the packets the switch dropped."""
    return Program(
        name="infra",
        headers=_HEADERS,
        metadata=_META,
        parser=_l3l4_parser(with_arp=True),
        maps=(Map("port_rx", "counter", PORTS), Map("port_tx", "counter", PORTS)),
        actions=(FORWARD, DROP),
        tables=(Table("l3_fwd", (Key("meta.l3_dst", "lpm"),), ("forward", "drop"), "drop",
                      size=1024),),
        control=(Stmt(ops=(Op("count", ("port_rx", "std.ingress_port")),)),
                 Stmt(table="l3_fwd"),
                 Stmt(ops=(Op("count", ("port_tx", "std.egress_port")),))),
    )


def _host(name: str, maps: tuple[Map, ...], ops: tuple[Op, ...],
          tables: tuple[Table, ...] = (), actions: tuple[Action, ...] = ()) -> Program:
    """A host function: counts every packet in `pkts` (index 0) and then does its job."""
    pkts = Map("pkts", "counter", 1)
    stmts = [Stmt(ops=(Op("count", ("pkts", 0)),))]
    stmts += [Stmt(table=t.name) for t in tables]
    if ops:
        stmts.append(Stmt(ops=ops))
    return Program(name=name, headers=(ETHERNET, IPV4, TCP, UDP), metadata=_META,
                   parser=_l3l4_parser(with_arp=False), maps=(pkts,) + maps,
                   actions=actions, tables=tables, control=tuple(stmts))


def flow_counter() -> Program:
    """Packets and bytes per 5-tuple flow."""
    return _host("flow_counter", (Map("flows", "hash", 4096, key_bits=5 * 64),),
                 (Op("map_add", ("flows", FIVE_TUPLE)),))


def acl() -> Program:
    """Drops by 5-tuple with masks (ternary), first matching rule by priority wins."""
    keys = tuple(Key(f, "ternary") for f in FIVE_TUPLE)
    return _host("acl", (), (), tables=(Table("acl", keys, ("drop", "nop"), "nop", size=64),),
                 actions=(DROP, NOP))


def rate_limiter(rate_bytes: int = 12_500_000, burst: int = 1_500_000) -> Program:
    """A token bucket per source address (default 100 Mbit/s); over-rate packets drop."""
    return _host("rate_limiter",
                 (Map("buckets", "meter", 1024, key_bits=32, rate=rate_bytes, burst=burst),),
                 (Op("rate_limit", ("buckets", ("ipv4.src",))),))


def count_min() -> Program:
    """A count-min sketch of flow sizes (4 rows x 1024 columns, packets)."""
    return _host("count_min", (Map("cms", "sketch", 1024, key_bits=5 * 64, rows=4),),
                 (Op("sketch_add", ("cms", FIVE_TUPLE)),))


def vlan_tag(vid: int = 100) -> Program:
    """Pushes an 802.1Q tag with `vid` (tc egress)."""
    return _host("vlan_tag", (), (Op("push_vlan", (vid,)),))


def vlan_untag() -> Program:
    """Pops an 802.1Q tag (tc ingress)."""
    return _host("vlan_untag", (), (Op("pop_vlan"),))


HOST_PROGRAMS = {
    "flow_counter": flow_counter,
    "acl": acl,
    "rate_limiter": rate_limiter,
    "count_min": count_min,
    "vlan_tag": vlan_tag,
    "vlan_untag": vlan_untag,
}
