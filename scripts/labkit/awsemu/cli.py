"""`lab aws ...`: the AWS emulator's subcommands (hooked into labkit.cli)."""

import shlex

from ..procs import LabError


def add_parser(sub, common):
    p = sub.add_parser("aws", parents=[common],
                       help="local AWS control plane (RDS, ElastiCache, MemoryDB) over the lab's servers")
    asub = p.add_subparsers(dest="aws_cmd", metavar="AWS_COMMAND")
    asub.required = True

    def acmd(name, help):
        return asub.add_parser(name, help=help, parents=[common])

    q = acmd("up", "start the emulator (detached) and its Redis nodes (gd1..gd4, mdb1..mdb4)")
    q.add_argument("--port", type=int, help="listen port (default: a free one)")
    q.add_argument("--promote-delay", type=float, help="seconds from a failover call to the promotion (1.0)")
    q.add_argument("--settle-delay", type=float, help="seconds from the promotion to 'available' (0.5)")
    q.add_argument("--test-failover-limit", type=int, help="TestFailover/FailoverShard calls per 24 h (15)")
    q.add_argument("--auto-failover", type=float, metavar="SECONDS",
                   help="fail over by itself when a writer has been down this long (default: never)")
    q.add_argument("--failover-rate-limit", type=int, metavar="N",
                   help="failover calls a minute per service before APICallRateForCustomerExceeded")
    q.add_argument("--lenient-regions", action="store_true",
                   help="every resource visible whatever region a request is signed for")
    q.add_argument("--verbose", action="store_true", help="log every request in DIR/aws/awsemu.log")
    acmd("down", "stop the emulator and its Redis nodes")
    q = acmd("env", "print export lines: credentials, region, endpoint URL")
    q.add_argument("--temporary", action="store_true", help="the session-token credentials")
    acmd("status", "endpoint, models (ids -> lab nodes), failover operations, faults")
    q = acmd("fault", "inject a fault into the next matching API calls")
    q.add_argument("action", nargs="?", default="*", help="e.g. DescribeDBClusters (default: any)")
    q.add_argument("kind", nargs="?", default="throttle",
                   help="throttle|500|503|error|slow|malformed|truncated|timeout|reset (default throttle)")
    q.add_argument("--count", type=int, default=1, help="calls to hit (-1: until cleared)")
    q.add_argument("--delay-ms", type=int, help="slow/timeout duration")
    q.add_argument("--service", help="rds|elasticache|memorydb (default: any)")
    q.add_argument("--code", help="error code (kind error)")
    q.add_argument("--status", type=int, help="HTTP status (kind error)")
    q.add_argument("--message", help="error message (kind error)")
    q.add_argument("--clear", action="store_true", help="remove every fault instead")
    q = acmd("calls", "the API calls received (action, params, status, error)")
    q.add_argument("--action")
    q.add_argument("--service")
    q.add_argument("--since", type=int, default=0, help="only calls after this sequence number")
    q.add_argument("--clear", action="store_true")
    q = acmd("delays", "show or set failover delays")
    q.add_argument("--promote", type=float)
    q.add_argument("--settle", type=float)
    q.add_argument("--service", help="rds|elasticache|global|memorydb (default: all)")
    q = acmd("config", "write a repoint INI whose services follow the emulated clusters (source = ...)")
    q.add_argument("--out", help="file (default DIR/aws/repoint.ini)")
    q.add_argument("--admin", help="admin listen address (default 127.0.0.1:<free port>)")
    q.add_argument("--services", help="comma list (default: all of postgres, mysql, redis, redis-global, "
                                      "memorydb-0001, memorydb-0002 that are up)")
    q.add_argument("--poll-interval", default="1s")
    q.add_argument("--failover-poll-interval", default="100ms")
    return p


