"""The Postgres TLS rows: one TLS-only PostgreSQL 15 (ssl = on, hostssl only, as rds.force_ssl = 1), and the ways
to it with TLS where it matters:

  direct-tls      pgbench with sslmode=require straight to the server
  haproxy-pass    HAProxy 2.6 in TCP mode: the client's own TLS passes through (HAProxy cannot answer
                  Postgres's SSLRequest, so it cannot terminate; repoint is blind inside such sessions too)
  repoint-tls     TLS both sides: listen_tls = require (repoint answers SSLRequest), tls = verify-full
  repoint-origin  the sidecar's usual shape: plaintext client on loopback, repoint makes the TLS to the member

Rows: pgbench -S (throughput on long connections) and pgbench -S -C (a new connection, TLS handshake included,
per transaction: the cost of a new TLS connection), with the proxy's CPU per transaction."""

import os
import shutil
import subprocess
import tempfile

from .common import BenchError, cpu_seconds, free_port, ratio, summary, wait_for
from .proxies import HAPROXY_BIN, Proc
from .throughput import pgbench, pgbench_init

PG_BIN = "/usr/lib/postgresql/15/bin"
PATHS = ("direct-tls", "haproxy-pass", "repoint-tls", "repoint-origin")


class PgTlsRig:
    def __init__(self, repoint_bin, workdir, pki, interval):
        self.dir = tempfile.mkdtemp(prefix="pg-tls-", dir=workdir)
        os.chmod(self.dir, 0o755)
        self.procs, self.server, self.sock = [], None, None
        try:
            self._up(repoint_bin, pki, interval)
        except BaseException:
            self.stop()   # nothing half-up left behind
            raise

    def _up(self, repoint_bin, pki, interval):
        from labkit.procs import RunAs
        runas = RunAs("postgres")
        data = os.path.join(self.dir, "data")
        runas.mkdir(data)
        r = subprocess.run([PG_BIN + "/initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync",
                            "--no-instructions", "-E", "UTF8", "--locale=C"], capture_output=True, text=True,
                           timeout=120, cwd="/", env=runas.env(), **runas.popen_kwargs())
        if r.returncode != 0:
            raise BenchError("initdb: %s" % r.stderr[-500:])
        for src, name in ((pki["cert"], "server.crt"), (pki["key"], "server.key")):
            shutil.copy(src, os.path.join(data, name))
            runas.chown(os.path.join(data, name))
            os.chmod(os.path.join(data, name), 0o600)
        runas.write(os.path.join(data, "pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
        self.port = free_port()
        self.sock = tempfile.mkdtemp(prefix="pgs-")   # short: unix socket paths are limited to ~107 bytes
        runas.mkdir(self.sock)
        logf = open(os.path.join(self.dir, "pg.log"), "ab")
        self.server = subprocess.Popen([PG_BIN + "/postgres", "-D", data, "-p", str(self.port), "-k", self.sock,
                                        "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on", "-c", "fsync=off",
                                        "-c", "max_connections=300"],
                                       stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                       env=runas.env(), **runas.popen_kwargs())
        self.ports = {"direct-tls": self.port}
        env = dict(os.environ, PGSSLMODE="require")
        wait_for(lambda: subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-Atc",
                                         "SELECT 1"], capture_output=True, env=env).returncode == 0, 60,
                 "the TLS postgres")
        hp = free_port()
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("global\n    maxconn 4000\n    nbthread 1\ndefaults\n    mode tcp\n    timeout connect 5s\n"
                    "    timeout client 1h\n    timeout server 1h\nfrontend pg\n    bind 127.0.0.1:%d\n"
                    "    default_backend pg\nbackend pg\n    server p1 127.0.0.1:%d check inter %s\n"
                    % (hp, self.port, interval))
        self.haproxy = self._start("haproxy-pg", [HAPROXY_BIN, "-db", "-f", cfg])
        self.ports["haproxy-pass"] = hp
        rp_tls, rp_origin, admin = free_port(), free_port(), free_port()
        member = ("protocol = postgres\nmembers = 127.0.0.1:%d\nprobe_interval = %s\nprobe_user = postgres\n"
                  "tls = verify-full\ntls_ca_file = %s\nmax_clients = 100000\n" % (self.port, interval, pki["ca"]))
        rcfg = os.path.join(self.dir, "repoint.ini")
        with open(rcfg, "w") as f:
            f.write("[repoint]\nadmin = 127.0.0.1:%d\nlog_level = warn\n\n" % admin)
            f.write("[service tls]\nlisten = 127.0.0.1:%d\n%slisten_tls = require\nlisten_tls_cert_file = %s\n"
                    "listen_tls_key_file = %s\n\n" % (rp_tls, member, pki["cert"], pki["key"]))
            f.write("[service origin]\nlisten = 127.0.0.1:%d\n%s" % (rp_origin, member))
        self.repoint = self._start("repoint-pg-tls", [repoint_bin, "-c", rcfg])
        self.ports["repoint-tls"], self.ports["repoint-origin"] = rp_tls, rp_origin
        self.proc_of = {"direct-tls": None, "haproxy-pass": self.haproxy, "repoint-tls": self.repoint,
                        "repoint-origin": self.repoint}
        for path in PATHS:
            wait_for(lambda p=path: subprocess.run(
                ["psql", "-h", "127.0.0.1", "-p", str(self.ports[p]), "-U", "postgres", "-Atc", "SELECT 1"],
                capture_output=True, env=self.env(p), timeout=20).returncode == 0, 30, "%s to answer" % path)

    def env(self, path):
        """The client's side: TLS (not verified: the bench measures cost, test_tls checks names) except on the
        origination-only path, where the client is plaintext on loopback."""
        return dict(os.environ, PGSSLMODE="disable" if path == "repoint-origin" else "require")

    def _start(self, name, argv):
        p = Proc(argv, os.path.join(self.dir, name + ".log"))
        p.name = name
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        if self.server is not None:
            self.server.terminate()
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.sock is not None:
            shutil.rmtree(self.sock, ignore_errors=True)


