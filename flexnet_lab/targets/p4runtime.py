"""P4Runtime transport: one client per switch, no module-level state, so one controller
drives many switches. gRPC errors become TargetError naming the switch (and table/entry).

Uses the p4runtime protobufs (PyPI `p4runtime`, which imports with protobuf 3.20.x) and
grpcio. The switch listens on a unix socket in the run's folder: reachable from the
controller's namespace while the switch's TCP ports stay inside its own namespace.
"""
from __future__ import annotations

import queue
import threading

from ..errors import EntryError, EnvironmentMissing, TargetError


def _protos():
    try:
        import grpc
        from p4.config.v1 import p4info_pb2
        from p4.v1 import p4runtime_pb2, p4runtime_pb2_grpc
    except ImportError as exc:
        raise EnvironmentMissing("P4Runtime needs `pip install p4runtime==1.4.1 "
                                 "protobuf==3.20.3 googleapis-common-protos==1.56.4 grpcio` "
                                 f"({exc})") from exc
    return grpc, p4info_pb2, p4runtime_pb2, p4runtime_pb2_grpc


class P4RuntimeClient:
    """A primary-controller session with one P4Runtime device."""

    def __init__(self, name: str, address: str, device_id: int = 0, election_id: int = 1,
                 timeout_s: float = 10.0):
        grpc, self._info_pb, self._pb, pb_grpc = _protos()
        self._grpc = grpc
        self.name, self.device_id = name, device_id
        self.election = self._pb.Uint128(high=0, low=election_id)
        self._channel = grpc.insecure_channel(address)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError as exc:
            raise TargetError(name, f"no P4Runtime server at {address} after {timeout_s} s") from exc
        self._stub = pb_grpc.P4RuntimeStub(self._channel)
        # SetForwardingPipelineConfig and Write taking encoded requests (set_pipeline, write)
        self._set_encoded = self._channel.unary_unary(
            "/p4.v1.P4Runtime/SetForwardingPipelineConfig",
            response_deserializer=self._pb.SetForwardingPipelineConfigResponse.FromString)
        self._write_encoded = self._channel.unary_unary(
            "/p4.v1.P4Runtime/Write", response_deserializer=self._pb.WriteResponse.FromString)
        self._requests: queue.Queue = queue.Queue()
        self._stream = self._stub.StreamChannel(iter(self._requests.get, None))
        self._arbitrate(timeout_s)
        self.p4info = None

    def _arbitrate(self, timeout_s: float) -> None:
        req = self._pb.StreamMessageRequest()
        req.arbitration.device_id = self.device_id
        req.arbitration.election_id.CopyFrom(self.election)
        self._requests.put(req)
        reply: list = []
        done = threading.Event()

        def first():
            try:
                reply.append(next(self._stream))
            except Exception as exc:  # surfaced below
                reply.append(exc)
            done.set()
        threading.Thread(target=first, daemon=True).start()
        if not done.wait(timeout_s) or isinstance(reply[0], Exception):
            raise TargetError(self.name, f"arbitration failed: {reply[0] if reply else 'timeout'}")
        status = reply[0].arbitration.status
        if status.code != 0:
            raise TargetError(self.name, f"not the primary controller: {status.message}")

    def _call(self, what: str, fn, request):
        try:
            return fn(request)
        except self._grpc.RpcError as exc:
            raise TargetError(self.name, f"{what}: {exc.code().name}: {exc.details()}") from exc

    # --- pipeline -------------------------------------------------------------------------
    def parse_p4info(self, p4info_text: str):
        """A P4Info message from its text form (done once per compiled program)."""
        from google.protobuf import text_format
        return text_format.Parse(p4info_text, self._info_pb.P4Info())

    def pipeline_config(self, p4info, device_json: bytes) -> bytes:
        """A pipeline's part of a SetForwardingPipelineConfig request, encoded: the same for
        every switch and every load of that pipeline, so callers encode it once (protobuf
        here is the pure-Python one: copying and encoding a P4Info and a 200 KB pipeline
        took 1.5 ms of the controller's CPU at every load)."""
        req = self._pb.SetForwardingPipelineConfigRequest()
        req.config.p4info.CopyFrom(p4info)
        req.config.p4_device_config = device_json
        return req.SerializeToString()

    def set_pipeline(self, p4info, device_json: bytes | None,
                     action: str = "VERIFY_AND_COMMIT", config: bytes | None = None) -> None:
        """SetForwardingPipelineConfig. p4info: a P4Info message or its text; COMMIT takes
        neither (it commits the pipeline saved by VERIFY_AND_SAVE). config: what
        pipeline_config(p4info, device_json) returned, used instead of encoding them."""
        req = self._pb.SetForwardingPipelineConfigRequest(device_id=self.device_id,
                                                          election_id=self.election)
        req.action = getattr(self._pb.SetForwardingPipelineConfigRequest, action)
        info = self.parse_p4info(p4info) if isinstance(p4info, str) else p4info
        if config is not None:
            # encoded messages concatenate as a merge: these fields, then the pipeline's
            self._call(f"pipeline {action}", self._set_encoded,
                       req.SerializeToString() + config)
        else:
            if info is not None:
                req.config.p4info.CopyFrom(info)
                req.config.p4_device_config = device_json
            self._call(f"pipeline {action}", self._stub.SetForwardingPipelineConfig, req)
        if info is not None:
            self.p4info = info

    def get_p4info(self):
        """The P4Info of the running pipeline (GetForwardingPipelineConfig)."""
        req = self._pb.GetForwardingPipelineConfigRequest(device_id=self.device_id)
        req.response_type = self._pb.GetForwardingPipelineConfigRequest.P4INFO_AND_COOKIE
        return self._call("get pipeline", self._stub.GetForwardingPipelineConfig, req).config.p4info

    # --- tables ---------------------------------------------------------------------------
    def _table(self, name: str, p4info=None):
        for t in (p4info or self.p4info).tables:
            if name in (t.preamble.name, t.preamble.alias):
                return t
        raise TargetError(self.name, f"no table {name!r} in the switch's P4Info")

    def _action(self, name: str, p4info=None):
        for a in (p4info or self.p4info).actions:
            if name in (a.preamble.name, a.preamble.alias):
                return a
        raise TargetError(self.name, f"no action {name!r} in the switch's P4Info")

    def table_entry(self, table: str, match: tuple, action: str | None = None,
                    args: tuple = (), priority: int = 0, p4info=None):
        """A TableEntry message; match values per key: int (exact), (value, prefixlen) (lpm),
        (value, mask) (ternary). Without an action (a DELETE names only the match).
        p4info: build it for that pipeline instead of the running one."""
        t = self._table(table, p4info)
        entry = self._pb.TableEntry(table_id=t.preamble.id)
        for mf, value in zip(t.match_fields, match):
            width = (mf.bitwidth + 7) // 8
            fm = entry.match.add(field_id=mf.id)
            kind = mf.match_type
            if kind == self._info_pb.MatchField.LPM:
                fm.lpm.value = int(value[0]).to_bytes(width, "big")
                fm.lpm.prefix_len = int(value[1])
            elif kind == self._info_pb.MatchField.TERNARY:
                fm.ternary.value = int(value[0]).to_bytes(width, "big")
                fm.ternary.mask = int(value[1]).to_bytes(width, "big")
            else:
                fm.exact.value = int(value).to_bytes(width, "big")
        if priority:
            entry.priority = priority
        if action is None:
            return entry
        a = self._action(action, p4info)
        entry.action.action.action_id = a.preamble.id
        for p, v in zip(a.params, args):
            entry.action.action.params.add(param_id=p.id,
                                           value=int(v).to_bytes((p.bitwidth + 7) // 8, "big"))
        return entry

    def write(self, updates: list[tuple]) -> None:
        """Apply (INSERT|MODIFY|DELETE, entity message) updates in one Write; an update may
        come as (kind, message, encode_update(kind, message)) already encoded."""
        head = self._pb.WriteRequest(device_id=self.device_id, election_id=self.election)
        # encoded WriteRequests concatenate as a merge: the updates of each are appended
        body = b"".join(u[2] if len(u) > 2 else self.encode_update(u[0], u[1])
                        for u in updates)
        try:
            self._write_encoded(head.SerializeToString() + body)
        except self._grpc.RpcError as exc:
            raise self._write_error(exc, [u[:2] for u in updates]) from exc

    def encode_update(self, kind: str, entry) -> bytes:
        """A WriteRequest holding only this update, encoded (write() joins them): the same
        for every switch, so a caller that writes an entry often keeps it."""
        req = self._pb.WriteRequest()
        u = req.updates.add(type=getattr(self._pb.Update, kind))
        u.entity.table_entry.CopyFrom(entry)
        return req.SerializeToString()

    def _write_error(self, exc, updates: list[tuple[str, object]]) -> TargetError:
        """The first refused update as an EntryError naming its table and entry (P4Runtime
        puts one p4.v1.Error per update in the status details)."""
        statuses = [None] * len(updates)
        try:
            from google.rpc import status_pb2
            for key, value in exc.trailing_metadata() or ():
                if key == "grpc-status-details-bin":
                    st = status_pb2.Status.FromString(value)
                    for i, detail in enumerate(st.details[:len(updates)]):
                        err = self._pb.Error()
                        detail.Unpack(err)
                        statuses[i] = err
        except Exception:  # details are optional: fall back to the overall status
            pass
        for i, (kind, entry) in enumerate(updates):
            err = statuses[i]
            if err is None and len(updates) > 1:
                continue
            if err is not None and err.canonical_code == 0:
                continue
            message = (f"{kind} refused: {err.message or self._grpc.StatusCode(err.canonical_code)}"
                       if err is not None else f"{kind} refused: {exc.code().name}: "
                       f"{exc.details()}")
            return EntryError(self.name, self.table_name(entry.table_id), describe_entry(entry),
                              message)
        return TargetError(self.name, f"write of {len(updates)} updates: {exc.code().name}: "
                                      f"{exc.details()}")

    def table_name(self, table_id: int) -> str:
        for t in (self.p4info.tables if self.p4info else ()):
            if t.preamble.id == table_id:
                return t.preamble.name
        return str(table_id)

    def read_entries(self, table: str | None = None) -> list:
        """Table entries read back from the device (all tables, or one)."""
        return self.finish_read(self.start_read(table))

    def start_read(self, table: str | None = None):
        """The first half of read_entries(): the Read is sent, and the device answers while
        the caller asks another server; finish_read(call) takes the answer."""
        req = self._pb.ReadRequest(device_id=self.device_id)
        ent = req.entities.add()
        ent.table_entry.table_id = self._table(table).preamble.id if table else 0
        try:
            return self._stub.Read(req)
        except self._grpc.RpcError as exc:
            raise TargetError(self.name, f"read: {exc.code().name}: {exc.details()}") from exc

    def finish_read(self, call) -> list:
        out = []
        try:
            for resp in call:
                out += [e.table_entry for e in resp.entities]
        except self._grpc.RpcError as exc:
            raise TargetError(self.name, f"read: {exc.code().name}: {exc.details()}") from exc
        return out

    def close(self) -> None:
        # the arbitration stream is cancelled first: grpc's channel close otherwise waits
        # for it, and can wait forever once a signal interrupted the process meanwhile
        try:
            self._stream.cancel()
        except Exception:  # already ended
            pass
        self._requests.put(None)
        self._channel.close()


def describe_entry(entry) -> str:
    """A table entry's match (and priority) in one readable line."""
    parts = []
    for fm in entry.match:
        kind = fm.WhichOneof("field_match_type")
        m = getattr(fm, kind)
        if kind == "lpm":
            parts.append(f"0x{m.value.hex()}/{m.prefix_len}")
        elif kind == "ternary":
            parts.append(f"0x{m.value.hex()}&&&0x{m.mask.hex()}")
        elif kind == "exact":
            parts.append(f"0x{m.value.hex()}")
        else:
            parts.append(kind)
    text = "(" + ", ".join(parts) + ")" if parts else "(default)"
    return text + (f" priority {entry.priority}" if entry.priority else "")
