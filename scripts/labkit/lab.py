"""The Lab: real Postgres / MariaDB / Redis clusters on loopback, with failover drills.

    from labkit import Lab
    with Lab("/tmp/mylab") as lab:
        lab.up(["postgres", "redis"])
        print(lab.roles("postgres"))
        r = lab.switchover("postgres")      # {'steps': {...}, 'promoted_at': ..., ...}
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import sys
import threading
import time

from .base import Steps
from .mariadb import MariaDB
from .pg import Postgres
from .procs import LabError, RunAs, find_procs, free_port, in_parallel, is_root, kill_hard, port_is_free
from .rediseng import Redis

ENGINES = {"postgres": Postgres, "mysql": MariaDB, "redis": Redis}
ALIASES = {"pg": "postgres", "postgresql": "postgres", "mariadb": "mysql", "my": "mysql", "rd": "redis"}
ALL_ENGINES = ("postgres", "mysql", "redis")
ALL_PROC_NAMES = tuple(n for cls in ENGINES.values() for n in cls.proc_names) + (
    "pg_basebackup", "pg_rewind", "initdb", "mariadb-install-db", "mysql_install_db")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_dir():
    return os.environ.get("REPOINT_LAB_DIR") or os.path.join(REPO, ".lab")


def engine_name(name):
    n = ALIASES.get(name, name)
    if n not in ENGINES:
        raise LabError("unknown engine %r (choose from %s)" % (name, ", ".join(ALL_ENGINES)))
    return n


class Node:
    """A server of the lab. Attributes are read live from the lab's state."""

    def __init__(self, lab, engine, name):
        self._lab, self.engine, self.name = lab, engine, name

    @property
    def st(self):
        return self._lab._node_state(self.engine, self.name)

    host = property(lambda self: self.st["host"])
    port = property(lambda self: self.st["port"])
    pid = property(lambda self: self.st.get("pid"))
    dir = property(lambda self: self.st["dir"])
    log = property(lambda self: self.st["log"])
    sock = property(lambda self: self.st.get("sock"))
    sockdir = property(lambda self: self.st.get("sockdir"))
    addr = property(lambda self: "%s:%d" % (self.host, self.port))
    tls_ca = property(lambda self: (self._lab.tls or {}).get("ca"))   # the CA to verify it with (a TLS lab)

    def alive(self):
        return self._lab._engine(self.engine).alive(self)

    def role(self):
        return self._lab._engine(self.engine).safe_role(self)

    def connect(self, **kw):
        return self._lab.connect(self.engine, self, **kw)

    def __repr__(self):
        return "<Node %s %s %s pid=%s>" % (self.engine, self.name, self.addr, self.pid)


