"""Throughput workloads: redis-benchmark, pgbench, sysbench. Each test is a function of a TCP port
that runs one bounded client invocation and returns {throughput, p50_ms, p99_ms, ops}."""

import csv
import glob
import io
import os
import re

from .common import BenchError, cpu_seconds, percentile, run, summary

REDIS_CLIENTS = 50


# ---- Redis ----------------------------------------------------------------------------------------
def redis_benchmark(port, test, requests, pipeline=1, size=3, clients=REDIS_CLIENTS, timeout=300, extra=()):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients), "-n", str(requests),
           "-t", test, "-d", str(size), "-P", str(pipeline), "--csv"] + list(extra)
    out = run(cmd, timeout, "redis-benchmark")
    if '"test"' in out:
        out = out[out.index('"test"'):]   # --cluster prints the masters it found first
    rows = list(csv.DictReader(io.StringIO(out)))
    for row in rows:
        if row.get("test", "").upper() == test.upper():
            return {"throughput": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
                    "p99_ms": float(row["p99_latency_ms"]), "avg_ms": float(row["avg_latency_ms"]),
                    "ops": requests}
    raise BenchError("redis-benchmark printed no %s row:\n%s" % (test, out))


def rotate_redis(bench, log, paths, tests, port_of, proc_of, extra_of=lambda path: ()):
    """Runs each test (tid, description, command, requests, pipeline, value size) through every path,
    --reps times, the order of the paths rotating between repetitions (each path is first as often as
    the others). Returns {tid: {"description", "paths": {path: {throughput, p50_ms, p99_ms,
    cpu_us_per_op: summary}}}}: the proxy's CPU per operation is its process's utime + stime over the
    run, divided by the requests (no process: the direct path)."""
    raw = {tid: {p: [] for p in paths} for tid, *_ in tests}
    for rep in range(bench.a.reps):
        k = rep % len(paths)
        order = paths[k:] + paths[:k]
        for tid, desc, t, n, pipeline, size in tests:
            for path in order:
                proc = proc_of[path]
                c0 = cpu_seconds(proc.pid) if proc else None
                try:
                    r = redis_benchmark(port_of[path], t, n, pipeline, size, extra=extra_of(path))
                except BenchError as exc:
                    msg = "%s via %s (rep %d): %s" % (tid, path, rep + 1, str(exc).splitlines()[0][:200])
                    log("ERROR " + msg)
                    bench.errors.append(msg)
                    continue
                c1 = cpu_seconds(proc.pid) if proc else None
                if c0 is not None and c1 is not None:
                    r["cpu_us_per_op"] = (c1 - c0) * 1e6 / n
                raw[tid][path].append(r)
                log("%-22s rep %d %-16s %10.1f req/s  p99 %.3f ms%s" % (
                    tid, rep + 1, path, r["throughput"], r["p99_ms"],
                    "  cpu %.1f us/op" % r["cpu_us_per_op"] if "cpu_us_per_op" in r else ""))
    out = {}
    for tid, desc, *_ in tests:
        out[tid] = {"description": desc, "paths": {
            p: {k: summary([r.get(k) for r in raw[tid][p]]) for k in ("throughput", "p50_ms", "p99_ms", "cpu_us_per_op")}
            for p in paths}}
    return out


def medians(w, paths, key="throughput"):
    """{path: the median of `key`} of a rotate_redis row (None where there is none)."""
    return {p: (w["paths"][p][key] or {}).get("median") for p in paths}


REDIS_VARIANTS = (
    # id, pipeline, value size, seconds at the direct path's rate (set by calibration)
    ("small", 1, 3),
    ("small_p16", 16, 3),
    ("100k", 1, 100000),
    ("100k_p16", 16, 100000),
)


def redis_tests(direct_port, seconds, smoke):
    """[(id, description, unit, fn(port))], with request counts calibrated on the direct path so that
    one invocation lasts about `seconds` there (proxied paths take longer)."""
    tests = []
    for vid, pipeline, size in REDIS_VARIANTS:
        if smoke:
            n = {"small": 2000, "small_p16": 8000}.get(vid, 200)
        else:
            probe_n = 20000 if size < 1000 else 1000
            if pipeline > 1:
                probe_n *= 4
            rates = [redis_benchmark(direct_port, t, probe_n, pipeline, size)["throughput"] for t in ("set", "get")]
            n = int(min(rates) * seconds)
            n = max(2000 if size < 1000 else 500, min(n, 5000000))
            n -= n % (REDIS_CLIENTS * pipeline) or 0
        for t in ("set", "get"):
            desc = "redis-benchmark -c %d -t %s -d %d%s -n %d" % (
                REDIS_CLIENTS, t, size, " -P %d" % pipeline if pipeline > 1 else "", n)
            tests.append(("redis.%s.%s" % (vid, t), desc, "req/s",
                          lambda port, t=t, n=n, p=pipeline, s=size: redis_benchmark(port, t, n, p, s)))
    return tests


# ---- Postgres -------------------------------------------------------------------------------------
PG_CLIENTS = 16
PG_DB = "postgres"


