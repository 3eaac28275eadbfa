"""Command line of the lab: scripts/lab SUBCOMMAND [options]."""

import argparse
import datetime
import json
import signal
import sys

from .lab import ALL_ENGINES, Lab, default_dir
from .procs import LabError


def _ts(t):
    if t is None:
        return "-"
    return "%.6f (%s)" % (t, datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
                          .isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def _print_report(r):
    head = {"switchover": lambda: "%s switchover %s -> %s" % (r["engine"], r["from"], r["to"]),
            "promote": lambda: "%s promote %s" % (r["engine"], r["node"]),
            "repoint": lambda: "%s repoint: replicas %s follow %s%s" % (
                r["engine"], ",".join(r["replicas"]) or "(none)", r["primary"],
                " (skipped, not running: %s)" % ",".join(r["skipped"]) if r["skipped"] else ""),
            "restart": lambda: "%s restart %s (now %s)" % (r["engine"], r["node"], r["role"])}[r["action"]]()
    print("%s: %.0f ms" % (head, r["total_ms"]))
    for k, v in r["steps"].items():
        print("  %-24s %s" % (k, ("%8.1f ms" % v) if isinstance(v, (int, float)) else v))
    if r.get("promoted_at") is not None:
        print("  promoted_at %s" % _ts(r["promoted_at"]))


def _print_status(rows):
    f = "%-9s %-5s %-16s %-8s %-6s %-8s %-8s %s"
    print(f % ("ENGINE", "NODE", "ADDRESS", "PID", "ALIVE", "ROLE", "UPSTREAM", "TLS"))
    for r in rows:
        print(f % (r["engine"], r["name"], r["address"], r["pid"] or "-", "yes" if r["alive"] else "no", r["role"],
                   r["upstream"] or "-", "only" if r["tls"] else "no"))


def main(argv=None):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=argparse.SUPPRESS,
                        help="lab directory (default $REPOINT_LAB_DIR or <repo>/.lab: %s)" % default_dir())
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    ap = argparse.ArgumentParser(prog="lab", parents=[common],
                                 description="Local Postgres / MariaDB / Redis clusters on loopback for repoint.")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    def cmd(name, help):
        return sub.add_parser(name, help=help, parents=[common])

    p = cmd("up", "start clusters and wait until replication flows")
    p.add_argument("--engines", default=",".join(ALL_ENGINES), help="comma list (default: all)")
    p.add_argument("--base-port", type=int, help="fixed ports: pg1..3=N..N+2, my1..2=N+3..4, rd1..3=N+5..7")
    p.add_argument("--redis-password", help="requirepass/masterauth for the redis nodes")
    p.add_argument("--tls", action="store_true",
                   help="every server serves TLS only, replication included (a lab CA: DIR/tls/ca.pem); every "
                        "later command on DIR goes over TLS, and `config` writes tls = verify-full")
    p = cmd("down", "stop every server and remove the data dir")
    p.add_argument("--keep", action="store_true", help="keep the data dir")
    p = cmd("status", "every node: address, pid, alive, role, upstream")
    p.add_argument("engine", nargs="?")
    p = cmd("roles", "role of each node as the node reports it")
    p.add_argument("engine", nargs="?")
    p = cmd("switchover", "planned switchover to a replica; old primary rejoins as replica")
    p.add_argument("engine")
    p.add_argument("--to", help="target node (default: first replica)")
    p = cmd("promote", "promote one node only (touch nothing else)")
    p.add_argument("engine")
    p.add_argument("node")
    p = cmd("repoint", "make every other live node a replica of the primary")
    p.add_argument("engine")
    p.add_argument("--primary", help="the primary to follow (default: current)")
    p = cmd("crash", "kill -9 a server")
    p.add_argument("engine")
    p.add_argument("node")
    p = cmd("stop", "stop a server gracefully")
    p.add_argument("engine")
    p.add_argument("node")
    p = cmd("restart", "start a stopped/crashed server again")
    p.add_argument("engine")
    p.add_argument("node")
    p.add_argument("--as-replica", action="store_true", help="rejoin as a replica of the current primary")
    p = cmd("verify", "write on the primary, wait until every live replica has it")
    p.add_argument("engine", nargs="?")
    p = cmd("config", "write a repoint INI for the running lab")
    p.add_argument("--out", help="file (default DIR/repoint.ini)")
    p.add_argument("--admin", help="admin listen address (default 127.0.0.1:<free port>)")
    p.add_argument("--engines", help="comma list (default: every engine that is up)")
    cmd("env", "print state.json")
    from .awsemu import cli as awscli
    awscli.add_parser(sub, common)

    a = ap.parse_args(argv)
    as_json = getattr(a, "json", False)
    lab = Lab(getattr(a, "dir", None), base_port=getattr(a, "base_port", None))

    def out(obj, human):
        if as_json:
            print(json.dumps(obj, indent=2, sort_keys=True))
        else:
            human(obj)

    try:
        if a.cmd == "up":
            t = lab.up(a.engines.split(","), redis_password=a.redis_password, tls=a.tls or None)

            def human(t):
                for e in lab.engines():
                    if e in t:
                        print("%-9s up in %5.2fs: %s" % (e, t[e], "  ".join(
                            "%s=%s" % (n.name, n.addr) for n in lab.nodes(e))))
                print("total %.2fs (dir %s)" % (t["total"], lab.dir))
            out(t, human)
        elif a.cmd == "down":
            left = lab.down(keep=a.keep)
            out({"killed_leftovers": left}, lambda d: print("lab down (%s)%s" % (
                lab.dir, "; killed leftover pids %s" % left if left else "")))
        elif a.cmd == "status":
            out(lab.status(a.engine), _print_status)
        elif a.cmd == "roles":
            engines = [a.engine] if a.engine else lab.engines()
            r = {e: lab.roles(e) for e in engines}
            out(r, lambda r: [print("%-9s %s" % (e, "  ".join("%s=%s" % kv for kv in v.items())))
                              for e, v in r.items()])
        elif a.cmd == "switchover":
            out(lab.switchover(a.engine, to=a.to), _print_report)
        elif a.cmd == "promote":
            out(lab.promote(a.engine, a.node), _print_report)
        elif a.cmd == "repoint":
            out(lab.repoint(a.engine, primary=a.primary), _print_report)
        elif a.cmd == "crash":
            out(lab.crash(a.engine, a.node), lambda r: print("%s %s killed (SIGKILL) at %s"
                                                             % (r["engine"], r["node"], _ts(r["crashed_at"]))))
        elif a.cmd == "stop":
            out(lab.stop(a.engine, a.node), lambda r: print("%s %s stopped" % (r["engine"], r["node"])))
        elif a.cmd == "restart":
            out(lab.restart(a.engine, a.node, as_replica=a.as_replica), _print_report)
        elif a.cmd == "verify":
            engines = [a.engine] if a.engine else lab.engines()
            r = {e: lab.verify(e) for e in engines}
            out(r, lambda r: [print("%-9s write on %s seen by %s" % (e, v["primary"], ",".join(v["replicas"]) or "-"))
                              for e, v in r.items()])
        elif a.cmd == "config":
            ports = lab.write_config(a.out, admin=a.admin, engines=a.engines.split(",") if a.engines else None)
            path = lab.env()["config"]["path"]
            out({"path": path, "ports": ports}, lambda d: print("wrote %s: %s" % (
                d["path"], "  ".join("%s=127.0.0.1:%d" % kv for kv in d["ports"].items()))))
        elif a.cmd == "env":
            print(json.dumps(lab.env(), indent=2, sort_keys=True))
        elif a.cmd == "aws":
            awscli.run(lab, a, out)
    except LabError as exc:
        print("lab %s: error: %s" % (a.cmd, exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lab %s: interrupted" % a.cmd, file=sys.stderr)
        return 130
    return 0
