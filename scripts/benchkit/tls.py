"""The TLS rows: one TLS-only redis-server (a lab CA made here with openssl), and four ways to it:

  direct-tls      redis-benchmark --tls straight to the server
  haproxy-tls     TLS on both sides: HAProxy 2.6 `bind ... ssl crt`, `server ... ssl verify required ca-file`
  repoint-tls     TLS on both sides: listen_tls = require, tls = verify-full
  repoint-origin  the sidecar's usual shape: plaintext client on loopback, repoint makes the TLS to the member

Each workload runs --reps times with the order of the paths rotating; throughput, p50/p99 and the proxy's CPU
per operation (utime + stime of the proxy process over the run, divided by the requests)."""

import os
import subprocess
import time

from .common import BenchError, cpu_seconds, free_port, ratio, wait_for
from .proxies import HAPROXY_BIN, Proc
from .throughput import REDIS_CLIENTS, medians, redis_benchmark, rotate_redis
from . import tls_pg

PATHS = ("direct-tls", "haproxy-tls", "repoint-tls", "repoint-origin")
VARIANTS = (("small", 1, 3), ("small_p16", 16, 3), ("16k", 1, 16384))


def make_pki(d):
    """The lab's CA and server certificate (labkit/pki.py), and the PEM of both that HAProxy wants."""
    from labkit.pki import lab_pki
    pki = lab_pki(os.path.join(d, "pki"))
    pem = os.path.join(d, "server.pem")
    with open(pem, "w") as out:
        for n in ("cert", "key"):
            with open(pki[n]) as f:
                out.write(f.read())
    return dict(pki, pem=pem)


class TlsRig:
    """The server and the three proxies; stop() ends them all."""

    def __init__(self, repoint_bin, workdir, interval):
        self.dir = os.path.join(workdir, "tls")
        os.makedirs(self.dir, exist_ok=True)
        self.pki = make_pki(self.dir)
        self.procs = []
        self.server_port = free_port()
        self.server = self._start("redis-tls", [
            "redis-server", "--port", "0", "--tls-port", str(self.server_port), "--bind", "127.0.0.1",
            "--tls-cert-file", self.pki["cert"], "--tls-key-file", self.pki["key"],
            "--tls-ca-cert-file", self.pki["ca"], "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
            "--dir", self.dir])
        self.ports = {"direct-tls": self.server_port}
        # HAProxy: TLS both sides, a role check over TLS as in the plaintext rows
        hp = free_port()
        cfg = os.path.join(self.dir, "haproxy-tls.cfg")
        with open(cfg, "w") as f:
            f.write("""global
    maxconn 4000
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend redis_tls
    bind 127.0.0.1:%d ssl crt %s
    default_backend redis_tls
backend redis_tls
    option tcp-check
    tcp-check connect ssl
    tcp-check send PING\\r\\n
    tcp-check expect string +PONG
    server r1 127.0.0.1:%d ssl verify required ca-file %s check inter %s
""" % (hp, self.pki["pem"], self.server_port, self.pki["ca"], interval))
        chk = subprocess.run([HAPROXY_BIN, "-c", "-q", "-f", cfg], capture_output=True, text=True)
        if chk.returncode != 0:
            raise BenchError("haproxy rejects %s: %s" % (cfg, chk.stdout + chk.stderr))
        self.haproxy = self._start("haproxy-tls", [HAPROXY_BIN, "-db", "-f", cfg])
        self.ports["haproxy-tls"] = hp
        # repoint: one process, two services on the same member (TLS both sides; plaintext client)
        rp_tls, rp_origin, admin = free_port(), free_port(), free_port()
        member = "members = 127.0.0.1:%d\nprobe_interval = %s\ntls = verify-full\ntls_ca_file = %s\n" % (
            self.server_port, interval, self.pki["ca"])
        rcfg = os.path.join(self.dir, "repoint-tls.ini")
        with open(rcfg, "w") as f:
            f.write("[repoint]\nadmin = 127.0.0.1:%d\nlog_level = warn\n\n" % admin)
            f.write("[service tls]\nprotocol = redis\nlisten = 127.0.0.1:%d\n%slisten_tls = require\n"
                    "listen_tls_cert_file = %s\nlisten_tls_key_file = %s\nmax_clients = 100000\n\n"
                    % (rp_tls, member, self.pki["cert"], self.pki["key"]))
            f.write("[service origin]\nprotocol = redis\nlisten = 127.0.0.1:%d\n%smax_clients = 100000\n"
                    % (rp_origin, member))
        self.repoint = self._start("repoint-tls", [repoint_bin, "-c", rcfg])
        self.ports["repoint-tls"] = rp_tls
        self.ports["repoint-origin"] = rp_origin
        self.proc_of = {"direct-tls": None, "haproxy-tls": self.haproxy, "repoint-tls": self.repoint,
                        "repoint-origin": self.repoint}
        for path in PATHS:
            wait_for(lambda p=path: self._ping(p), 30, "%s to answer" % path)

    def _start(self, name, argv):
        p = Proc(argv, os.path.join(self.dir, name + ".log"))
        p.name = name
        self.procs.append(p)
        return p

    def tls_args(self, path):
        return [] if path == "repoint-origin" else ["--tls", "--cacert", self.pki["ca"]]

    def _ping(self, path):
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.ports[path])] + self.tls_args(path)
                           + ["PING"], capture_output=True, text=True, timeout=10)
        return r.stdout.strip() == "PONG"

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


