"""The control channel: JSON over HTTP on a unix socket in the run folder (mode 0600, so
only root reaches it; nothing listens on a network port). One request per operation:
POST /v1/<op> with the arguments as a JSON object; the answer is {"ok": true, "result": ...}
or {"ok": false, "error": {"type": ..., "message": ...}}. ControlClient turns an error back
into the library's typed exception."""
from __future__ import annotations

import http.client
import json
import os
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler

from .. import errors
from ..errors import ControlError, FlexNetError

SOCKET_NAME = "control.sock"
MAX_BODY = 1 << 20


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, SOCKET_NAME)


class _Server(socketserver.UnixStreamServer):
    # one request at a time, on one thread: the controller serialises changes anyway, and
    # netlink sockets are per thread (targets/netlink.py), so a thread per request would
    # open new ones each time
    allow_reuse_address = True


class ControlServer:
    """Serves `handlers` (op name -> callable taking the JSON arguments) on the socket."""

    def __init__(self, path: str, handlers: dict):
        self.path = path
        handlers = dict(handlers)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                op = self.path.rsplit("/", 1)[-1]
                try:
                    size = int(self.headers.get("Content-Length", "0"))
                    if size > MAX_BODY:
                        raise ControlError(f"request too large ({size} bytes)")
                    args = json.loads(self.rfile.read(size) or b"{}")
                    if op not in handlers:
                        raise ControlError(f"unknown operation {op[:40]!r}")
                    if not isinstance(args, dict):
                        raise ControlError("arguments must be a JSON object")
                    body = {"ok": True, "result": handlers[op](**args)}
                    code = 200
                except FlexNetError as exc:
                    body = {"ok": False, "error": {"type": type(exc).__name__,
                                                   "message": str(exc)}}
                    code = 400
                except (TypeError, ValueError) as exc:
                    body = {"ok": False, "error": {"type": "ControlError",
                                                   "message": f"bad request for {op[:40]}: {exc}"[:300]}}
                    code = 400
                except Exception as exc:  # the controller stays up; the caller is told
                    body = {"ok": False, "error": {"type": "ControlError",
                                                   "message": f"{op}: internal error: "
                                                   f"{type(exc).__name__}: {exc}"[:400]}}
                    code = 500
                data = json.dumps(body, default=_jsonable).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # no per-request noise on stderr
                pass

        if os.path.exists(path):
            os.unlink(path)
        old = os.umask(0o177)      # the socket is born 0600: no window where others reach it
        try:
            self._server = _Server(path, Handler)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._thread: threading.Thread | None = None

    def serve_background(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="control-channel")
        self._thread.start()

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _jsonable(value):
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "to_json"):
        return value.to_json()
    return str(value)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class ControlClient:
    """Calls the controller of a run: client.call("deploy", uri=..., spec=...)."""

    def __init__(self, path: str, timeout_s: float = 120.0):
        self.path = path
        self.timeout_s = timeout_s

    def call(self, op: str, **args):
        conn = _UnixConnection(self.path, self.timeout_s)
        try:
            body = json.dumps(args).encode()
            conn.request("POST", f"/v1/{op}", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = json.loads(resp.read() or b"{}")
        except FileNotFoundError as exc:
            raise ControlError(f"no controller at {self.path} (is the lab up? "
                               "`flexnet status` lists runs)") from exc
        except PermissionError as exc:
            raise ControlError(f"{self.path}: permission denied (the control socket is "
                               "root's only)") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise ControlError(f"controller at {self.path}: {exc}") from exc
        finally:
            conn.close()
        if answer.get("ok"):
            return answer.get("result")
        err = answer.get("error") or {}
        raise _typed(err.get("type", ""), err.get("message", "unknown error"))


def _typed(kind: str, message: str) -> FlexNetError:
    """The library's exception for an error the controller reported (message as is)."""
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, FlexNetError)):
        cls = ControlError
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.message = message
    return exc