def pgbench_init(port, scale):
    run(["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-i", "-q", "-s", str(scale), PG_DB],
        300, "pgbench -i")


def _pgbench_log(prefix, cycle):
    """Latencies (ms) from pgbench's per-transaction logs: column 3 (the transaction's latency), or with
    cycle=True the interval between a client's consecutive completions (it includes the connect,
    authentication and disconnect that -C adds, which column 3 leaves out)."""
    lat, last = [], {}
    for path in glob.glob(prefix + ".*"):
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) < 6:
                    continue
                if not cycle:
                    lat.append(int(p[2]) / 1000.0)
                    continue
                client, t = int(p[0]), int(p[4]) * 1000000 + int(p[5])
                if client in last:
                    lat.append((t - last[client]) / 1000.0)
                last[client] = t
        os.unlink(path)
    lat.sort()
    return lat


def pgbench(port, seconds, connect, logdir, tag):
    prefix = os.path.join(logdir, "pgbench-%s" % tag)
    cmd = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-n", "-S", "-c", str(PG_CLIENTS),
           "-j", "2", "-T", str(seconds), "-l", "--log-prefix=" + prefix]
    if connect:
        cmd.append("-C")
    out = run(cmd + [PG_DB], seconds * 4 + 60, "pgbench")
    m = re.search(r"^tps = ([0-9.]+)", out, re.M)
    n = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if not m or not n:
        raise BenchError("cannot parse pgbench output:\n%s" % out)
    lat = _pgbench_log(prefix, cycle=connect)
    return {"throughput": float(m.group(1)), "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "ops": int(n.group(1)), "failed": int(failed.group(1)) if failed else 0}


def pg_tests(seconds, logdir):
    tests = []
    for tid, connect in (("pg.select", False), ("pg.select_connect", True)):
        desc = "pgbench -S -c %d -j 2 -T %d%s" % (PG_CLIENTS, seconds, " -C" if connect else "")
        counter = {"n": 0}

        def fn(port, connect=connect, counter=counter, tid=tid):
            counter["n"] += 1
            return pgbench(port, seconds, connect, logdir, "%s-%d" % (tid, counter["n"]))
        tests.append((tid, desc, "tps", fn))
    return tests


# ---- MariaDB --------------------------------------------------------------------------------------
SB_TABLES, SB_TABLE_SIZE = 4, 10000


def _sysbench_common(port, threads):
    return ["--mysql-host=127.0.0.1", "--mysql-port=%d" % port, "--mysql-user=test", "--mysql-password=test",
            "--mysql-db=test", "--tables=%d" % SB_TABLES, "--table-size=%d" % SB_TABLE_SIZE,
            "--threads=%d" % threads]


def sysbench_prepare(port, smoke):
    global SB_TABLES, SB_TABLE_SIZE
    if smoke:
        SB_TABLES, SB_TABLE_SIZE = 1, 1000
    run(["sysbench", "oltp_read_only"] + _sysbench_common(port, SB_TABLES) + ["prepare"], 300, "sysbench prepare")


def _histogram_percentile(out, p):
    rows = [(float(m.group(1)), int(m.group(2)))
            for m in re.finditer(r"^\s*([0-9.]+) \|\**\s+(\d+)\s*$", out, re.M)]
    total = sum(c for _, c in rows)
    if not total:
        return None
    need, acc = p / 100.0 * total, 0
    for v, c in rows:
        acc += c
        if acc >= need:
            return v
    return rows[-1][0]


MYSQL_CONNECT_LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mysql_connect.lua")


def sysbench(port, seconds, threads, script="oltp_read_only"):
    cmd = ["sysbench", script, "--db-driver=mysql"] + _sysbench_common(port, threads) + [
        "--time=%d" % seconds, "--percentile=99", "--histogram=on", "--report-interval=0", "run"]
    out = run(cmd, seconds * 4 + 60, "sysbench")
    tps = re.search(r"transactions:\s+(\d+)\s+\(([0-9.]+) per sec", out)
    p99 = re.search(r"99th percentile:\s+([0-9.]+)", out)
    errs = re.search(r"ignored errors:\s+(\d+)", out)
    if not tps:
        raise BenchError("cannot parse sysbench output:\n%s" % out[-3000:])
    return {"throughput": float(tps.group(2)), "p50_ms": _histogram_percentile(out, 50),
            "p99_ms": float(p99.group(1)) if p99 else _histogram_percentile(out, 99), "ops": int(tps.group(1)),
            "failed": int(errs.group(1)) if errs else 0}


def mysql_tests(seconds, threads):
    return [("mysql.oltp_read_only", "sysbench oltp_read_only --threads=%d --time=%d (%d tables x %d rows)"
             % (threads, seconds, SB_TABLES, SB_TABLE_SIZE), "tps",
             lambda port: sysbench(port, seconds, threads)),
            ("mysql.select_connect", "sysbench mysql_connect.lua --threads=%d --time=%d (connect, SELECT 1, "
             "disconnect: a login per transaction)" % (threads, seconds), "tps",
             lambda port: sysbench(port, seconds, threads, MYSQL_CONNECT_LUA))]