def run(bench, log):
    """Runs the TLS rows; returns {tid: {description, paths: {path: {throughput, p50_ms, p99_ms, cpu_us_per_op}},
    ratios}}."""
    a = bench.a
    rig = TlsRig(a.repoint, bench.workdir, a.interval)
    results = {}
    try:
        tests = []
        for vid, pipeline, size in VARIANTS:
            if a.smoke:
                n = 2000 if size < 1000 else 200
            else:
                probe = redis_benchmark(rig.ports["direct-tls"], "get", 10000 if size < 1000 else 1000, pipeline, size,
                                        extra=rig.tls_args("direct-tls"))["throughput"]
                n = max(1000, min(int(probe * a.seconds / 2.0), 3000000))
                n -= n % (REDIS_CLIENTS * pipeline) or 0
            for t in ("set", "get"):
                tests.append(("tls.%s.%s" % (vid, t), "redis-benchmark -c %d -t %s -d %d%s -n %d" % (
                    REDIS_CLIENTS, t, size, " -P %d" % pipeline if pipeline > 1 else "", n), t, n, pipeline, size))
        results = rotate_redis(bench, log, PATHS, tests, rig.ports, rig.proc_of, rig.tls_args)
        for tid, w in results.items():
            med = medians(w, PATHS)
            cpu = medians(w, PATHS, "cpu_us_per_op")
            w["ratios"] = {"repoint-tls/haproxy-tls": ratio(med["repoint-tls"], med["haproxy-tls"]),
                           "repoint-tls/direct-tls": ratio(med["repoint-tls"], med["direct-tls"]),
                           "repoint-origin/direct-tls": ratio(med["repoint-origin"], med["direct-tls"]),
                           "cpu repoint-tls/haproxy-tls": ratio(cpu["repoint-tls"], cpu["haproxy-tls"])}
        # The cost of a new TLS connection: connect, handshake, PING, close (redis-benchmark has no -C).
        results["tls.connect"] = _connect_rate(rig, a, log)
        # Postgres over TLS (benchkit/tls_pg.py), with the same CA.
        results.update(tls_pg.run(bench, rig.pki, log))
    finally:
        rig.stop()
    return results


