"""Traffic with iperf3 (JSON output): UDP at a fixed rate counts lost datagrams, TCP counts
retransmits; both report per 0.1 s interval so loss can be placed in time."""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field

from ..errors import LabError

INTERVAL_S = 0.1
RECEIVER_PRIORITY = 1      # SCHED_FIFO, the lowest real-time priority (see Flow.start_server)


@dataclass(frozen=True)
class FlowSpec:
    name: str
    src: str
    dst: str
    proto: str = "udp"             # udp | tcp
    rate_bps: int = 100_000_000    # udp only
    duration_s: float = 10.0
    port: int = 5201
    length: int = 1200             # udp datagram payload bytes


@dataclass
class Interval:
    start: float                   # seconds since the traffic start
    end: float
    bps: float
    packets: int = 0
    lost: int = 0
    retransmits: int = 0


@dataclass
class FlowResult:
    spec: FlowSpec
    intervals: list[Interval] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    lost: int = 0
    retransmits: int = 0
    bps: float = 0.0
    error: str | None = None
    tail_lost: int = 0      # sent but never read, after the server's last datagram
    receiver_rt: bool = False   # the UDP server ran at real-time priority

    @property
    def gap_lost(self) -> int:
        """Loss the receiver saw as sequence gaps (placed in time by the intervals)."""
        return self.lost - self.tail_lost

    def to_json(self) -> dict:
        return {"name": self.spec.name, "src": self.spec.src, "dst": self.spec.dst,
                "proto": self.spec.proto, "sent": self.sent, "received": self.received,
                "lost": self.lost, "tail_lost": self.tail_lost,
                "receiver_rt": self.receiver_rt, "retransmits": self.retransmits,
                "mbps": round(self.bps / 1e6, 2), "error": self.error,
                "intervals": [[round(i.start, 2), round(i.end, 2), round(i.bps / 1e6, 2),
                               i.packets, i.lost, i.retransmits] for i in self.intervals]}