def run(bench, pki, log):
    """{row: {description, paths: {path: {throughput, p50_ms, p99_ms, cpu_us_per_op}}, ratios}}"""
    a = bench.a
    rig = PgTlsRig(a.repoint, bench.workdir, pki, a.interval)
    results = {}
    try:
        pgbench_init(rig.port, 1)
        secs = 2 if a.smoke else max(3, int(a.seconds))
        rows = (("tls.pg.select", False), ("tls.pg.select_connect", True))
        raw = {tid: {p: [] for p in PATHS} for tid, _ in rows}
        for rep in range(a.reps):
            k = rep % len(PATHS)
            order = PATHS[k:] + PATHS[:k]
            for tid, connect in rows:
                for path in order:
                    proc = rig.proc_of[path]
                    c0 = cpu_seconds(proc.pid) if proc else None
                    old = dict(os.environ)
                    os.environ.update(rig.env(path))
                    try:
                        r = pgbench(rig.ports[path], secs, connect, bench.workdir, "%s-%s-%d" % (tid, path, rep))
                    except BenchError as exc:
                        msg = "%s via %s (rep %d): %s" % (tid, path, rep + 1, str(exc).splitlines()[0][:200])
                        log("ERROR " + msg)
                        bench.errors.append(msg)
                        continue
                    finally:
                        os.environ.clear()
                        os.environ.update(old)
                    c1 = cpu_seconds(proc.pid) if proc else None
                    if c0 is not None and c1 is not None and r["ops"]:
                        r["cpu_us_per_op"] = (c1 - c0) * 1e6 / r["ops"]
                    raw[tid][path].append(r)
                    log("%-22s rep %d %-14s %9.1f tps  p99 %.3f ms%s" % (
                        tid, rep + 1, path, r["throughput"], r["p99_ms"] or 0,
                        "  cpu %.1f us/op" % r["cpu_us_per_op"] if "cpu_us_per_op" in r else ""))
        for tid, connect in rows:
            w = {"description": "pgbench -S -c 16 -j 2 -T %d%s over TLS" % (secs, " -C" if connect else ""),
                 "paths": {}, "ratios": {}}
            for p in PATHS:
                w["paths"][p] = {k: summary([r.get(k) for r in raw[tid][p]])
                                 for k in ("throughput", "p50_ms", "p99_ms", "cpu_us_per_op")}
            med = {p: (w["paths"][p]["throughput"] or {}).get("median") for p in PATHS}
            w["ratios"] = {"repoint-tls/direct-tls": ratio(med["repoint-tls"], med["direct-tls"]),
                           "repoint-tls/haproxy-pass": ratio(med["repoint-tls"], med["haproxy-pass"]),
                           "repoint-origin/direct-tls": ratio(med["repoint-origin"], med["direct-tls"])}
            results[tid] = w
    finally:
        rig.stop()
    return results
