"""The emulator's own Redis servers (Global Datastore and MemoryDB models), kept in the lab's state.

    state["aws"]["nodes"][name] = {name, host, port, pid, dir, log, role, upstream}

They are started like the lab's Redis (labkit.rediseng.Redis, same password) and live in
DIR/aws/<name>; `lab down` / `lab aws down` stops them.
"""

import os
import shutil
import threading

from ..procs import LabError, free_port, kill_hard
from ..rediseng import Redis

# name -> the node it replicates from at creation (None: a primary)
TOPOLOGY = (
    ("gd1", None), ("gd2", "gd1"),       # Global Datastore, primary group (us-east-1)
    ("gd3", "gd1"), ("gd4", "gd3"),      # secondary group (us-west-2): its primary follows gd1
    ("mdb1", None), ("mdb2", "mdb1"),    # MemoryDB shard 0001
    ("mdb3", None), ("mdb4", "mdb3"),    # MemoryDB shard 0002
)
NAMES = tuple(n for n, _ in TOPOLOGY)


def aws_dir(lab):
    return os.path.join(lab.dir, "aws")


class AwsNode:
    """An emulator-owned Redis server; the same attributes as labkit.lab.Node."""

    engine = "redis"

    def __init__(self, lab, name):
        self._lab, self.name = lab, name

    @property
    def st(self):
        try:
            return self._lab.state["aws"]["nodes"][self.name]
        except KeyError:
            raise LabError("no emulator node %r (run `lab aws up`)" % self.name) from None

    host = property(lambda self: self.st["host"])
    port = property(lambda self: self.st["port"])
    pid = property(lambda self: self.st.get("pid"))
    dir = property(lambda self: self.st["dir"])
    log = property(lambda self: self.st["log"])
    addr = property(lambda self: "%s:%d" % (self.host, self.port))

    def __repr__(self):
        return "<AwsNode %s %s pid=%s>" % (self.name, self.addr, self.pid)


class AwsRedis(Redis):
    """The lab's Redis engine driving the emulator's nodes (no lab engine state behind them)."""

    def start(self, node, as_replica_of=None):
        self._start_proc(node, as_replica_of)


def engine(lab):
    return AwsRedis(lab)


def nodes(lab):
    return [AwsNode(lab, n) for n in NAMES if n in lab.state.get("aws", {}).get("nodes", {})]


def node(lab, name):
    return AwsNode(lab, name)


def start_all(lab):
    """Create and start every node (call inside lab._op()); returns when all replicate."""
    st = lab.state.setdefault("aws", {})
    base = aws_dir(lab)
    os.makedirs(base, exist_ok=True)
    used = {n["port"] for e in lab.state.get("engines", {}).values() for n in e["nodes"].values()}
    nd = {}
    for name, up in TOPOLOGY:
        port = free_port()
        while port in used:
            port = free_port()
        used.add(port)
        d = os.path.join(base, name)
        os.makedirs(d, exist_ok=True)
        nd[name] = {"name": name, "host": "127.0.0.1", "port": port, "pid": None, "dir": d,
                    "log": os.path.join(base, name + ".log"),
                    "role": "primary" if up is None else "replica", "upstream": up}
    st["nodes"] = nd
    lab._save()
    eng = engine(lab)
    errors = []

    def start(names):
        try:
            for name in names:
                up = dict(TOPOLOGY)[name]
                eng._start_proc(AwsNode(lab, name), AwsNode(lab, up) if up else None)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    # each chain in order (a replica needs its upstream); chains in parallel
    chains = [["gd1", "gd2", "gd3", "gd4"], ["mdb1", "mdb2"], ["mdb3", "mdb4"]]
    threads = [threading.Thread(target=start, args=(c,)) for c in chains]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        stop_all(lab)
        raise LabError("emulator redis nodes failed to start: %s" % errors[0])


def stop_all(lab, remove=True):
    """Stop every emulator node (graceful, then SIGKILL); remove their data unless not remove."""
    aws = lab.state.get("aws") or {}
    eng = engine(lab)
    ns = [AwsNode(lab, n) for n in aws.get("nodes", {})]
    threads = [threading.Thread(target=eng.stop, args=(n, 5.0)) for n in ns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in ns:
        kill_hard(n.pid, eng.proc_names, n.dir)
        n.st["pid"] = None
    if remove:
        for n in ns:
            shutil.rmtree(n.dir, ignore_errors=True)
            try:
                os.unlink(n.log)
            except OSError:
                pass
        aws.pop("nodes", None)