class Flow:
    """One iperf3 flow between two lab hosts. rt_receiver: a UDP flow's server runs at
    real-time priority (see start_server); False only to measure what that changes."""

    def __init__(self, lab, spec: FlowSpec, rt_receiver: bool = True):
        self.lab, self.spec = lab, spec
        self.rt_receiver = rt_receiver and spec.proto == "udp"
        self._server = self._client = None
        self._rt = False

    def start_server(self) -> None:
        dst = self.lab.host(self.spec.dst)
        # JSON with 0.1 s intervals: the client embeds it (--get-server-output), which is
        # where UDP loss per interval comes from
        self._server = dst.popen(["iperf3", "-s", "-1", "-J", "-i", str(INTERVAL_S), "-p",
                                  str(self.spec.port)])
        if self.rt_receiver:
            # iperf3 (3.12) closes its UDP socket the moment the client's TEST_END arrives
            # on the control connection: datagrams still queued in the socket then are
            # never counted and look lost at the end of the flow, though they arrived. They
            # are queued only when the server lags, other work on the shared cores holding
            # it off for a few ms. At the lowest real-time priority it reads each datagram
            # as it arrives; a UDP flow has a fixed rate, so it takes CPU in proportion
            # (TCP servers read as fast as they can and stay at normal priority).
            try:
                os.sched_setscheduler(self._server.pid, os.SCHED_FIFO,
                                      os.sched_param(RECEIVER_PRIORITY))
                self._rt = True
            except OSError:   # not allowed (no CAP_SYS_NICE): the tail may come back
                self._rt = False

    def wait_server(self, timeout_s: float = 5.0) -> None:
        dst = self.lab.host(self.spec.dst)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if f":{self.spec.port} " in dst.cmd(f"ss -ltnH sport = :{self.spec.port}"):
                return
            time.sleep(0.02)
        raise LabError(f"flow {self.spec.name}: iperf3 server on {self.spec.dst} did not start")

    def start_client(self) -> None:
        s = self.spec
        src, dst = self.lab.host(s.src), self.lab.host(s.dst)
        cmd = ["iperf3", "-c", dst.IP(), "-p", str(s.port), "-t", str(s.duration_s), "-J",
               "-i", str(INTERVAL_S), "--get-server-output"]
        if s.proto == "udp":
            # a 4 MB socket buffer: without it the receiver drops on its own (FACTS)
            cmd += ["-u", "-b", str(s.rate_bps), "-l", str(s.length), "-w", "4M"]
        elif s.rate_bps:
            cmd += ["-b", str(s.rate_bps)]  # a TCP flow that leaves the CPUs some room
        self._client = src.popen(cmd)

    def result(self, timeout_s: float | None = None) -> FlowResult:
        timeout = timeout_s if timeout_s is not None else self.spec.duration_s + 6
        try:
            out, err = self._client.communicate(timeout=timeout)
        except Exception:
            return self._interrupted()
        finally:
            self._reap_server()
        res = parse_iperf(self.spec, out.decode(errors="replace") if isinstance(out, bytes)
                          else out)
        res.receiver_rt = self._rt
        return res

    def _interrupted(self) -> FlowResult:
        """The client hangs when its control connection is cut (a black hole on the path):
        SIGINT makes both ends print what they counted, so the verdict still sees when
        the flow stopped getting through."""
        texts = []
        for p in (self._client, self._server):
            text = ""
            if p is not None:
                try:
                    p.send_signal(signal.SIGINT)
                    text, _ = p.communicate(timeout=3)
                except Exception:   # it does not answer: nothing to read from it
                    p.kill()
                    p.wait()
            texts.append(text.decode(errors="replace") if isinstance(text, bytes) else text or "")
        try:
            data = json.loads(texts[0])
            if not data.get("server_output_json"):
                data["server_output_json"] = json.loads(texts[1])
            res = parse_iperf(self.spec, json.dumps(data))
        except ValueError:
            res = FlowResult(self.spec)
        res.error = "iperf3 client timed out (its control connection was cut)"
        res.receiver_rt = self._rt
        return res

    def stop(self) -> None:
        for p in (self._client, self._server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

    def _reap_server(self) -> None:
        if self._server is not None:
            try:
                self._server.wait(timeout=3)
            except Exception:
                self._server.kill()
                self._server.wait()


def parse_iperf(spec: FlowSpec, text: str) -> FlowResult:
    """FlowResult from iperf3 client JSON (with the server's output embedded); interval
    times are seconds since the flow started, as every flow starts with the traffic."""
    res = FlowResult(spec)
    try:
        data = json.loads(text)
    except ValueError:
        res.error = f"iperf3 printed no JSON: {text[:200]!r}"
        return res
    if data.get("error"):
        res.error = data["error"]
    end = data.get("end", {})
    server = data.get("server_output_json") or {}
    if spec.proto == "udp":
        s_end = (server.get("end") or {}).get("sum") or {}
        c_end = end.get("sum") or {}
        res.sent = int(c_end.get("packets", 0))
        res.lost = int(s_end.get("lost_packets", 0))
        total = int(s_end.get("packets", 0))
        res.received = total - res.lost
        # the server only sees gaps before its last datagram: loss at the end of a flow
        # (or of a whole flow) shows only as sent minus received. iperf3's server also stops
        # reading at the end of the test (Flow.start_server), so datagrams can be left
        # unread there: the tail is kept apart from the gaps
        res.tail_lost = max(0, res.sent - res.received - res.lost)
        res.lost += res.tail_lost
        res.bps = float(c_end.get("bits_per_second", 0.0)) * (res.received / total if total else 0)
        for it in server.get("intervals", []):
            s = it.get("sum", {})
            res.intervals.append(Interval(s.get("start", 0), s.get("end", 0),
                                          s.get("bits_per_second", 0.0),
                                          int(s.get("packets", 0)),
                                          int(s.get("lost_packets", 0))))
    else:
        sent = end.get("sum_sent", {})
        recv = end.get("sum_received", {})
        res.retransmits = int(sent.get("retransmits", 0))
        res.bps = float(recv.get("bits_per_second", 0.0))
        res.sent = int(sent.get("bytes", 0))
        res.received = int(recv.get("bytes", 0))
        for it in data.get("intervals", []):
            s = it.get("sum", {})
            res.intervals.append(Interval(s.get("start", 0), s.get("end", 0),
                                          s.get("bits_per_second", 0.0),
                                          retransmits=int(s.get("retransmits", 0))))
    return res


class Traffic:
    """Several flows started together; stop() on every exit path kills what is left."""

    def __init__(self, lab, specs: list[FlowSpec], rt_receiver: bool = True):
        ports = {}
        self.flows = []
        for i, spec in enumerate(specs):
            port = spec.port + i if (spec.dst, spec.port) in ports else spec.port
            ports[(spec.dst, port)] = spec.name
            self.flows.append(Flow(lab, FlowSpec(**{**spec.__dict__, "port": port}),
                                   rt_receiver))
        self.t0 = 0.0

    def start(self) -> float:
        for f in self.flows:
            f.start_server()
        for f in self.flows:
            f.wait_server()
        self.t0 = time.time()
        for f in self.flows:
            f.start_client()
        return self.t0

    def results(self) -> list[FlowResult]:
        return [f.result() for f in self.flows]

    def stop(self) -> None:
        for f in self.flows:
            f.stop()


def measure_flow(lab, spec: FlowSpec, during=None, settle_s: float = 0.5) -> FlowResult:
    """Run one flow to its end; `during()` runs once the flow is steady (after settle_s)."""
    traffic = Traffic(lab, [spec])
    try:
        traffic.start()
        time.sleep(settle_s)
        if during:
            during()
        return traffic.results()[0]
    finally:
        traffic.stop()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]
