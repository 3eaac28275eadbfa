"""The HTTP front: one endpoint for RDS, ElastiCache and MemoryDB, SigV4-checked, with faults.

Routing: the service is the SigV4 credential scope's (Authorization header or presigned query);
the Query protocol's Action (form POST body or GET query string) or JSON 1.1's X-Amz-Target names
the operation (AmazonMemoryDB.*, secretsmanager.*: see secrets.py). /_lab/... is the (unsigned) control API:

    GET    /_lab/health                       {"ok": true, "pid", "port", "dir"}
    GET    /_lab/state                        config, operations (with timings), faults, models
    GET    /_lab/models                       which ids map to which lab nodes
    GET    /_lab/calls[?action=&service=&since=SEQ]   every API call: action, params, status, error
    DELETE /_lab/calls
    GET    /_lab/faults | POST /_lab/faults {action, kind, count, delay_ms, service, code, status,
                                             message} | DELETE /_lab/faults
    GET    /_lab/delays | POST /_lab/delays {"promote": s, "settle": s} or {"rds": {...}, ...}
    GET    /_lab/config | POST /_lab/config {delays, test_failover_limit, max_page_size,
                                             strict_regions, reset_quota, failover_rate_limit,
                                             auto_failover, transit_encryption, redis_clusters}
                                             (redis_clusters: cluster-mode models, see clusters.py)
    GET    /_lab/ops                          failover operations with their timings
    POST   /_lab/wait-idle?timeout=S          returns when no failover is under way

Fault kinds: throttle (400 Throttling / ThrottlingException), 500 (InternalFailure), 503
(ServiceUnavailable), error (any code/status), slow (delay_ms then the real reply), malformed (200,
a body that does not parse), truncated (the real reply cut in half, connection closed), timeout (no
reply for delay_ms, default 30 s, then the connection closes), reset (connection reset at once).
count: how many matching calls it hits (default 1; -1: until deleted).
"""

import http.server
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse

from . import sigv4
from .models import Models
from .secrets import Secrets
from .wire import (EC_NS, EC_VERSION, JSON_CT, RDS_NS, RDS_VERSION, XML_CT, ApiError, json_error,
                   json_response, malformed, request_id, xml_error, xml_response)

from ..awscreds import DEFAULT_CREDENTIALS, DEFAULT_REGION  # noqa: E402,F401 - re-exported
FAULT_KINDS = ("throttle", "500", "503", "error", "slow", "malformed", "truncated", "timeout", "reset")
SERVICES = {"rds": ("query", RDS_NS, RDS_VERSION), "elasticache": ("query", EC_NS, EC_VERSION),
            "memorydb": ("json", None, None), "secretsmanager": ("json", None, None)}
# JSON 1.1 services: the X-Amz-Target prefix, and how their error bodies name the message
TARGETS = {"memorydb": ("AmazonMemoryDB.", "message"), "secretsmanager": ("secretsmanager.", "Message")}
# request fields never kept in the call log (GET /_lab/calls)
SECRET_FIELDS = ("SecretString", "SecretBinary")
MAX_CALLS = 20000


