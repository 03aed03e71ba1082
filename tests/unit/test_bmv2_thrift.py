"""bmv2's thrift register calls: the bytes on the wire (thrift binary protocol, multiplexed
service "standard") and the decoding of replies, over a socket pair standing in for the
server. The real server is exercised by tests/bmv2."""
import socket
import struct

import pytest

from flexnet_lab.errors import TargetError
from flexnet_lab.targets.bmv2_thrift import Bmv2Thrift


def _message(kind: int, name: str, seq: int, body: bytes) -> bytes:
    n = name.encode()
    return struct.pack("!Ii", 0x80010000 | kind, len(n)) + n + struct.pack("!i", seq) + body


def _pair():
    a, b = socket.socketpair()
    return Bmv2Thrift("s1", a), b


def test_read_all_request_bytes_and_reply_with_wrapped_u64():
    client, server = _pair()
    values = [0, 5, -1]                      # -1 on the wire is 2^64 - 1 in a bit<64>
    reply_body = (struct.pack("!bhbi", 15, 0, 10, len(values))
                  + b"".join(struct.pack("!q", v) for v in values) + b"\0")
    server.sendall(_message(2, "bm_register_read_all", 1, reply_body))
    got = client.read_registers(["ingress.port_rx_packets"])
    assert got == {"ingress.port_rx_packets": [0, 5, (1 << 64) - 1]}
    sent = server.recv(4096)
    name = b"standard:bm_register_read_all"
    reg = b"ingress.port_rx_packets"
    assert sent == (struct.pack("!Ii", 0x80010001, len(name)) + name + struct.pack("!i", 1)
                    + struct.pack("!bhi", 8, 1, 0)
                    + struct.pack("!bhi", 11, 2, len(reg)) + reg + b"\0")


def test_writes_are_pipelined_and_a_register_error_names_the_slot():
    client, server = _pair()
    ok = _message(2, "bm_register_write", 1, b"\0")
    invalid_index = struct.pack("!bh", 12, 1) + struct.pack("!bhi", 8, 1, 2) + b"\0" + b"\0"
    server.sendall(ok + _message(2, "bm_register_write", 2, invalid_index))
    with pytest.raises(TargetError) as err:
        client.write_registers({"ingress.r": {3: 1, 99: 2}})
    assert "ingress.r[99]" in str(err.value) and "invalid index" in str(err.value)
    assert server.recv(4096).count(b"standard:bm_register_write") == 2


def test_an_application_exception_and_a_closed_server_are_target_errors():
    client, server = _pair()
    body = struct.pack("!bhi", 11, 1, 7) + b"no such" + struct.pack("!bhi", 8, 2, 1) + b"\0"
    server.sendall(_message(3, "bm_register_read_all", 1, body))
    with pytest.raises(TargetError, match="no such"):
        client.read_registers(["x"])
    server.close()
    with pytest.raises(TargetError, match="thrift"):
        client.read_registers(["x"])


def test_egress_queue_depth_goes_to_the_simple_switch_service():
    client, server = _pair()
    server.sendall(_message(2, "simple_switch:set_all_egress_queue_depths", 1,
                            struct.pack("!bhi", 8, 0, 0) + b"\0"))
    client.set_egress_queue_depth(1024)
    name = b"simple_switch:set_all_egress_queue_depths"
    assert server.recv(4096) == (struct.pack("!Ii", 0x80010001, len(name)) + name
                                 + struct.pack("!i", 1) + struct.pack("!bhi", 8, 1, 1024)
                                 + b"\0")