class Lab:
    def __init__(self, dir=None, base_port=None, stop_timeout=10.0, tls=False):
        """tls: `up` makes a TLS-only lab (as up(tls=True)); a lab already made keeps what it was made with."""
        self.dir = os.path.abspath(dir or default_dir())
        self.base_port = base_port
        self.want_tls = tls
        self.stop_timeout = stop_timeout
        self.state_path = os.path.join(self.dir, "state.json")
        self._mutex = threading.RLock()     # state mutations / saves (also from worker threads)
        self._oplock = threading.RLock()    # one public operation at a time (re-entrant)
        self._depth = 0
        self._lockf = None
        self._engines = {}
        self.state = self._load()

    # ---- context manager ------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()

    # ---- state ----------------------------------------------------------------------------------
    def _load(self):
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {"dir": self.dir, "engines": {}}
        except ValueError as exc:   # `down` still cleans up by scanning the dir
            return {"dir": self.dir, "engines": {}, "corrupt": "%s: %s" % (self.state_path, exc)}

    def _save(self):
        with self._mutex:
            os.makedirs(self.dir, exist_ok=True)
            tmp = self.state_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.state, f, indent=2, sort_keys=True)
            os.replace(tmp, self.state_path)

    @contextlib.contextmanager
    def _op(self):
        """Serialise mutating operations (flock on DIR/.lock, re-entrant) and persist state after."""
        with self._oplock:
            if self._depth == 0:
                os.makedirs(self.dir, exist_ok=True)
                self._lockf = open(os.path.join(self.dir, ".lock"), "w")
                fcntl.flock(self._lockf, fcntl.LOCK_EX)
                self.state = self._load()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    try:
                        if os.path.isdir(self.dir) and (self.state.get("engines") or os.path.exists(self.state_path)):
                            self._save()
                    finally:
                        self._lockf.close()
                        self._lockf = None

    def _refresh(self):
        if self._depth == 0:
            self.state = self._load()

    def _node_state(self, engine, name):
        try:
            return self.state["engines"][engine]["nodes"][name]
        except KeyError:
            raise LabError("no node %r in engine %s (lab in %s)" % (name, engine, self.dir)) from None

    def _set_node(self, node, **kw):
        with self._mutex:
            node.st.update(kw)
            self._save()

    def _engine(self, engine):
        engine = engine_name(engine)
        if engine not in self._engines:
            self._engines[engine] = ENGINES[engine](self)
        return self._engines[engine]

    def _estate(self, engine):
        engine = engine_name(engine)
        try:
            return self.state["engines"][engine]
        except KeyError:
            raise LabError("%s is not up in the lab at %s (run `lab up --engines %s`)"
                           % (engine, self.dir, engine)) from None

    # ---- queries --------------------------------------------------------------------------------
    def engines(self):
        self._refresh()
        return [e for e in ALL_ENGINES if e in self.state["engines"]]

    def nodes(self, engine):
        self._refresh()
        engine = engine_name(engine)
        return [Node(self, engine, n) for n in self._estate(engine)["order"]]

    def node(self, engine, name):
        if isinstance(name, Node):
            return name
        engine = engine_name(engine)
        self._node_state(engine, name)
        return Node(self, engine, name)

    def roles(self, engine):
        eng = self._engine(engine)
        return {n.name: eng.safe_role(n) for n in self.nodes(engine)}

    def primaries(self, engine):
        return [name for name, role in self.roles(engine).items() if role == "primary"]

    def primary(self, engine):
        """The Node reporting itself primary (the recorded one if several do); None if none does."""
        ps = self.primaries(engine)
        if not ps:
            return None
        recorded = self._estate(engine).get("primary")
        return self.node(engine, recorded if recorded in ps else ps[0])

    def replicas(self, engine):
        return [name for name, role in self.roles(engine).items() if role == "replica"]

    def status(self, engine=None):
        out = []
        for e in ([engine_name(engine)] if engine else self.engines()):
            eng = self._engine(e)
            nodes = self.nodes(e)
            by_port = {n.port: n.name for n in nodes}
            for n in nodes:
                role = eng.safe_role(n)
                upstream = None
                if role == "replica":
                    try:
                        port = eng.upstream_port(n)
                        upstream = by_port.get(port, port)
                    except Exception:  # noqa: BLE001
                        pass
                out.append({"engine": e, "name": n.name, "address": n.addr, "pid": n.pid,
                            "alive": n.alive(), "role": role, "upstream": upstream, "log": n.log,
                            "tls": bool(self.tls)})
        return out

    def env(self):
        self._refresh()
        return self.state

    def connect(self, engine, node, **kw):
        """A client connection (autocommit) to a node: psycopg2 / pymysql / redis.Redis."""
        return self._engine(engine).connect(self.node(engine, node), **kw)

    # ---- up / down ------------------------------------------------------------------------------
    @property
    def tls(self):
        """The lab's TLS ({ca, cert, key}: every node serves TLS only) or None."""
        return self.state.get("tls")

    def up(self, engines=ALL_ENGINES, redis_password=None, tls=None):
        """Start the requested engines; returns {engine: seconds, 'total': seconds}. tls: every server
        serves TLS only (a lab CA in DIR/tls), replication included; None: as Lab(tls=...) said, or as the
        engines already up are (a lab is TLS-only or not at all)."""
        if isinstance(engines, str):
            engines = engines.split(",")
        engines = [engine_name(e.strip()) for e in engines if e.strip()]
        t0 = time.monotonic()
        with self._op():
            present = [e for e in engines if e in self.state["engines"]]
            if present:
                alive = [n.name for e in present for n in self.nodes(e) if n.alive()]
                raise LabError("%s already up in %s (%s); run `lab down` first"
                               % (", ".join(present), self.dir,
                                  "running: " + " ".join(alive) if alive else "nothing running: stale state"))
            leftovers = find_procs(ALL_PROC_NAMES, self.dir)
            if leftovers and not self.state["engines"]:
                raise LabError("servers from an earlier lab still run in %s (pids %s); run `lab down` first"
                               % (self.dir, " ".join(map(str, leftovers))))
            os.makedirs(self.dir, exist_ok=True)
            if "postgres" in engines:
                self._make_traversable()
            if redis_password is not None:
                self.state["redis_password"] = redis_password
            self.state.setdefault("redis_password", None)
            have = bool(self.state.get("tls"))
            if self.state["engines"]:
                if tls is not None and bool(tls) != have:
                    raise LabError("the lab in %s is up %s TLS (%s): every engine of a lab is TLS-only or none is; "
                                   "run `lab down` first" % (self.dir, "with" if have else "without",
                                                            ", ".join(self.engines())))
            elif (self.want_tls if tls is None else tls):
                from .pki import lab_pki
                self.state["tls"] = lab_pki(os.path.join(self.dir, "tls"))
            else:
                self.state["tls"] = None
            self.state["root"] = is_root()
            ports = self._allocate_ports(engines)
            for e in engines:
                self._init_engine_state(e, ports[e])
            self._save()
            timings = {}

            def create(e):
                t = time.monotonic()
                self._engine(e).create(self.nodes(e))
                timings[e] = round(time.monotonic() - t, 2)
            errors = dict(in_parallel(create, engines))
            if errors:
                for e in engines:      # leave nothing half-up behind
                    self._destroy_engine(e, keep=False)
                self._save()
                raise LabError("up failed:\n" + "\n".join("[%s] %s" % (e, x) for e, x in errors.items()))
            timings["total"] = round(time.monotonic() - t0, 2)
            return timings

    def _make_traversable(self):
        """As root, the postgres user must be able to reach its data dirs below self.dir."""
        if not is_root():
            return
        pg = RunAs("postgres")
        p = self.dir
        while True:
            st = os.stat(p)
            ok = (st.st_mode & stat.S_IXOTH) or st.st_uid == pg.uid or (st.st_gid == pg.gid and st.st_mode & stat.S_IXGRP)
            if not ok:
                os.chmod(p, st.st_mode | stat.S_IXOTH)
            if p == "/":
                break
            p = os.path.dirname(p)

    def _allocate_ports(self, engines):
        used = {n["port"] for e in self.state["engines"].values() for n in e["nodes"].values()}
        ports = {}
        for e in engines:
            cls = ENGINES[e]
            ports[e] = []
            for i in range(cls.count):
                if self.base_port:
                    port = self.base_port + cls.port_offset + i
                    if not port_is_free(port):
                        raise LabError("port %d (for %s%d) is in use; choose another --base-port"
                                       % (port, cls.prefix, i + 1))
                else:
                    port = free_port()
                    while port in used:
                        port = free_port()
                used.add(port)
                ports[e].append(port)
        return ports

    def _sock_path(self, node_dir, name, suffix):
        """Unix socket paths are limited to ~107 bytes: fall back to a short dir under /tmp."""
        if len(os.path.join(node_dir, suffix)) < 100:
            return node_dir
        h = hashlib.sha1(self.dir.encode()).hexdigest()[:10]
        return os.path.join("/tmp", "rlab-" + h, name)

    def _init_engine_state(self, e, ports):
        cls = ENGINES[e]
        nodes, order = {}, []
        for i, port in enumerate(ports):
            name = "%s%d" % (cls.prefix, i + 1)
            d = os.path.join(self.dir, name)
            st = {"name": name, "host": "127.0.0.1", "port": port, "pid": None, "dir": d,
                  "log": os.path.join(self.dir, name + ".log"), "server_id": i + 1,
                  "role": "primary" if i == 0 else "replica", "upstream": None if i == 0 else cls.prefix + "1"}
            if e == "postgres":   # not in the data dir: pg_rewind would try to copy the socket file
                st["sockdir"] = self._sock_path(os.path.join(self.dir, "sock", name), name, ".s.PGSQL.65535")
            elif e == "mysql":
                st["sock"] = os.path.join(self._sock_path(d, name, "sock"), "sock")
            nodes[name] = st
            order.append(name)
        self.state["engines"][e] = {"primary": order[0], "nodes": nodes, "order": order}
        for st in nodes.values():
            sd = st.get("sockdir") or (os.path.dirname(st["sock"]) if st.get("sock") else None)
            if sd and sd != st["dir"]:
                os.makedirs(os.path.dirname(sd), mode=0o755, exist_ok=True)
                (RunAs("postgres") if e == "postgres" else RunAs()).mkdir(sd, 0o700)

    def down(self, keep=False):
        """Stop every server of the lab (graceful, then SIGKILL); remove the data unless keep."""
        with self._op():
            self._aws_teardown(keep)
            for e in list(self.state["engines"]):
                self._destroy_engine(e, keep)
            from . import iam
            iam.remove_pam(self.dir)    # a TLS lab's PAM service for IAM logins: always (--keep too)
            # Anything else still running from this dir (crashed ups, lost pids...): kill it.
            left = find_procs(ALL_PROC_NAMES, self.dir)
            for pid in left:
                kill_hard(pid, ALL_PROC_NAMES, self.dir)
            if not keep:
                for f in ("state.json", "repoint.ini", "state.json.tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.dir, f))
                self.state = {"dir": self.dir, "engines": {}}
                for cls in ENGINES.values():     # also what a lost/corrupt state.json no longer lists
                    for i in range(cls.count):
                        name = "%s%d" % (cls.prefix, i + 1)
                        shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(self.dir, name + ".log"))
                shutil.rmtree(os.path.join(self.dir, "sock"), ignore_errors=True)
                shutil.rmtree(os.path.join(self.dir, "tmp"), ignore_errors=True)
                shutil.rmtree(os.path.join(self.dir, "tls"), ignore_errors=True)
                shutil.rmtree(os.path.join(self.dir, "iam"), ignore_errors=True)
                h = hashlib.sha1(self.dir.encode()).hexdigest()[:10]
                shutil.rmtree(os.path.join("/tmp", "rlab-" + h), ignore_errors=True)
        if not keep:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.dir, ".lock"))
            with contextlib.suppress(OSError):
                os.rmdir(self.dir)
        return left

    def _destroy_engine(self, e, keep):
        if e not in self.state["engines"]:
            return
        eng = self._engine(e)
        nodes = self.nodes(e)
        # a node that does not stop gracefully is killed just below
        in_parallel(lambda n: eng.stop(n, self.stop_timeout), nodes)
        for n in nodes:
            kill_hard(n.pid, eng.proc_names, n.dir)
        if keep:
            for n in nodes:
                n.st["pid"] = None
            return
        for n in nodes:
            shutil.rmtree(n.dir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(n.log)
        eng.destroy(nodes)
        del self.state["engines"][e]

    # ---- failover drills ------------------------------------------------------------------------
    def _require_alive(self, engine, name):
        n = self.node(engine, name)
        if not n.alive():
            raise LabError("%s is not running (pid %s)" % (n.name, n.pid))
        return n

    def _set_roles(self, engine, primary, followers):
        es = self._estate(engine)
        es["primary"] = primary.name
        primary.st.update(role="primary", upstream=None)
        for f in followers:
            f.st.update(role="replica", upstream=primary.name)
        self._save()

    def _current_primary(self, engine):
        p = self.primary(engine)
        if p is None:
            raise LabError("%s has no live primary (roles: %s); promote one first"
                           % (engine, self.roles(engine)))
        return p

    def _report(self, engine, action, steps, **kw):
        d = {"engine": engine, "action": action, "steps": steps.steps, "total_ms": steps.total_ms(),
             "promoted_at": steps.promoted_at}
        d.update(kw)
        return d

    def switchover(self, engine, to=None):
        """Planned switchover to `to` (default: first live replica); old primary rejoins as replica."""
        engine = engine_name(engine)
        with self._op():
            eng = self._engine(engine)
            roles = self.roles(engine)
            old = self._current_primary(engine)
            if len(self.primaries(engine)) > 1:
                raise LabError("%s has several primaries (%s): use `lab repoint` first" % (engine, roles))
            replicas = [n for n in self.nodes(engine) if roles[n.name] == "replica"]
            if to is None:
                if not replicas:
                    raise LabError("%s has no live replica to switch over to" % engine)
                new = replicas[0]
            else:
                new = self.node(engine, to)
                if roles.get(new.name) != "replica":
                    raise LabError("%s is not a live replica (role: %s)" % (new.name, roles.get(new.name)))
            others = [n for n in replicas if n.name != new.name]
            steps = Steps()
            eng.switchover(old, new, others, steps)
            self._set_roles(engine, new, others + [old])
            with steps("verify"):
                eng.write_and_check(new, others + [old])
            return self._report(engine, "switchover", steps, **{"from": old.name, "to": new.name})

    def promote(self, engine, node):
        """Promote one node to primary, touching nothing else."""
        engine = engine_name(engine)
        with self._op():
            n = self._require_alive(engine, node)
            steps = Steps()
            with steps("promote"):
                self._engine(engine).promote(n, steps)
            self._estate(engine)["primary"] = n.name
            n.st.update(role="primary", upstream=None)
            return self._report(engine, "promote", steps, node=n.name)

    def repoint(self, engine, primary=None):
        """Make every other live node a replica of primary (default: the current/recorded primary)."""
        engine = engine_name(engine)
        with self._op():
            eng = self._engine(engine)
            if primary is None:
                ps = self.primaries(engine)
                recorded = self._estate(engine).get("primary")
                if not ps:
                    raise LabError("%s has no live primary; promote one first" % engine)
                primary = recorded if recorded in ps else ps[0]
            p = self._require_alive(engine, primary)
            if eng.role(p) != "primary":
                raise LabError("%s is not a primary; promote it first" % p.name)
            steps = Steps()
            followers, skipped, writers = [], [], []
            for n in self.nodes(engine):
                if n.name == p.name:
                    continue
                if not n.alive():
                    skipped.append(n.name)
                elif eng.safe_role(n) == "primary":
                    writers.append(n)
                else:
                    followers.append(n)
            # replicas first, then demote other writers (their last WAL/writes must not reach the replicas)
            for n in followers + writers:
                eng.make_replica(n, p, steps)
            followers += writers
            self._set_roles(engine, p, followers)
            with steps("verify"):
                eng.write_and_check(p, followers)
            return self._report(engine, "repoint", steps, primary=p.name,
                                replicas=[f.name for f in followers], skipped=skipped)

    def crash(self, engine, node):
        """kill -9 a server (and its whole process group)."""
        engine = engine_name(engine)
        with self._op():
            n = self.node(engine, node)
            if not n.alive():
                raise LabError("%s is not running" % n.name)
            t = time.time()
            self._engine(engine).crash(n)
            return {"engine": engine, "action": "crash", "node": n.name, "crashed_at": t}

    def stop(self, engine, node):
        """Graceful stop of one server."""
        engine = engine_name(engine)
        with self._op():
            n = self.node(engine, node)
            self._engine(engine).stop(n, self.stop_timeout)
            return {"engine": engine, "action": "stop", "node": n.name}

    def restart(self, engine, node, as_replica=False):
        """Start a stopped/crashed node: as it was, or (as_replica) as a replica of the current primary."""
        engine = engine_name(engine)
        with self._op():
            eng = self._engine(engine)
            n = self.node(engine, node)
            if n.alive():
                raise LabError("%s is already running (pid %s)" % (n.name, n.pid))
            kill_hard(n.pid, eng.proc_names, n.dir)      # leftovers of a crash (e.g. postgres children)
            steps = Steps()
            if as_replica:
                p = self._current_primary(engine)
                with steps("rejoin"):
                    eng.rejoin(n, p, steps)
                n.st.update(role="replica", upstream=p.name)
                with steps("verify"):
                    eng.write_and_check(p, [n])
            else:
                with steps("start"):
                    eng.start(n)
            return self._report(engine, "restart", steps, node=n.name, role=eng.safe_role(n))

    def verify(self, engine, timeout=15.0):
        """Write on the primary and wait until every live replica sees it."""
        engine = engine_name(engine)
        eng = self._engine(engine)
        p = self._current_primary(engine)
        reps = [self.node(engine, r) for r in self.replicas(engine)]
        eng.write_and_check(p, reps, timeout)
        return {"primary": p.name, "replicas": [r.name for r in reps]}

    # ---- repoint config -------------------------------------------------------------------------
    SERVICE_DEFAULTS = (("route", "writer"), ("probe_interval", "100ms"), ("probe_timeout", "1s"))
    SERVICE_TAIL = (("hold_timeout", "30s"), ("drain", "graceful"), ("drain_timeout", "5s"))

    def write_config(self, path=None, admin=None, engines=None, log_level="info", log_format="text", **overrides):
        """Write a repoint INI for the running lab; returns {engine: listen port, ..., 'admin': port}.

        overrides: key=value applied to every service (value None drops the key), or
        ENGINE={key: value} for one service (e.g. redis={"hold_timeout": "2s"}).
        """
        self._refresh()
        path = path or os.path.join(self.dir, "repoint.ini")
        engines = [engine_name(e) for e in (engines or self.engines())]
        if not engines:
            raise LabError("nothing is up in %s" % self.dir)
        if admin is None:
            admin = "127.0.0.1:%d" % free_port()
        elif isinstance(admin, int):
            admin = "127.0.0.1:%d" % admin
        ports = {"admin": int(admin.rsplit(":", 1)[1])}  # a service never gets the admin's port
        lines = ["[repoint]", "admin = %s" % admin, "log_level = %s" % log_level, "log_format = %s" % log_format, ""]
        per_engine = {e: overrides.pop(e) for e in list(overrides) if e in ENGINES}
        for e in engines:
            eng = self._engine(e)
            port = free_port()
            while port in ports.values():
                port = free_port()
            ports[e] = port
            kv = [("protocol", e), ("listen", "127.0.0.1:%d" % port)]
            kv += [self.SERVICE_DEFAULTS[0]]
            kv += [("members", ", ".join(n.addr for n in self.nodes(e)))]
            kv += list(self.SERVICE_DEFAULTS[1:])
            kv += list(eng.service_config().items())
            if self.tls:
                kv += [("tls", "verify-full"), ("tls_ca_file", self.tls["ca"])]
            kv += list(self.SERVICE_TAIL)
            d = dict(kv)
            for k, v in list(overrides.items()) + list(per_engine.get(e, {}).items()):
                d[k] = v
            lines.append("[service %s]" % e)
            lines += ["%s = %s" % (k, "" if v is None else v) if v != "" else "%s =" % k
                      for k, v in d.items() if v is not None]
            lines.append("")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write("\n".join(lines))
        with self._op():
            self.state["config"] = {"path": os.path.abspath(path), "admin": admin,
                                    "services": {e: ports[e] for e in engines}}
        return ports

    # ---- AWS control-plane emulator (labkit.awsemu) -----------------------------------------------
    def _aws_teardown(self, keep=False):
        """The emulator and its Redis nodes go down with the lab."""
        from .awsemu import control
        try:
            if self.state.get("aws") or os.path.isdir(os.path.join(self.dir, "aws")):
                control.down(self, remove=not keep)
            else:
                for pid in control.find_emulators(self.dir):
                    control._stop_pid(pid)
        except Exception as exc:  # noqa: BLE001 - never keep the rest of the lab up; the sweep below kills leftovers
            print("lab down: stopping the AWS emulator: %s" % exc, file=sys.stderr)
            self.state.pop("aws", None)
            if not keep:
                shutil.rmtree(os.path.join(self.dir, "aws"), ignore_errors=True)

    def iam_configure(self, **changes):
        """A TLS lab's IAM token checker (Postgres roles iam_app and iam_probe, MariaDB user iam_probe):
        region, credentials, skew_s (seconds added to its clock)."""
        from . import iam
        iam.configure(self.dir, **changes)

    def pg_auth_file(self, path):
        """A TLS lab's auth_file for repoint: role scram_app (password lab-scram-password) with the SCRAM
        verifier Postgres stores; returns path."""
        return self._engine("postgres").auth_file(path)

    def mysql_auth_file(self, path):
        """An auth_file for repoint: user test with the mysql_native_password hash MariaDB keeps (no
        password); returns path."""
        return self._engine("mysql").auth_file(path)

    def iam_log(self):
        """The checker's decisions so far, one line each ("... accepted|refused ROLE port=P ...: why")."""
        from . import iam
        return iam.log(self.dir)

    def aws_up(self, port=None, delays=None, config=None, quiet=True):
        """Start the AWS emulator (detached) and its own Redis nodes; returns the endpoint URL.

        delays: {"promote": s, "settle": s} or per service {"rds": {...}, "elasticache": ...,
        "global": ..., "memorydb": ...}; config: {test_failover_limit, max_page_size, strict_regions,
        credentials, region}. Models and ids: labkit/awsemu/models.py.
        """
        from .awsemu import control
        return control.up(self, port=port, delays=delays, config=config, quiet=quiet)

    def aws_down(self):
        """Stop the emulator and its Redis nodes; returns the emulator pids stopped."""
        from .awsemu import control
        return control.down(self)

    def aws_url(self):
        from .awsemu import control
        return control.url(self)

    def aws_env(self, temporary=False):
        """{AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_REGION, AWS_ENDPOINT_URL,
        AWS_EC2_METADATA_DISABLED[, AWS_SESSION_TOKEN]} for the aws CLI, botocore and repoint."""
        from .awsemu import control
        return control.env(self, temporary=temporary)

    def aws_api(self, method, path, data=None, timeout=30.0):
        """The emulator's control API (/_lab/...), JSON in and out."""
        from .awsemu import control
        return control.call(self, method, path, data, timeout=timeout)

    def aws_fault(self, action="*", kind="throttle", count=1, delay_ms=None, service=None, code=None,
                  status=None, message=None):
        """Inject a fault into the next `count` matching API calls (-1: until aws_faults_clear)."""
        f = {"action": action, "kind": kind, "count": count, "delay_ms": delay_ms, "service": service,
             "code": code, "status": status, "message": message}
        return self.aws_api("POST", "/_lab/faults", {k: v for k, v in f.items() if v is not None})["faults"][0]

    def aws_faults_clear(self):
        return self.aws_api("DELETE", "/_lab/faults")["deleted"]

    def aws_calls(self, action=None, service=None, since=0):
        """Every API call received: [{seq, time, service, action, params, region, status, error, fault...}]."""
        import urllib.parse
        q = urllib.parse.urlencode({k: v for k, v in (("action", action), ("service", service),
                                                      ("since", since)) if v})
        return self.aws_api("GET", "/_lab/calls" + ("?" + q if q else ""))["calls"]

    def aws_calls_clear(self):
        return self.aws_api("DELETE", "/_lab/calls")["seq"]

    def aws_delays(self, **delays):
        """aws_delays(promote=0.2, settle=0.1) or aws_delays(rds={"promote": 2}); returns all delays."""
        return self.aws_api("POST", "/_lab/delays", delays)

    def aws_configure(self, **cfg):
        """test_failover_limit, max_page_size, strict_regions, reset_quota, delays."""
        return self.aws_api("POST", "/_lab/config", cfg)

    def aws_state(self):
        """Config, failover operations (with timings), faults, and the models' ids -> lab nodes."""
        return self.aws_api("GET", "/_lab/state")

    def aws_wait_idle(self, timeout=30.0):
        """Wait until no emulated failover is under way; True if so within timeout."""
        import urllib.parse
        try:
            return self.aws_api("POST", "/_lab/wait-idle?" + urllib.parse.urlencode({"timeout": timeout}),
                                timeout=timeout + 5)["idle"]
        except LabError:
            return False

    def aws_nodes(self):
        """The emulator's own Redis servers (gd1..gd4, mdb1..mdb4) as Node-like objects."""
        from .awsemu import nodes
        self._refresh()
        return nodes.nodes(self)

    def aws_node(self, name):
        from .awsemu import nodes
        self._refresh()
        return nodes.node(self, name)

    def aws_role(self, name):
        """'primary' | 'replica' | 'down' as an emulator Redis node reports it."""
        from .awsemu import nodes
        self._refresh()
        return nodes.engine(self).safe_role(nodes.node(self, name))

    def write_aws_config(self, path=None, admin=None, services=None, **kw):
        """A repoint INI following the emulated clusters ([aws] endpoint_url, `source =` services);
        see labkit.awsemu.control.write_config. Returns {service: port, 'admin': port}."""
        from .awsemu import control
        return control.write_config(self, path, admin=admin, services=services, **kw)
