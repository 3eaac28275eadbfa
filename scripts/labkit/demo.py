"""scripts/demo: repoint in front of the local lab, clients writing through it, a switchover and a
crash of each engine's writer, and a table of what the clients saw."""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from labkit import Lab  # noqa: E402
from labkit.clients import ENGINES, WriterLoop  # noqa: E402

CLIENTS = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.02)
    raise SystemExit(f"demo: timed out waiting for {what}")


class Proxy:
    def __init__(self, binary, cfg, admin):
        self.admin = admin
        self.log = open(cfg + ".log", "wb")
        self.proc = subprocess.Popen([binary, "-c", cfg], stdout=self.log, stderr=subprocess.STDOUT)

    def service(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/status", timeout=5) as r:
            return next(s for s in json.load(r)["services"] if s["name"] == name)

    def wait_writer(self, name, port):
        until(lambda: self.service(name)["writer_ready"] and self.service(name)["writer"] == f"127.0.0.1:{port}",
              60, f"repoint to route {name} to port {port}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def exercise(lab, proxy, port, name, kind):
    engine = ENGINES[name]
    c = engine.connect(port)
    engine.setup(c)
    engine.close(c)
    old = lab.primary(name)
    loops = [WriterLoop(engine, port, name=f"demo-{kind}-{i}") for i in range(CLIENTS)]
    for w in loops:
        w.start()
    until(lambda: all(w.successes() for w in loops), 20, "clients to start")
    t0 = time.time()
    if kind == "switchover":
        lab.switchover(name)
        new = lab.primary(name)
    else:
        new = next(n for n in lab.nodes(name) if n.name != old.name and n.alive())
        lab.crash(name, old.name)
        lab.promote(name, new.name)
        lab.repoint(name, primary=new.name)
    proxy.wait_writer(name, new.port)
    until(lambda: all(len([t for t in w.successes() if t > t0]) >= 20 for w in loops), 60, "clients to recover")
    for w in loops:
        w.stop()
    if kind == "crash":
        lab.restart(name, old.name, as_replica=True)
    c = engine.connect(port)
    landed = engine.server_port(c)
    engine.close(c)
    outage = max(w.outage(after=t0)[0] for w in loops)
    errors = [e for w in loops for t, e in w.errors() if t >= t0 - 1]
    # What the application saw, shortened: "OperationalError: terminating connection due to ..."
    kinds = sorted({e[:70] for e in errors})
    node = next(n.name for n in lab.nodes(name) if n.port == landed)
    return {"engine": name, "event": kind, "from": old.name, "to": new.name, "outage_ms": round(outage * 1000),
            "errors": len(errors), "error_kinds": kinds, "ended_on": node,
            "writes": sum(len(w.successes()) for w in loops)}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repoint", required=True)
    ap.add_argument("--engines", default="postgres,mysql,redis")
    ap.add_argument("--keep", action="store_true", help="leave the lab and repoint running at the end")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    engines = args.engines.split(",")

    work = tempfile.mkdtemp(prefix="repoint-demo-")
    os.chmod(work, 0o755)
    lab = Lab(os.path.join(work, "lab"))
    print(f"demo: starting the lab ({', '.join(engines)}) in {work}", flush=True)
    lab.up(engines)
    proxy = None
    try:
        admin = free_port()
        cfg = os.path.join(work, "repoint.ini")
        # Postgres and MariaDB with auth = repoint (Postgres: the lab trusts loopback; MariaDB: the password hash
        # mysql.user keeps): repoint logs in to the members itself, so idle sessions move to the new writer
        # instead of being closed.
        own = {"postgres": {"auth": "repoint", "client_auth": "trust"}}
        if "mysql" in engines:
            own["mysql"] = {"auth": "repoint", "auth_file": lab.mysql_auth_file(os.path.join(work, "mysql-users.txt"))}
        ports = lab.write_config(cfg, admin=f"127.0.0.1:{admin}", **own)
        ports.pop("admin", None)
        proxy = Proxy(args.repoint, cfg, admin)
        for name in engines:
            proxy.wait_writer(name, lab.primary(name).port)
            print(f"demo: {name:8s} clients -> 127.0.0.1:{ports[name]} -> writer {lab.primary(name).name} "
                  f"(127.0.0.1:{lab.primary(name).port})", flush=True)
        results = []
        for name in engines:
            for kind in ("switchover", "crash"):
                print(f"demo: {name}: {kind} of the writer with {CLIENTS} clients writing every 5 ms ...", flush=True)
                results.append(exercise(lab, proxy, ports[name], name, kind))
        print()
        print(f"{'engine':9s} {'event':11s} {'writer':11s} {'outage':>9s} {'errors':>7s}  {'ended on':9s} what the clients saw")
        for r in results:
            print(f"{r['engine']:9s} {r['event']:11s} {r['from'] + '->' + r['to']:11s} {r['outage_ms']:>6d} ms "
                  f"{r['errors']:>7d}  {r['ended_on']:9s} {r['error_kinds'][0] if r['error_kinds'] else 'no errors'}")
            for more in r['error_kinds'][1:3]:
                print(f"{'':62s} {more}")
        print(f"\nrepoint's log: {cfg}.log")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        if args.keep:
            print(f"demo: left running (repoint pid {proxy.proc.pid}, admin http://127.0.0.1:{admin}/status); "
                  f"stop with: kill {proxy.proc.pid}; scripts/lab down --dir {lab.dir}")
            return
    finally:
        if not args.keep:
            if proxy is not None:
                proxy.stop()
            lab.down()


if __name__ == "__main__":
    main()