class Emulator:
    def __init__(self, lab_dir, host="127.0.0.1", port=0, credentials=None, region=DEFAULT_REGION,
                 cfg=None, quiet=False):
        self.lab_dir = os.path.abspath(lab_dir)
        self.region = region
        self.credentials = dict(credentials or DEFAULT_CREDENTIALS)
        self.models = Models(self.lab_dir, cfg)
        self.secrets = Secrets(lambda: self.models.strict_regions)
        self.quiet = quiet
        self.lock = threading.Lock()
        self.calls = []
        self.seq = 0
        self.faults = []
        self.fault_seq = 0
        self.stopping = self.models.stopping
        m = self.models
        self.actions = {
            "rds": {"DescribeDBClusters": m.rds_describe_db_clusters,
                    "DescribeDBInstances": m.rds_describe_db_instances,
                    "FailoverDBCluster": m.rds_failover_db_cluster},
            "elasticache": {"DescribeReplicationGroups": m.ec_describe_replication_groups,
                            "DescribeCacheClusters": m.ec_describe_cache_clusters,
                            "TestFailover": m.ec_test_failover,
                            "DescribeGlobalReplicationGroups": m.ec_describe_global_replication_groups,
                            "FailoverGlobalReplicationGroup": m.ec_failover_global_replication_group},
            "memorydb": {"DescribeClusters": m.mdb_describe_clusters,
                         "FailoverShard": m.mdb_failover_shard},
            "secretsmanager": {"CreateSecret": self.secrets.create_secret,
                               "GetSecretValue": self.secrets.get_secret_value,
                               "PutSecretValue": self.secrets.put_secret_value},
        }
        self.httpd = _Server((host, port), _Handler)
        self.httpd.emu = self
        self.host, self.port = self.httpd.server_address[:2]
        self.url = "http://%s:%d" % (self.host, self.port)
        self._thread = None

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self):
        """Serve in a background thread (tests, embedding); returns the endpoint URL."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="awsemu-http", daemon=True)
        self._thread.start()
        self.models.start_monitor()
        return self.url

    def stop(self, wait_ops=10.0):
        self.stopping.set()
        deadline = time.time() + wait_ops
        while time.time() < deadline:       # let a promotion under way finish (not the delays)
            with self.models.lock:
                if not any(o["state"] == "promoting" for o in self.models.busy.values()):
                    break
            time.sleep(0.02)
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- calls and faults -------------------------------------------------------------------------
    def record(self, entry):
        with self.lock:
            self.seq += 1
            entry["seq"] = self.seq
            self.calls.append(entry)
            del self.calls[:-MAX_CALLS]
        return entry

    def get_calls(self, action=None, service=None, since=0):
        with self.lock:
            return [dict(c) for c in self.calls if c["seq"] > since and (not action or c.get("action") == action)
                    and (not service or c.get("service") == service)]

    def add_fault(self, f):
        kind = str(f.get("kind", ""))
        if kind not in FAULT_KINDS:
            raise ValueError("kind must be one of %s" % ", ".join(FAULT_KINDS))
        if kind == "error" and not f.get("code"):
            raise ValueError("kind 'error' needs a code")
        count = int(f.get("count", 1))
        with self.lock:
            self.fault_seq += 1
            fault = {"id": self.fault_seq, "action": f.get("action") or "*", "service": f.get("service"),
                     "kind": kind, "count": count, "remaining": count, "hits": 0,
                     "delay_ms": f.get("delay_ms"), "code": f.get("code"), "status": f.get("status"),
                     "message": f.get("message")}
            self.faults.append(fault)
            return dict(fault)

    def take_fault(self, service, action):
        with self.lock:
            for f in self.faults:
                if f["remaining"] == 0:
                    continue
                if f["action"] not in ("*", action) or (f["service"] and f["service"] != service):
                    continue
                if f["remaining"] > 0:
                    f["remaining"] -= 1
                f["hits"] += 1
                return dict(f)
        return None

    def clear_faults(self):
        with self.lock:
            n = len(self.faults)
            self.faults = []
            return n


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def _service_guess(headers, params_q, target):
    for service, (prefix, _) in TARGETS.items():
        if target and target.startswith(prefix):
            return service
    v = params_q.get("Version")
    if v == RDS_VERSION:
        return "rds"
    if v == EC_VERSION:
        return "elasticache"
    return None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lab-awsemu/1"
    sys_version = ""

    def log_message(self, fmt, *args):
        if not self.server.emu.quiet:
            sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    # ---- plumbing -------------------------------------------------------------------------------
    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status, body, ctype, rid=None, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if rid:
            self.send_header("x-amzn-RequestId", rid)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, obj):
        self._send(status, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode(),
                   "application/json")

    def _abort(self, rst=False):
        """Close the connection without (the rest of) a reply."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            if rst:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _dispatch(self):
        try:
            if self.path.startswith("/_lab/") or self.path == "/_lab":
                self._control()
            else:
                self._aws()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # ---- the control API ------------------------------------------------------------------------
    def _control(self):
        emu = self.server.emu
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        path = u.path.rstrip("/")
        body = self._read_body()
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            return self._json(400, {"error": "body is not JSON: %s" % exc})
        m = self.command
        try:
            if path == "/_lab/health":
                return self._json(200, {"ok": True, "pid": os.getpid(), "port": emu.port, "dir": emu.lab_dir,
                                        "url": emu.url, "region": emu.region})
            if path == "/_lab/state":
                st = emu.models.state()
                st["ops"] = [_public(o) for o in st["ops"]]
                with emu.lock:
                    st["faults"] = [dict(f) for f in emu.faults]
                    st["calls"] = emu.seq
                return self._json(200, st)
            if path == "/_lab/models":
                return self._json(200, emu.models.describe_models())
            if path == "/_lab/ops":
                with emu.models.lock:
                    return self._json(200, {"ops": [_public(o) for o in emu.models.ops]})
            if path == "/_lab/wait-idle" and m == "POST":
                ok = emu.models.wait_idle(float(q.get("timeout", data.get("timeout", 30))))
                return self._json(200 if ok else 408, {"idle": ok})
            if path == "/_lab/calls":
                if m == "DELETE":
                    with emu.lock:
                        n = len(emu.calls)
                        emu.calls = []
                    return self._json(200, {"deleted": n, "seq": emu.seq})
                return self._json(200, {"calls": emu.get_calls(q.get("action"), q.get("service"),
                                                                int(q.get("since", 0))), "seq": emu.seq})
            if path == "/_lab/faults":
                if m == "DELETE":
                    return self._json(200, {"deleted": emu.clear_faults()})
                if m == "POST":
                    items = data if isinstance(data, list) else [data]
                    return self._json(200, {"faults": [emu.add_fault(f) for f in items]})
                with emu.lock:
                    return self._json(200, {"faults": [dict(f) for f in emu.faults]})
            if path == "/_lab/delays":
                if m == "POST":
                    return self._json(200, emu.models.set_delays(data))
                return self._json(200, emu.models.config()["delays"])
            if path == "/_lab/config":
                if m == "POST":
                    return self._json(200, emu.models.configure(data))
                return self._json(200, emu.models.config())
        except (ValueError, TypeError) as exc:
            return self._json(400, {"error": str(exc)})
        return self._json(404, {"error": "no such control endpoint: %s %s" % (m, path)})

    # ---- the AWS API ----------------------------------------------------------------------------
    def _aws(self):
        emu = self.server.emu
        t0 = time.time()
        raw_path, _, raw_query = self.path.partition("?")
        headers = list(self.headers.items())
        body = self._read_body()
        rid = request_id()
        target = self.headers.get("X-Amz-Target")
        qparams = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        scope = sigv4.scope_of(headers, raw_query)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        params = dict(qparams)
        if ctype == "application/x-www-form-urlencoded" and body:
            params.update(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        service = scope[3] if scope else _service_guess(headers, params, target)
        proto, ns, version = SERVICES.get(service, ("query", RDS_NS if service is None else None, None))
        if target and service is None:
            proto = "json"
        action = None
        if proto == "json":
            action = target.split(".", 1)[1] if target and "." in target else None
        else:
            action = params.get("Action")
        entry = emu.record({"time": t0, "service": service, "action": action, "method": self.command,
                            "path": raw_path, "region": scope[2] if scope else None,
                            "access_key": scope[0] if scope else None, "target": target,
                            "content_type": self.headers.get("Content-Type"),
                            "user_agent": self.headers.get("User-Agent"), "params": None,
                            "status": None, "error": None, "fault": None, "request_id": rid})

        def reply_error(err):
            entry.update(status=err.status, error=err.code, message=err.message)
            if proto == "json":
                self._send(err.status, json_error(err, TARGETS.get(service, ("", "message"))[1]), JSON_CT, rid,
                           {"x-amzn-ErrorType": err.code})
            else:
                self._send(err.status, xml_error(ns or "", err, rid), XML_CT, rid)

        try:
            # ---- parameters
            if proto == "json":
                if body.strip():
                    try:
                        jp = json.loads(body)
                    except ValueError:
                        raise ApiError("SerializationException", 400, "Request body is not valid JSON.")
                    if not isinstance(jp, dict):
                        raise ApiError("SerializationException", 400, "Request body must be a JSON object.")
                else:
                    jp = {}
                entry["params"] = {k: ("[secret]" if k in SECRET_FIELDS else v) for k, v in jp.items()}
            else:
                entry["params"] = {k: v for k, v in params.items()
                                   if not k.startswith("X-Amz-") or k == "X-Amz-Target"}
            # ---- authentication
            try:
                auth = sigv4.verify(self.command, raw_path, raw_query, headers, body, emu.credentials)
            except sigv4.AuthError as ae:
                if ae.detail:
                    entry["auth_detail"] = ae.detail
                raise ApiError(ae.code, ae.status, ae.message)
            entry["signed_headers"] = auth.signed_headers
            entry["session_token"] = bool(auth.token)
            if service not in SERVICES:
                raise ApiError("InvalidAction", 400, "Service %r is not served by this endpoint "
                               "(rds, elasticache, memorydb, secretsmanager)." % service)
            # ---- operation
            if proto == "json":
                prefix = TARGETS[service][0]
                if not target or not target.startswith(prefix):
                    raise ApiError("UnknownOperationException", 400,
                                   "Missing or unknown X-Amz-Target %r." % target)
                if ctype not in ("application/x-amz-json-1.1", "application/x-amz-json-1.0"):
                    raise ApiError("UnknownOperationException", 400,
                                   "Content-Type must be application/x-amz-json-1.1, not %r." % ctype)
                fn = emu.actions[service].get(action)
                if fn is None:
                    raise ApiError("UnknownOperationException", 400, "Unknown operation %s." % action)
            else:
                if not action:
                    raise ApiError("MissingAction", 400, "The request must contain the parameter Action.")
                v = params.get("Version")
                if not v:
                    raise ApiError("MissingParameter", 400, "The request must contain the parameter Version.")
                fn = emu.actions[service].get(action)
                if fn is None or v != version:
                    raise ApiError("InvalidAction", 400,
                                   "Could not find operation %s for version %s." % (action, v))
            # ---- faults
            fault = emu.take_fault(service, action)
            if fault:
                entry["fault"] = fault["kind"]
                k = fault["kind"]
                if k == "slow":
                    emu.stopping.wait((fault.get("delay_ms") or 2000) / 1000.0)
                elif k == "throttle":
                    raise ApiError("ThrottlingException" if proto == "json" else "Throttling", 400,
                                   "Rate exceeded")
                elif k == "500":
                    raise ApiError("InternalFailure", 500,
                                   "The request processing has failed because of an unknown error, "
                                   "exception or failure.", sender=False)
                elif k == "503":
                    raise ApiError("ServiceUnavailable", 503, "The service is unavailable. Try again later.",
                                   sender=False)
                elif k == "error":
                    st = int(fault.get("status") or 400)
                    raise ApiError(fault["code"], st, fault.get("message") or "Injected fault.", sender=st < 500)
                elif k == "malformed":
                    entry["status"] = 200
                    return self._send(200, malformed(proto, action, ns), JSON_CT if proto == "json" else XML_CT,
                                      rid)
                elif k == "timeout":
                    entry["status"] = 0
                    emu.stopping.wait((fault.get("delay_ms") or 30000) / 1000.0)
                    return self._abort()
                elif k == "reset":
                    entry["status"] = 0
                    return self._abort(rst=True)
            # ---- the call
            result = fn(jp if proto == "json" else params, auth.region)
            if proto == "json":
                out, ct = json_response(result), JSON_CT
            else:
                out, ct = xml_response(action, ns, result, rid), XML_CT
            entry["status"] = 200
            entry["duration_ms"] = round((time.time() - t0) * 1000, 1)
            if fault and fault["kind"] == "truncated":
                self.send_response(200)
                self.send_header("Content-Type", ct)
                self.send_header("Content-Length", str(len(out)))
                self.send_header("x-amzn-RequestId", rid)
                self.end_headers()
                self.wfile.write(out[:len(out) // 2])
                return self._abort()
            self._send(200, out, ct, rid)
        except ApiError as err:
            entry["duration_ms"] = round((time.time() - t0) * 1000, 1)
            reply_error(err)
        except Exception as exc:  # noqa: BLE001 - a bug or a lab failure: a 500 the client can see
            import traceback
            traceback.print_exc()
            reply_error(ApiError("InternalFailure", 500, "%s: %s" % (type(exc).__name__, exc), sender=False))


def _public(op):
    return {k: v for k, v in op.items() if not k.startswith("_")}
