"""The Redis Cluster rows: a real 3-shard cluster (labkit/rediscluster.py, a replica per shard) and the
ways to it:

  direct-cluster   redis-benchmark --cluster straight to the nodes (it reads CLUSTER SLOTS and sends each
                   key to its shard's primary itself)
  repoint-cluster  redis-benchmark, a plain client, to one repoint listener with `cluster = on`
  repoint-1shard   the same repoint configuration without `cluster`, in front of one standalone
                   redis-server (multiplex = on): what cluster routing costs repoint itself

Targets (issue 12): repoint-cluster at least 0.8x direct-cluster, and within 10% of repoint-1shard.
Each row runs --reps times with the order of the paths rotating; throughput, p50/p99 and the proxy's CPU
per operation (utime + stime of its process over the run, divided by the requests)."""

import os
import subprocess
import tempfile

from .common import free_port, ratio, wait_for
from .proxies import Proc
from .throughput import REDIS_CLIENTS, medians, redis_benchmark, rotate_redis

PATHS = ("direct-cluster", "repoint-cluster", "repoint-1shard")
VARIANTS = (("small", 1, 3), ("small_p16", 16, 3))


class ClusterRig:
    def __init__(self, repoint_bin, workdir, interval):
        from labkit.rediscluster import RedisCluster
        self.dir = os.path.join(workdir, "cluster")
        os.makedirs(self.dir, exist_ok=True)
        self.procs = []
        self.rc = RedisCluster(tempfile.mkdtemp(prefix="cluster-", dir=self.dir), shards=3)
        self.rc.start()
        try:
            single = free_port()
            self._start("redis-single", ["redis-server", "--port", str(single), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--dir", self.dir])
            rp_cluster, rp_single, admin = free_port(), free_port(), free_port()
            cfg = os.path.join(self.dir, "repoint-cluster.ini")
            with open(cfg, "w") as f:
                f.write("[repoint]\nadmin = 127.0.0.1:%d\nlog_level = warn\n\n" % admin)
                f.write("[service cluster]\nprotocol = redis\nlisten = 127.0.0.1:%d\nmembers = %s\ncluster = on\n"
                        "probe_interval = %s\nmax_clients = 100000\n\n" % (rp_cluster, self.rc.seeds_config(), interval))
                f.write("[service single]\nprotocol = redis\nlisten = 127.0.0.1:%d\nmembers = 127.0.0.1:%d\n"
                        "probe_interval = %s\nmax_clients = 100000\n" % (rp_single, single, interval))
            self.repoint = self._start("repoint-cluster", [repoint_bin, "-c", cfg])
            self.ports = {"direct-cluster": self.rc.primaries()[0][1], "repoint-cluster": rp_cluster,
                          "repoint-1shard": rp_single}
            self.proc_of = {"direct-cluster": None, "repoint-cluster": self.repoint, "repoint-1shard": self.repoint}
            for path in PATHS:
                wait_for(lambda p=path: self._set(p), 30, "%s to take a SET" % path)
        except BaseException:
            self.stop()
            raise

    def extra(self, path):
        return ["--cluster"] if path == "direct-cluster" else []

    def _start(self, name, argv):
        p = Proc(argv, os.path.join(self.dir, name + ".log"))
        p.name = name
        self.procs.append(p)
        return p

    def _set(self, path):
        # SET, not PING: repoint-cluster answers a write only once every shard has a primary
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.ports[path])] +
                           (["-c"] if path == "direct-cluster" else []) + ["SET", "bench:ready", "1"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() == "OK"

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        self.rc.stop()


def run(bench, log):
    """{tid: {description, paths: {path: {throughput, p50_ms, p99_ms, cpu_us_per_op}}, ratios}}"""
    a = bench.a
    rig = ClusterRig(a.repoint, bench.workdir, a.interval)
    results = {}
    try:
        tests = []
        for vid, pipeline, size in VARIANTS:
            if a.smoke:
                n = 4000
            else:
                probe = redis_benchmark(rig.ports["direct-cluster"], "get", 20000 * pipeline, pipeline, size,
                                        extra=rig.extra("direct-cluster"))["throughput"]
                n = max(2000, min(int(probe * a.seconds / 2.0), 5000000))
                n -= n % (REDIS_CLIENTS * pipeline) or 0
            for t in ("set", "get"):
                tests.append(("cluster.%s.%s" % (vid, t), "redis-benchmark -c %d -t %s -d %d%s -n %d (3 shards)" % (
                    REDIS_CLIENTS, t, size, " -P %d" % pipeline if pipeline > 1 else "", n), t, n, pipeline, size))
        results = rotate_redis(bench, log, PATHS, tests, rig.ports, rig.proc_of, rig.extra)
        for tid, w in results.items():
            med = medians(w, PATHS)
            w["ratios"] = {"repoint-cluster/direct-cluster": ratio(med["repoint-cluster"], med["direct-cluster"]),
                           "repoint-cluster/repoint-1shard": ratio(med["repoint-cluster"], med["repoint-1shard"])}
    finally:
        rig.stop()
    return results


def table(results):
    lines = ["Redis Cluster (3 shards, a replica each; medians)",
             "%-20s %-16s %12s %9s %9s %12s" % ("row", "path", "req/s", "p50 ms", "p99 ms", "cpu us/op")]
    for tid, w in results.items():
        for p in PATHS:
            d = w["paths"][p]
            med = lambda k: (d.get(k) or {}).get("median")  # noqa: E731
            lines.append("%-20s %-16s %12s %9s %9s %12s" % (
                tid[8:], p, "%.0f" % med("throughput") if med("throughput") else "-",
                "%.3f" % med("p50_ms") if med("p50_ms") is not None else "-",
                "%.3f" % med("p99_ms") if med("p99_ms") is not None else "-",
                "%.1f" % med("cpu_us_per_op") if med("cpu_us_per_op") is not None else "-"))
        r = w["ratios"]
        lines.append("%-20s ratios: repoint-cluster/direct-cluster %s, repoint-cluster/repoint-1shard %s" % (
            "", _r(r["repoint-cluster/direct-cluster"]), _r(r["repoint-cluster/repoint-1shard"])))
    return "\n".join(lines)


def _r(v):
    return "-" if v is None else "%.2f" % v
