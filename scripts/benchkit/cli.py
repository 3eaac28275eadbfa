"""scripts/bench: direct vs HAProxy vs repoint, every workload in the same run.

Paths: `direct` (the current primary), `haproxy` (HAProxy 2.6, TCP mode, a configuration equivalent
to repoint's), `repoint` (a lab configuration, log_level = warn) and, for the Redis workloads only
(redis-benchmark rows and the failover test), `repoint-mux`: a second repoint process, same binary
and same configuration except `multiplex = on` in the redis service; for the redis-benchmark rows,
`haproxy-splice`: HAProxy with `option splice-request` and `splice-response` (splice(2): the kernel
moves the bytes, HAProxy never copies them; what a user tunes it to for large values); the peers people would pick
instead, `twemproxy` (nutcracker 0.5, one server connection shared by every client) for the Redis
rows and `pgbouncer` (1.18, session pooling) for the Postgres rows; and the relay
floors `floor-epoll` and `floor-uring` (benchkit/relay_floor.c, built into --floor-build: a
connection per client, bytes passed on unread, with epoll + recv/send and with io_uring): what the
kernel costs per request in each I/O model, beside what repoint costs (also on the Postgres and
MariaDB throughput rows: a raw relay passes any protocol). Each workload runs `--reps`
times, the order of the paths rotating between repetitions; the tables show the median and [min-max].
The `tls` workload (benchkit/tls.py) has paths of its own around one TLS-only redis-server: direct TLS,
HAProxy and repoint with TLS on both sides, and repoint originating TLS for a plaintext client; and
around one TLS-only PostgreSQL (benchkit/tls_pg.py: pgbench -S and -S -C, HAProxy passing TLS through).
The `cluster` workload (benchkit/cluster.py): a real 3-shard Redis Cluster, redis-benchmark --cluster
direct against one repoint listener with `cluster = on`, and repoint in front of one standalone server.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from .common import BenchError, cpu_seconds, raise_nofile, ratio, summary
from . import conns as conns_mod
from . import failover as failover_mod
from . import report, throughput
from . import tls as tls_mod
from . import cluster as cluster_mod
from .proxies import HAProxy, Pgbouncer, RelayFloor, Repoint, Twemproxy, relay_floor_binary

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "scripts"))

from labkit import Lab  # noqa: E402

WORKLOADS = ("redis", "pg", "mysql", "conns", "failover", "tls", "cluster")
ALIASES = {"postgres": "pg", "postgresql": "pg", "mariadb": "mysql", "my": "mysql", "conn": "conns",
           "connections": "conns", "fo": "failover", "all": None}
ENGINE_OF = {"redis": "redis", "pg": "postgres", "mysql": "mysql", "conns": "redis", "failover": "redis",
             "tls": "redis", "cluster": "redis"}
PATHS = ("direct", "haproxy", "repoint")
MUX = "repoint-mux"
REDIS_PATHS = PATHS + (MUX,)
MUX_OVERRIDES = {"redis": {"multiplex": "on"}}   # the only difference between repoint-mux and repoint
# HAProxy as tuned for large payloads (splice(2) both ways), on the Redis rows: ahead of its default on
# 100 KB values, behind it on small ones.
SPLICE = "haproxy-splice"
# The peer people would pick instead of repoint, per engine (run in the same interleaved rotation).
PEERS = {"redis": "twemproxy", "postgres": "pgbouncer"}
# The floors of a relay (benchkit/relay_floor.c) on the throughput rows: what the kernel costs per request
# with readiness (epoll, recv, send: repoint's model, HAProxy's, twemproxy's) and with completions
# (io_uring, one io_uring_enter per loop turn).
FLOORS = ("floor-epoll", "floor-uring")
# repoint with `io = uring` in every service (a third process, otherwise the `repoint` path's configuration):
# the completion transport (net/uring.c) against its floor, on the throughput rows.
URING = "repoint-uring"
THROUGHPUT = {"redis": "redis", "postgres": "pg", "mysql": "mysql"}   # engine -> its throughput workload


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repoint", default=os.path.join(TOP, "build", "bench", "proxy", "repoint"),
                    help="the repoint binary (default build/bench/proxy/repoint, which scripts/bench builds)")
    ap.add_argument("--floor-build", default=os.path.join(TOP, "build", "bench-floor"),
                    help="where benchkit/relay_floor.c is built for the floor paths (default build/bench-floor)")
    ap.add_argument("--smoke", action="store_true",
                    help="seconds per workload, tiny counts, 1 repetition, same code paths; no speed assertions")
    ap.add_argument("--only", default=",".join(WORKLOADS),
                    help="comma-separated workloads: %s (default: all)" % ",".join(WORKLOADS))
    ap.add_argument("--reps", type=int, help="repetitions per workload and path (default 3; smoke 1)")
    ap.add_argument("--seconds", type=float,
                    help="length of one client run (pgbench/sysbench -T; redis-benchmark: at the direct rate) "
                         "(default 3; smoke 1)")
    ap.add_argument("--conns", type=int, help="idle client connections for the scale test (default 10000; smoke 200)")
    ap.add_argument("--switchovers", type=int, help="Redis switchovers in the failover test (default 4; smoke 1)")
    ap.add_argument("--interval", default="100ms", help="repoint probe_interval = HAProxy check inter (default 100ms)")
    ap.add_argument("--haproxy-threads", type=int, default=1,
                    help="HAProxy nbthread (default 1: one event loop, like repoint)")
    ap.add_argument("--haproxy-check-timeout", default="1s",
                    help="HAProxy `timeout check` (default 1s = repoint's probe_timeout in the lab configuration)")
    ap.add_argument("--mysql-threads", type=int, default=8, help="sysbench --threads (default 8)")
    ap.add_argument("--out", help="JSON file (default <repo>/bench-results/bench-<date>.json)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (configs, logs) after the run")
    a = ap.parse_args(argv)
    only = []
    for w in a.only.split(","):
        w = w.strip().lower()
        if not w:
            continue
        w = ALIASES.get(w, w)
        if w is None:
            only = list(WORKLOADS)
            break
        if w not in WORKLOADS:
            ap.error("unknown workload %r (choose from %s)" % (w, ", ".join(WORKLOADS)))
        if w not in only:
            only.append(w)
    a.only = [w for w in WORKLOADS if w in only]
    a.reps = a.reps or (1 if a.smoke else 3)
    a.seconds = a.seconds or (1 if a.smoke else 3)
    a.conns = a.conns or (200 if a.smoke else 10000)
    a.switchovers = a.switchovers or (1 if a.smoke else 4)
    return a


def tool_versions():
    def first(cmd):
        try:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10).stdout
            return out.decode(errors="replace").strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return None
    v = {"haproxy": first(["haproxy", "-v"]), "redis-server": first(["redis-server", "--version"]),
         "redis-benchmark": first(["redis-benchmark", "--version"]), "pgbench": first(["pgbench", "--version"]),
         "sysbench": first(["sysbench", "--version"]), "mariadbd": first(["/usr/sbin/mariadbd", "--version"]),
         "postgres": first(["/usr/lib/postgresql/15/bin/postgres", "--version"])}
    try:
        v["repoint_commit"] = subprocess.run(["git", "-C", TOP, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, timeout=10).stdout.decode().strip() or None
        dirty = subprocess.run(["git", "-C", TOP, "status", "--porcelain", "--", "proxy"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, timeout=10).stdout.decode().strip()
        v["repoint_proxy_tree_dirty"] = bool(dirty)
    except Exception:  # noqa: BLE001
        pass
    return v


class Bench:
    def __init__(self, args):
        self.a = args
        self.errors = []
        self.results = {"workloads": {}}
        self.workdir = tempfile.mkdtemp(prefix="repoint-bench-")
        os.chmod(self.workdir, 0o755)
        self.lab = Lab(os.path.join(self.workdir, "lab"))
        self.haproxy = self.repoint = self.mux = self.splice = None
        self.peers = {}   # engine -> Twemproxy / Pgbouncer
        self.floors = {}  # path -> RelayFloor
        self.uring = None
        self.mux_dead = False
        self.extra_procs = []

    # ---- setup / teardown -----------------------------------------------------------------------
    def engines(self):
        return [e for e in ("postgres", "mysql", "redis") if any(ENGINE_OF[w] == e for w in self.a.only)]

    def setup(self):
        engines = self.engines()
        t = time.monotonic()
        log("lab up (%s) in %s" % (", ".join(engines), self.workdir))
        self.lab.up(engines)
        log("lab up in %.1fs" % (time.monotonic() - t))
        if "mysql" in engines:
            my = self.lab._engine("mysql")
            my.q(self.lab.primary("mysql"), "CREATE USER IF NOT EXISTS 'haproxy'@'127.0.0.1'")
            self.lab.verify("mysql")
            if "mysql" in self.a.only:
                log("sysbench prepare (direct)")
                throughput.sysbench_prepare(self.lab.primary("mysql").port, self.a.smoke)
        if "postgres" in engines and "pg" in self.a.only:
            log("pgbench -i (direct)")
            throughput.pgbench_init(self.lab.primary("postgres").port, 1 if self.a.smoke else 5)
        proxied = [e for e in engines]
        self.haproxy = HAProxy(self.lab, self.workdir, "main", proxied, interval=self.a.interval, maxconn=4000,
                               threads=self.a.haproxy_threads, check_timeout=self.a.haproxy_check_timeout)
        self.repoint = Repoint(self.a.repoint, self.lab, self.workdir, "main", proxied, interval=self.a.interval)
        self.haproxy.wait_ready()
        self.repoint.wait_ready()
        log("haproxy %s and repoint %s ready" % (self.haproxy.ports, self.repoint.ports))
        if "redis" in engines and ("redis" in self.a.only or "failover" in self.a.only):
            self.start_mux(proxied)
        if "redis" in engines and "redis" in self.a.only:
            self.splice = HAProxy(self.lab, self.workdir, "splice", ["redis"], interval=self.a.interval, maxconn=4000,
                                  threads=self.a.haproxy_threads, check_timeout=self.a.haproxy_check_timeout,
                                  splice=True, name=SPLICE)
            self.splice.wait_ready()
            log("%s %s ready" % (SPLICE, self.splice.ports))
        self.start_peers(engines)
        throughput_engines = [e for e in engines if THROUGHPUT[e] in self.a.only]
        self.start_floors(throughput_engines)
        if throughput_engines:
            self.uring = self.start_or_record(lambda: Repoint(
                self.a.repoint, self.lab, self.workdir, "uring", throughput_engines, interval=self.a.interval,
                name=URING, **{e: {"io": "uring"} for e in throughput_engines}))

    def start_or_record(self, make):
        """make(): a Proc, then waited for. None when it cannot be made or started: the error is recorded
        (exit 1) and the other paths still run."""
        p = None
        try:
            p = make()
            p.wait_ready()
            log("%s %s ready" % (p.name, p.ports))
            return p
        except BenchError as exc:
            msg = str(exc).splitlines()[0][:300]
            log("ERROR " + msg)
            self.errors.append(msg)
            if p is not None:
                p.stop()
            return None

    def start_floors(self, engines):
        """The relay floors for the throughput rows of `engines` (one process per I/O model)."""
        if not engines:
            return
        for path in FLOORS:
            p = self.start_or_record(lambda path=path: RelayFloor(relay_floor_binary(self.a.floor_build), self.lab,
                                                                  self.workdir, path.split("-", 1)[1], engines))
            if p is not None:
                self.floors[path] = p

    def start_peers(self, engines):
        """twemproxy for the Redis rows, pgbouncer for the Postgres rows."""
        for engine, kind, want in (("redis", Twemproxy, "redis"), ("postgres", Pgbouncer, "pg")):
            if engine not in engines or want not in self.a.only:
                continue
            p = self.start_or_record(lambda kind=kind: kind(self.lab, self.workdir, "main"))
            if p is not None:
                self.peers[engine] = p

    def start_mux(self, engines):
        """repoint-mux: the same binary and lab configuration as `repoint`, with multiplex = on for the
        redis service. If it cannot start, the error is recorded (exit 1) and the other paths still run."""
        try:
            self.mux = Repoint(self.a.repoint, self.lab, self.workdir, "mux", engines, interval=self.a.interval,
                               name=MUX, **{e: dict(v) for e, v in MUX_OVERRIDES.items()})
            self.mux.wait_ready()
            log("repoint-mux %s ready (%s)" % (self.mux.ports, self.mux.cfg))
        except BenchError as exc:
            msg = str(exc).splitlines()[0][:300]
            log("ERROR " + msg + " - Redis workloads run without it")
            self.errors.append(msg)
            if self.mux is not None:
                self.mux.stop()
            self.mux = None

    def teardown(self):
        for p in ([self.haproxy, self.repoint, self.mux, self.splice, self.uring] + list(self.peers.values()) +
                  list(self.floors.values()) + self.extra_procs):
            if p is not None:
                try:
                    p.stop()
                except Exception as exc:  # noqa: BLE001
                    log("stopping %s: %s" % (p.name, exc))
        try:
            self.lab.down()
        except Exception as exc:  # noqa: BLE001
            log("lab down: %s" % exc)
        if not self.a.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            log("work dir kept: %s" % self.workdir)

    def port(self, path, engine):
        if path == "direct":
            return self.lab.primary(engine).port
        return self.proc(path).ports[engine]

    def proc(self, path):
        peers = {p.name: p for p in self.peers.values()}
        return {"haproxy": self.haproxy, "repoint": self.repoint, MUX: self.mux, SPLICE: self.splice, URING: self.uring, **peers,
                **self.floors}.get(path)

    def mux_usable(self, try_write=False):
        """repoint-mux is the new code under test: if it has exited (or, with try_write, does not route
        to the primary or cannot take a SET), the error is recorded once and the remaining runs go on without it."""
        if self.mux is None or self.mux_dead:
            return False
        try:
            self.mux.check_alive()
            if try_write:
                self.mux.wait_ready(timeout=30)
                r = conns_mod.redis_cmd(self.mux.ports["redis"], "SET", "bench:mux:probe", "1")
                if r != "+OK":
                    raise BenchError("repoint-mux: SET through it answered %r" % r)
            return True
        except (BenchError, OSError) as exc:
            msg = "%s (its remaining runs skipped)" % " | ".join(str(exc).splitlines()[:4])[:600]
            log("ERROR " + msg)
            self.errors.append(msg)
            self.mux_dead = True
            return False

    def paths(self, engine):
        """The paths a workload on `engine` runs against: repoint-mux and haproxy-splice only for Redis,
        the relay floors on the throughput rows (when they started)."""
        paths = REDIS_PATHS if engine == "redis" and self.mux is not None else PATHS
        if engine == "redis" and self.splice is not None:
            paths += (SPLICE,)
        paths += (PEERS[engine],) if engine in self.peers else ()
        paths += (URING,) if self.uring is not None and engine in self.uring.ports else ()
        return paths + tuple(f for f in FLOORS if f in self.floors and engine in self.floors[f].ports)

    # ---- throughput -----------------------------------------------------------------------------
    def run_throughput(self, engine, tests):
        paths = self.paths(engine)
        raw = {tid: {"desc": desc, "unit": unit, "runs": {p: [] for p in paths}, "errors": []}
               for tid, desc, unit, _ in tests}
        for rep in range(self.a.reps):
            k = rep % len(paths)
            order = paths[k:] + paths[:k]
            for tid, desc, unit, fn in tests:
                for path in order:
                    proc = self.proc(path)
                    if path == MUX and not self.mux_usable():
                        continue
                    if proc is not None:
                        proc.check_alive()
                    c0 = cpu_seconds(proc.pid) if proc else None
                    t0 = time.monotonic()
                    try:
                        r = fn(self.port(path, engine))
                    except BenchError as exc:
                        msg = "%s via %s (rep %d): %s" % (tid, path, rep + 1, str(exc).splitlines()[0][:200])
                        log("ERROR " + msg)
                        raw[tid]["errors"].append(msg)
                        self.errors.append(msg)
                        continue
                    r["wall_s"] = round(time.monotonic() - t0, 2)
                    r["rep"] = rep
                    c1 = cpu_seconds(proc.pid) if proc else None
                    if c0 is not None and c1 is not None and r.get("ops"):
                        r["proxy_cpu_s"] = round(c1 - c0, 3)
                        r["cpu_us_per_op"] = (c1 - c0) * 1e6 / r["ops"]
                    raw[tid]["runs"][path].append(r)
                    log("%-22s rep %d %-11s %10.1f %s  p50 %s ms  p99 %s ms%s" % (
                        tid, rep + 1, path, r["throughput"], unit, _f(r.get("p50_ms")), _f(r.get("p99_ms")),
                        "  cpu %.1f us/op" % r["cpu_us_per_op"] if "cpu_us_per_op" in r else ""))
        for tid, d in raw.items():
            w = {"description": d["desc"], "unit": d["unit"], "paths": {}, "errors": d["errors"]}
            for p, runs in d["runs"].items():
                if not runs:
                    continue
                w["paths"][p] = {k: summary([r.get(k) for r in runs])
                                 for k in ("throughput", "p50_ms", "p99_ms", "cpu_us_per_op", "ops")}
                if any(r.get("failed") for r in runs):
                    w["paths"][p]["failed"] = [r.get("failed", 0) for r in runs]
            w["ratios"] = {}
            by_rep = {p: {r["rep"]: r.get("throughput") for r in runs} for p, runs in d["runs"].items()}
            # repoint/direct, repoint/haproxy; for Redis also repoint-mux/direct, repoint-mux/haproxy and
            # repoint-mux/repoint (what multiplexing changes)
            peers = tuple(PEERS.values()) + (SPLICE,) + FLOORS
            for mine, others in (("repoint", ("direct", "haproxy") + peers),
                                 (MUX, ("direct", "haproxy", "repoint") + peers),
                                 (URING, ("direct", "haproxy", "repoint") + peers)):
                for other in others:
                    rp, o = w["paths"].get(mine), w["paths"].get(other)
                    if not rp or not o:
                        continue
                    rr = {}
                    for k in ("throughput", "p50_ms", "p99_ms", "cpu_us_per_op"):
                        if rp.get(k) and o.get(k):
                            rr[k] = ratio(rp[k]["median"], o[k]["median"])
                    # paired, per repetition (same rep = same conditions); a failed run leaves its
                    # repetition out of the pairs rather than shifting the others
                    pairs = [ratio(by_rep[mine].get(r), by_rep[other].get(r)) for r in range(self.a.reps)
                             if r in by_rep[mine] and r in by_rep[other]]
                    rr["throughput_per_rep"] = summary(pairs)
                    w["ratios"]["%s/%s" % (mine, other)] = rr
            self.results["workloads"][tid] = w

    def workload_redis(self):
        log("redis: calibrating request counts on the direct path")
        # SET and GET are separate invocations: each lasts about half of --seconds at the direct rate
        tests = throughput.redis_tests(self.port("direct", "redis"), self.a.seconds / 2.0, self.a.smoke)
        self.run_throughput("redis", tests)

    def workload_tls(self):
        """TLS rows (benchkit/tls.py): a TLS-only redis-server of its own, direct / HAProxy / repoint."""
        self.results["tls"] = tls_mod.run(self, log)

    def workload_cluster(self):
        """Redis Cluster rows (benchkit/cluster.py): a real 3-shard cluster of its own."""
        self.results["cluster"] = cluster_mod.run(self, log)

    def workload_pg(self):
        tests = throughput.pg_tests(max(1, int(round(self.a.seconds))), self.workdir)
        self.run_throughput("postgres", tests)

    def workload_mysql(self):
        tests = throughput.mysql_tests(max(1, int(round(self.a.seconds))), self.a.mysql_threads)
        self.run_throughput("mysql", tests)

    # ---- connection scale -----------------------------------------------------------------------
    def workload_conns(self):
        limit = raise_nofile()
        want = self.a.conns
        n = min(want, (limit - 300) // 2)
        note = ""
        if n < want:
            note = ("RLIMIT_NOFILE hard limit is %d here (no CAP_SYS_RESOURCE to raise it): a proxy needs 2 fds per "
                    "client, so %d connections instead of %d" % (limit, n, want))
            log(note)
        rd = self.lab.primary("redis")
        conns_mod.redis_cmd(rd.port, "CONFIG", "SET", "maxclients", str(max(10000, n + 1000)))
        kinds = ("haproxy", "repoint", MUX)
        runs = {k: [] for k in kinds}
        for rep in range(self.a.reps):
            for kind in kinds[rep % 3:] + kinds[:rep % 3]:
                tag = "conns-%s-%d" % (kind, rep + 1)
                if kind == "haproxy":
                    p = HAProxy(self.lab, self.workdir, tag, ["redis"], interval=self.a.interval, maxconn=n + 50,
                                threads=self.a.haproxy_threads, check_timeout=self.a.haproxy_check_timeout)
                else:
                    # repoint-mux: the clients share one upstream connection (they only PING)
                    p = Repoint(self.a.repoint, self.lab, self.workdir, tag, ["redis"], interval=self.a.interval,
                                max_clients=max(n + 1000, 10000), name=kind,
                                **({e: dict(v) for e, v in MUX_OVERRIDES.items()} if kind == MUX else {}))
                self.extra_procs.append(p)
                try:
                    p.wait_ready()
                    r = conns_mod.measure(p, p.ports["redis"], self.lab.primary("redis").port, n,
                                          upstream=1 if kind == MUX else n)
                    r["nofile_limit"] = p.nofile()
                    runs[kind].append(r)
                    log("conns rep %d %-8s %d conns: RSS %d -> %d KB = %.2f KB/conn, +%s fds, redis saw +%d" % (
                        rep + 1, kind, n, r["rss_before_kb"], r["rss_after_kb"], r["kb_per_conn"], r["fds_added"],
                        r["upstream_conns_seen_by_redis"]))
                except BenchError as exc:
                    msg = "conns via %s (rep %d): %s" % (kind, rep + 1, str(exc).splitlines()[0][:200])
                    log("ERROR " + msg)
                    self.errors.append(msg)
                finally:
                    p.stop()
                    self.extra_procs.remove(p)
        res = {"connections": n, "requested": want, "note": note, "proxies": {}}
        for kind, rs in runs.items():
            if rs:
                res["proxies"][kind] = {
                    "kb_per_conn": summary([r["kb_per_conn"] for r in rs]),
                    "rss_before_mb": summary([r["rss_before_kb"] / 1024.0 for r in rs]),
                    "rss_after_mb": summary([r["rss_after_kb"] / 1024.0 for r in rs]),
                    "fds_added": summary([r["fds_added"] for r in rs]),
                    "upstream_conns_seen_by_redis": summary([r["upstream_conns_seen_by_redis"] for r in rs]),
                    "open_seconds": summary([r["open_seconds"] for r in rs]),
                    "runs": rs}
        if "haproxy" in res["proxies"] and "repoint" in res["proxies"]:
            res["ratio_repoint_haproxy"] = ratio(res["proxies"]["repoint"]["kb_per_conn"]["median"],
                                                 res["proxies"]["haproxy"]["kb_per_conn"]["median"])
        if "haproxy" in res["proxies"] and MUX in res["proxies"]:
            res["ratio_repoint_mux_haproxy"] = ratio(res["proxies"][MUX]["kb_per_conn"]["median"],
                                                     res["proxies"]["haproxy"]["kb_per_conn"]["median"])
        self.results["connections"] = res

    # ---- failover -------------------------------------------------------------------------------
    def workload_failover(self):
        paths = {"haproxy": self.haproxy.ports["redis"], "repoint": self.repoint.ports["redis"]}
        if self.mux is not None:
            paths[MUX] = self.mux.ports["redis"]
        runs = []
        to = None
        for i in range(self.a.switchovers):
            if MUX in paths and not self.mux_usable(try_write=True):
                del paths[MUX]
            for p in paths:
                self.proc(p).wait_ready()
            before = self.lab.primary("redis").name
            try:
                r = failover_mod.switchover_once(self.lab, paths, i, to=to, optional=(MUX,))
            except Exception as exc:  # noqa: BLE001
                msg = "failover switchover %d: %s" % (i + 1, str(exc).splitlines()[0][:200])
                log("ERROR " + msg)
                self.errors.append(msg)
                break
            runs.append(r)
            for p, why in r.get("dropped", {}).items():
                msg = "failover switchover %d: %s left out: %s (and from the remaining switchovers)" % (i + 1, p, why)
                log("ERROR " + msg)
                self.errors.append(msg)
                paths.pop(p, None)
            to = before           # alternate between the two nodes
            log("switchover %d %s->%s: %s" % (i + 1, r["from"], r["to"], "; ".join(
                "%s first write +%s ms, %d errors %s, gap %s ms, split %d/%d" % (
                    p, v["first_write_after_promotion_ms"], v["errors"], v["error_kinds"], v["longest_gap_ms"],
                    v["on_demoted_not_on_new_primary"], v["acked_missing_on_new_primary"])
                for p, v in r["paths"].items())))
        summ = {}
        for p in ("haproxy", "repoint", MUX):
            rs = [r["paths"][p] for r in runs if p in r["paths"]]
            if not rs and p == MUX:
                continue
            kinds = {}
            for x in rs:
                for k, v in x["error_kinds"].items():
                    kinds[k] = kinds.get(k, 0) + v
            summ[p] = {"first_write_after_promotion_ms": summary([x["first_write_after_promotion_ms"] for x in rs]),
                       "errors": summary([x["errors"] for x in rs]),
                       "longest_gap_ms": summary([x["longest_gap_ms"] for x in rs]),
                       "split_writes": sum(x["on_demoted_not_on_new_primary"] for x in rs),
                       "acked_missing": sum(x["acked_missing_on_new_primary"] for x in rs),
                       "error_kinds": ", ".join("%s %d" % kv for kv in sorted(kinds.items())) or "none"}
        self.results["failover"] = {"clients": 4, "interval_ms": 5, "check_interval": self.a.interval,
                                    "haproxy_check_timeout": self.a.haproxy_check_timeout,
                                    "runs": runs, "summary": summ}

    # ---- main -----------------------------------------------------------------------------------
    def run(self):
        for w in self.a.only:
            t = time.monotonic()
            log("=== %s ===" % w)
            try:
                getattr(self, "workload_" + w)()
            except BenchError as exc:
                msg = "%s: %s" % (w, exc)
                log("ERROR " + msg)
                self.errors.append(msg.splitlines()[0][:300])
            self.results.setdefault("workload_seconds", {})[w] = round(time.monotonic() - t, 1)


def _f(v):
    return "-" if v is None else "%.3f" % v


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if not os.access(a.repoint, os.X_OK):
        log("no repoint binary at %s" % a.repoint)
        return 2

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.time()
    nofile = raise_nofile()
    b = Bench(a)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
            "kernel": platform.release(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
            "smoke": a.smoke, "reps": a.reps, "seconds": a.seconds, "workloads": a.only, "interval": a.interval,
            "haproxy_threads": a.haproxy_threads, "mysql_threads": a.mysql_threads, "nofile": nofile,
            "repoint": os.path.abspath(a.repoint), "versions": tool_versions(),
            "haproxy_config": "TCP mode; redis: configuration.txt tcp-check role:master recipe over all nodes; "
                              "postgres/mysql: pgsql-check/mysql-check, primary + replicas as backup; "
                              "check inter %s, timeout check %s, rise 2 fall 3, on-marked-down shutdown-sessions; "
                              "no splice; nbthread %d; haproxy-splice (Redis rows): the same with option "
                              "splice-request and splice-response" % (a.interval, a.haproxy_check_timeout,
                                                                      a.haproxy_threads),
            "haproxy_check_timeout": a.haproxy_check_timeout,
            "repoint_mux_config": "the repoint path's lab configuration with, in [service redis], %s; a second "
                                  "process of the same binary; Redis workloads only" % ", ".join(
                                      "%s = %s" % kv for kv in sorted(MUX_OVERRIDES["redis"].items())),
            "repoint_uring_config": "the repoint path's lab configuration with io = uring in every service of "
                                    "the throughput rows; a third process of the same binary"}
    rc = 0
    try:
        b.setup()
        b.run()
    except KeyboardInterrupt as exc:
        log("interrupted (%s): cleaning up" % exc)
        b.errors.append("interrupted")
        rc = 130
    except Exception as exc:  # noqa: BLE001
        log("FAILED: %s" % exc)
        traceback.print_exc()
        b.errors.append("setup/run: %s" % str(exc).splitlines()[0][:300])
        rc = 1
    finally:
        if b.haproxy is not None:
            b.results["haproxy_config_text"] = open(b.haproxy.cfg).read()
        if b.mux is not None:
            b.results["repoint_mux_config_text"] = open(b.mux.cfg).read()
        if b.uring is not None:
            b.results["repoint_uring_config_text"] = open(b.uring.cfg).read()
        t = time.monotonic()
        b.teardown()
        log("teardown %.1fs" % (time.monotonic() - t))
    meta["total_seconds"] = round(time.time() - started, 1)
    # the paths each kind of workload ran against (repoint-mux only if it started)
    meta["paths"] = {"redis": list(b.paths("redis")), "other": list(PATHS)}
    if "failover" in a.only:
        meta["paths"]["failover"] = ["haproxy", "repoint"] + ([MUX] if b.mux else [])
    meta["loadavg_end"] = os.getloadavg()
    out = dict(meta=meta, errors=b.errors, **b.results)
    path = a.out or os.path.join(TOP, "bench-results", "bench-%s%s.json" % (
        datetime.datetime.now().strftime("%Y%m%d-%H%M%S"), "-smoke" if a.smoke else ""))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=2, sort_keys=False, default=str)
    print()
    print("repoint bench%s: %s, %d rep(s), %s, %d cpus, total %.0fs" % (
        " (smoke)" if a.smoke else "", meta["date"], a.reps, ",".join(a.only), os.cpu_count(), meta["total_seconds"]))
    if b.results["workloads"]:
        print()
        print(report.throughput_table(b.results["workloads"]))
    if b.results.get("connections"):
        print()
        print(report.conns_table(b.results["connections"]))
    if b.results.get("failover"):
        print()
        print(report.failover_table(b.results["failover"]))
    if b.results.get("tls"):
        print()
        print(tls_mod.table(b.results["tls"]))
    if b.results.get("cluster"):
        print()
        print(cluster_mod.table(b.results["cluster"]))
    if b.errors:
        print("\nerrors:\n  " + "\n  ".join(b.errors))
    print("\nresults: %s" % path)
    if rc == 0 and b.errors:
        rc = 1
    return rc