def _connect_rate(rig, a, log):
    """New TLS connections per second through each path, one client opening and closing in a loop for
    a fixed time (Python's ssl module, the same cost on every path)."""
    import socket
    import ssl
    secs = 1.0 if a.smoke else max(2.0, a.seconds / 2.0)
    out = {"description": "one client: connect + TLS handshake + PING + close, %.0f s per path" % secs, "paths": {}}
    ctx = ssl.create_default_context(cafile=rig.pki["ca"])
    ctx.options |= ssl.OP_NO_TICKET  # a fresh handshake each time, on every path alike
    for path in PATHS:
        proc = rig.proc_of[path]
        c0 = cpu_seconds(proc.pid) if proc else None
        n, t_end = 0, time.monotonic() + secs
        while time.monotonic() < t_end:
            with socket.create_connection(("127.0.0.1", rig.ports[path]), 5) as raw:
                s = raw if path == "repoint-origin" else ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                s.sendall(b"PING\r\n")
                s.recv(16)
                if s is not raw:
                    s.close()
            n += 1
        c1 = cpu_seconds(proc.pid) if proc else None
        out["paths"][path] = {"per_s": n / secs, "cpu_us_per_conn": (c1 - c0) * 1e6 / n if c0 is not None and n else None}
        log("tls.connect        %-14s %8.1f conn/s" % (path, n / secs))
    return out


def table(results):
    lines = ["TLS (one TLS-only redis-server; medians)",
             "%-16s %-15s %12s %9s %9s %12s" % ("row", "path", "req/s", "p50 ms", "p99 ms", "cpu us/op")]
    for tid, w in results.items():
        if tid == "tls.connect" or tid.startswith("tls.pg."):
            continue
        for p in PATHS:
            d = w["paths"][p]
            med = lambda k: (d.get(k) or {}).get("median")  # noqa: E731
            lines.append("%-16s %-15s %12s %9s %9s %12s" % (
                tid[4:], p, "%.0f" % med("throughput") if med("throughput") else "-",
                "%.3f" % med("p50_ms") if med("p50_ms") is not None else "-",
                "%.3f" % med("p99_ms") if med("p99_ms") is not None else "-",
                "%.1f" % med("cpu_us_per_op") if med("cpu_us_per_op") is not None else "-"))
        r = w["ratios"]
        lines.append("%-16s ratios: repoint-tls/haproxy-tls %s, cpu/op repoint-tls/haproxy-tls %s, "
                     "repoint-origin/direct-tls %s" % ("", _r(r["repoint-tls/haproxy-tls"]),
                                                       _r(r["cpu repoint-tls/haproxy-tls"]),
                                                       _r(r["repoint-origin/direct-tls"])))
    pg_rows = [tid for tid in results if tid.startswith("tls.pg.")]
    if pg_rows:
        lines.append("TLS (one TLS-only PostgreSQL 15, hostssl only; medians; -C: a new TLS connection per transaction)")
        lines.append("%-16s %-15s %12s %9s %9s %12s" % ("row", "path", "tps", "p50 ms", "p99 ms", "cpu us/op"))
    for tid in pg_rows:
        w = results[tid]
        for p in tls_pg.PATHS:
            d = w["paths"][p]
            med = lambda k: (d.get(k) or {}).get("median")  # noqa: E731
            lines.append("%-16s %-15s %12s %9s %9s %12s" % (
                tid[7:], p, "%.0f" % med("throughput") if med("throughput") else "-",
                "%.3f" % med("p50_ms") if med("p50_ms") is not None else "-",
                "%.3f" % med("p99_ms") if med("p99_ms") is not None else "-",
                "%.1f" % med("cpu_us_per_op") if med("cpu_us_per_op") is not None else "-"))
        r = w["ratios"]
        lines.append("%-16s ratios: repoint-tls/direct-tls %s, repoint-tls/haproxy-pass %s, repoint-origin/direct-tls %s"
                     % ("", _r(r["repoint-tls/direct-tls"]), _r(r["repoint-tls/haproxy-pass"]),
                        _r(r["repoint-origin/direct-tls"])))
    c = results.get("tls.connect")
    if c:
        lines.append("new connections: " + ", ".join(
            "%s %.0f/s%s" % (p, v["per_s"], " (%.0f us cpu)" % v["cpu_us_per_conn"] if v["cpu_us_per_conn"] else "")
            for p, v in c["paths"].items()))
    return "\n".join(lines)


def _r(v):
    return "-" if v is None else "%.2f" % v