def run(lab, a, out):
    c = a.aws_cmd
    if c == "up":
        delays = {k: v for k, v in (("promote", a.promote_delay), ("settle", a.settle_delay)) if v is not None}
        cfg = {}
        if a.test_failover_limit is not None:
            cfg["test_failover_limit"] = a.test_failover_limit
        if a.auto_failover:
            cfg["auto_failover"] = a.auto_failover
        if a.failover_rate_limit:
            cfg["failover_rate_limit"] = a.failover_rate_limit
        if a.lenient_regions:
            cfg["strict_regions"] = False
        url = lab.aws_up(port=a.port, delays=delays, config=cfg, quiet=not a.verbose)
        st = lab.aws_state()
        out({"url": url, "pid": lab.env()["aws"]["pid"], "models": st["models"]},
            lambda d: (print("aws emulator up: %s (pid %d)" % (d["url"], d["pid"])), _print_models(d["models"]),
                       print("credentials: eval \"$(scripts/lab aws env%s)\"" % (
                           " --dir " + shlex.quote(lab.dir) if getattr(a, "dir", None) else ""))))
    elif c == "down":
        pids = lab.aws_down()
        out({"stopped": pids}, lambda d: print("aws emulator down (%s)" % lab.dir))
    elif c == "env":
        env = lab.aws_env(temporary=a.temporary)
        out(env, lambda d: [print("export %s=%s" % (k, shlex.quote(v))) for k, v in d.items()])
    elif c == "status":
        st = lab.aws_state()
        st["url"] = lab.aws_url()
        out(st, _print_status)
    elif c == "fault":
        if a.clear:
            n = lab.aws_faults_clear()
            return out({"deleted": n}, lambda d: print("%d fault(s) removed" % d["deleted"]))
        f = lab.aws_fault(a.action, a.kind, count=a.count, delay_ms=a.delay_ms, service=a.service,
                          code=a.code, status=a.status, message=a.message)
        out(f, lambda f: print("fault %d: %s on %s%s, %s call(s)" % (
            f["id"], f["kind"], f["action"], " (%s)" % f["service"] if f["service"] else "",
            "every" if f["count"] < 0 else f["count"])))
    elif c == "calls":
        if a.clear:
            seq = lab.aws_calls_clear()
            return out({"seq": seq}, lambda d: print("call log cleared (last seq %d)" % d["seq"]))
        calls = lab.aws_calls(a.action, a.service, a.since)
        out(calls, lambda cs: [print("%5d %s %-12s %-32s %s %s%s" % (
            x["seq"], _hms(x["time"]), x.get("service") or "-", x.get("action") or "-", x.get("status"),
            x.get("error") or "", " [fault %s]" % x["fault"] if x.get("fault") else "")) for x in cs])
    elif c == "delays":
        d = {k: v for k, v in (("promote", a.promote), ("settle", a.settle)) if v is not None}
        if a.service:
            d = {a.service: d}
        res = lab.aws_delays(**d) if d else lab.aws_api("GET", "/_lab/delays")
        out(res, lambda r: [print("%-12s promote %.2fs  settle %.2fs" % (s, v["promote"], v["settle"]))
                            for s, v in r.items()])
    elif c == "config":
        ports = lab.write_aws_config(a.out, admin=a.admin, services=a.services.split(",") if a.services else None,
                                     poll_interval=a.poll_interval,
                                     failover_poll_interval=a.failover_poll_interval)
        path = lab.env()["aws"]["repoint_config"]["path"]
        out({"path": path, "ports": ports}, lambda d: print("wrote %s: %s\n(run repoint with the credentials of "
                                                            "`lab aws env`)" % (d["path"], "  ".join(
                                                                "%s=127.0.0.1:%d" % kv for kv in d["ports"].items()))))
    else:
        raise LabError("unknown aws command %r" % c)


def _hms(t):
    import time
    return time.strftime("%H:%M:%S", time.localtime(t)) + ".%03d" % int((t % 1) * 1000)


def _print_models(m):
    for cid, d in m.get("rds", {}).items():
        print("  rds          %-14s %-10s instances %s" % (cid, d["region"], ",".join(d["instances"])))
    for gid, d in m.get("elasticache", {}).items():
        print("  elasticache  %-14s %-10s %s%s" % (gid, d["region"], " ".join(
            "%s=%s" % kv for kv in d["members"].items()), "  (global %s)" % d["global"] if d["global"] else ""))
    for gid, d in m.get("global", {}).items():
        print("  global       %-14s members %s" % (gid, " ".join("%s(%s)" % kv for kv in d["members"].items())))
    for name, d in m.get("memorydb", {}).items():
        for s, ns in d["shards"].items():
            print("  memorydb     %-14s %-10s shard %s: %s" % (name, d["region"], s, " ".join(
                "%s=%s" % kv for kv in ns.items())))


def _print_status(st):
    print("endpoint %s" % st["url"])
    _print_models(st["models"])
    cfg = st["config"]
    print("delays: %s" % "  ".join("%s %.2f/%.2fs" % (s, v["promote"], v["settle"]) for s, v in cfg["delays"].items()))
    print("test failover quota used: %s (limit %d / 24h)" % (cfg["quota_used"], cfg["test_failover_limit"]))
    for o in st["ops"][-10:]:
        print("op %d %-12s %-32s %-14s %s -> %s %s%s" % (
            o["id"], o["service"], o["action"], o["model"], o.get("from"), o.get("to") or o.get("to_group"),
            o["state"], " %.0f ms" % o["duration_ms"] if o.get("duration_ms") else ""))
        if o.get("error"):
            print("   error: %s" % o["error"])
    for f in st["faults"]:
        print("fault %d %s on %s: %d hit(s), %s left" % (f["id"], f["kind"], f["action"], f["hits"],
                                                        "unlimited" if f["remaining"] < 0 else f["remaining"]))
    print("calls received: %d" % st["calls"])
