"""Per-port counters of a switch, read from its program's port_rx/port_tx maps (the same
maps on every switch target)."""
from __future__ import annotations


def read_port_counters(switch) -> dict[int, dict[str, int]]:
    """Per port: packets/bytes received and sent; port 0 of tx = dropped."""
    rx, tx = switch.read_map("port_rx"), switch.read_map("port_tx")
    out = {p: {"rx_packets": rx[p][0], "rx_bytes": rx[p][1], "tx_packets": tx[p][0],
               "tx_bytes": tx[p][1]} for p in sorted(switch.ports)}
    out[0] = {"dropped_packets": tx[0][0], "dropped_bytes": tx[0][1]}
    return out
