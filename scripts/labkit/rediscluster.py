"""A real Redis Cluster on loopback (issue 12): `shards` primaries with `replicas` replicas each, made by
`redis-cli --cluster create`, with the drills a proxy in front of it has to survive -- a planned
switchover (CLUSTER FAILOVER), a crash (SIGKILL; the cluster elects the replica), the crashed node's
restart (it rejoins as a replica) and a reshard (redis-cli --cluster reshard). Every operation returns
only once every live node reports the same healthy cluster: cluster_state:ok, all slots served, the
same CLUSTER SLOTS everywhere, no slot half-migrated, each replica's link up and the primary streaming
to it -- and then a whole gossip round later (every node has had a PONG from every other one since),
so the next drill never starts on a node still acting on older news. (Without that round, a
CLUSTER FAILOVER right after a reshard left the new primary, about once in 60 tries, without the last
slot moved, while every other node gave that slot to it: cluster_state:fail for good.)

    from labkit.rediscluster import RedisCluster
    with RedisCluster("/tmp/rc") as rc:          # start() ... stop()
        old, new = rc.switchover(0)

Shards are numbered once, when the cluster is made, by their first slot (shard 0 serves slot 0); a shard
is its nodes (a primary and its replicas), whichever of them is primary now, whatever slots it has now.
"""

import atexit
import binascii
import os
import random
import shutil
import tempfile
import time

from .procs import LabError, kill_hard, log_tail, pid_alive, port_is_free, run, spawn, wait_until

SLOTS = 16384
BUS_OFFSET = 10000          # the cluster bus listens on port + 10000
PROC_NAMES = ("redis-server",)
MF_RETRY_S = 6.0            # a manual failover not done by then was aborted (CLUSTER_MF_TIMEOUT is 5 s): ask again


def slot_of(key):
    """The hash slot of a key (str or bytes), as Redis computes it (CRC16/XMODEM of the key or its {tag})."""
    if isinstance(key, str):
        key = key.encode()
    start = key.find(b"{")
    if start > -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return binascii.crc_hqx(key, 0) % SLOTS


def keys_for_slots(slots, prefix="k"):
    """{slot: a key "PREFIX:N" in that slot} for every slot asked for."""
    want, found, n = set(slots), {}, 0
    if any(not 0 <= x < SLOTS for x in want):
        raise LabError("slots are 0..%d: %s" % (SLOTS - 1, sorted(x for x in want if not 0 <= x < SLOTS)[:5]))
    while len(found) < len(want):
        k = "%s:%d" % (prefix, n)
        s = slot_of(k)
        if s in want and s not in found:
            found[s] = k
        n += 1
    return found


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class _Node:
    def __init__(self, index, dir):
        self.index, self.dir = index, dir
        self.port = self.pid = self.id = None
        self.log = os.path.join(dir, "redis.log")
        self.conf = os.path.join(dir, "nodes.conf")

    def __repr__(self):
        return "<cluster node %d :%s pid=%s>" % (self.index, self.port, self.pid)


class RedisCluster:
    def __init__(self, workdir=None, shards=3, replicas=1, node_timeout_ms=1000, host="127.0.0.1",
                 redis_server="/usr/bin/redis-server", redis_cli="/usr/bin/redis-cli"):
        """workdir: where the nodes keep nodes.conf and their logs (None: a temporary directory, removed
        by stop())."""
        if shards < 3 or replicas < 0:
            raise LabError("redis-cli --cluster create makes clusters of 3 shards or more (asked: %d)" % shards)
        self._own_dir = workdir is None
        self.workdir = os.path.abspath(workdir) if workdir else tempfile.mkdtemp(prefix="repoint-rcluster-")
        self.nshards, self.nreplicas, self.node_timeout_ms = shards, replicas, node_timeout_ms
        self.host, self.redis_server, self.redis_cli = host, redis_server, redis_cli
        self._nodes = []
        self._shards = None         # [[_Node, ...]] per shard, fixed when the cluster is made
        self._clients = {}
        self._why = ""              # what the last health check found wrong (for timeout messages)
        self._elected = {}          # port -> when we saw it win an election (monotonic)
        self._atexit = False

    # ---- context manager ------------------------------------------------------------------------
    def __enter__(self):
        if not self._nodes:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- processes ------------------------------------------------------------------------------
    def _pick_ports(self, count):
        """Ports nobody listens on, whose bus port (+10000) is free too. Taken below the kernel's
        ephemeral range, so no client socket's local port can take one while a node is down."""
        taken = {p for n in self._nodes if n.port for p in (n.port, n.port + BUS_OFFSET)}
        hi = min(_ephemeral_low(), 65536) - BUS_OFFSET
        lo = max(1024, hi - 10000)
        rnd = random.SystemRandom()
        out = []
        for _ in range(5000):
            if len(out) == count:
                return out
            p = rnd.randrange(lo, hi) if hi - lo > 200 else rnd.randrange(1024, 65536 - BUS_OFFSET)
            if p in taken or p + BUS_OFFSET in taken:
                continue
            if port_is_free(p, self.host) and port_is_free(p + BUS_OFFSET, self.host):
                out.append(p)
                taken.update((p, p + BUS_OFFSET))
        raise LabError("found no %d free port pairs (port and port+%d) on %s" % (count, BUS_OFFSET, self.host))

    def _launch(self, n):
        cmd = [self.redis_server, "--port", str(n.port), "--bind", self.host, "--daemonize", "no",
               "--dir", n.dir, "--logfile", n.log, "--loglevel", "notice",
               "--save", "", "--appendonly", "no", "--dbfilename", "dump.rdb", "--repl-diskless-sync", "no",
               "--cluster-enabled", "yes", "--cluster-config-file", n.conf,
               "--cluster-node-timeout", str(self.node_timeout_ms),
               # a replica may always be elected, however long it has not heard from its primary
               "--cluster-replica-validity-factor", "0",
               # replicas stay in their shard (a shard is its nodes, for the whole life of the cluster)
               "--cluster-allow-replica-migration", "no"]
        n.log_mark = os.path.getsize(n.log) if os.path.exists(n.log) else 0
        n.pid = spawn(cmd, n.log, cwd=n.dir)

    def _new_log(self, n):
        try:
            with open(n.log, "rb") as f:
                f.seek(getattr(n, "log_mark", 0))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _alive(self, n):
        return pid_alive(n.pid, PROC_NAMES, n.dir)

    def _wait_up(self, n, timeout=20.0):
        """PING answered; False if the node exited because its port or bus port was taken."""
        def cond():
            if not self._alive(n):
                if "Address already in use" in self._new_log(n):
                    return "port-taken"
                raise LabError("redis-server :%d (pid %s) exited while starting\n%s"
                               % (n.port, n.pid, log_tail(n.log)))
            return self._r(n.port, "PING") is True or "up"
        return wait_until(cond, timeout, "redis-server :%d to answer" % n.port,
                          detail=lambda: log_tail(n.log)) != "port-taken"

    def _kill(self, n):
        kill_hard(n.pid, PROC_NAMES, n.dir)
        self._drop_client(n.port)

    # ---- connections ----------------------------------------------------------------------------
    def client(self, port, **kw):
        """A plain redis.Redis to one node (decoded replies); the caller closes it."""
        import redis
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 3)
        kw.setdefault("socket_connect_timeout", 3)
        return redis.Redis(host=self.host, port=port, **kw)

    def _r(self, port, *args):
        c = self._clients.get(port)
        if c is None:
            c = self._clients[port] = self.client(port, socket_timeout=2, socket_connect_timeout=2)
        return c.execute_command(*args)   # "CLUSTER", "SLOTS" as two words: redis-py's raw reply

    def _drop_client(self, port):
        c = self._clients.pop(port, None)
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout=60.0):
        """Start the nodes, make the cluster, return (self) once it is healthy everywhere."""
        if self._nodes:
            raise LabError("this cluster was already started (in %s)" % self.workdir)
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        total = self.nshards * (1 + self.nreplicas)
        os.makedirs(self.workdir, exist_ok=True)
        for i in range(total):
            d = os.path.join(self.workdir, "node%d" % i)
            os.makedirs(d, exist_ok=True)
            self._nodes.append(_Node(i, d))
        try:
            pending = list(self._nodes)
            for _ in range(5):
                for n, p in zip(pending, self._pick_ports(len(pending))):
                    n.port = p
                    for f in (n.conf, os.path.join(n.dir, "dump.rdb")):
                        if os.path.exists(f):
                            os.unlink(f)
                    self._launch(n)
                pending = [n for n in pending if not self._wait_up(n)]
                if not pending:
                    break
                for n in pending:         # someone took the port (or port+10000) meanwhile: other ports
                    self._kill(n)
            if pending:
                raise LabError("redis-server could not bind its ports 5 times\n%s" % log_tail(pending[0].log))
            for n in self._nodes:
                n.id = self._r(n.port, "CLUSTER", "MYID")
            run([self.redis_cli, "--cluster", "create"] + ["%s:%d" % (self.host, n.port) for n in self._nodes]
                + ["--cluster-replicas", str(self.nreplicas), "--cluster-yes"], timeout=timeout,
                what="redis-cli --cluster create")
            wait_until(self._nudge, timeout, "every primary to take a write", interval=0.05, detail=self._detail)
            self._shards = wait_until(self._membership, timeout, "every node to see %d shards of %d nodes"
                                      % (self.nshards, 1 + self.nreplicas), interval=0.05,
                                      detail=self._detail)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _nudge(self):
        """One write (and its undo) on every primary: CLUSTER SLOTS lists a replica only once its
        replication offset is not 0, which on a cluster with no data takes the primary's first
        replication PING (repl-ping-replica-period, 10 s)."""
        for s, _e, owner, _r in self._any_map():
            k = keys_for_slots([s], "_lab:nudge")[s]
            self._r(owner, "SET", k, "1")
            self._r(owner, "DEL", k)
        return True

    def _membership(self):
        """The shards, once every node reports the same CLUSTER SLOTS naming every node once."""
        maps = set()
        for n in self._nodes:
            maps.add(self._slot_map(n.port))
        if len(maps) != 1:
            self._why = "nodes disagree on CLUSTER SLOTS"
            return None
        (m,) = maps
        by_port = {n.port: n for n in self._nodes}
        shards, first = {}, {}
        for start, _end, master, reps in m:
            first[master] = min(first.get(master, SLOTS), start)
            shards[master] = reps
        named = [p for master, reps in shards.items() for p in (master,) + reps]
        if (len(shards) != self.nshards or sorted(named) != sorted(by_port)
                or any(len(r) != self.nreplicas for r in shards.values())):
            self._why = "CLUSTER SLOTS names %d primaries and %s" % (len(shards), sorted(shards.values()))
            return None
        return [[by_port[p] for p in (master,) + shards[master]] for master in sorted(first, key=first.get)]

    def stop(self):
        """SIGKILL every node (no data to keep), wait until they are gone. Idempotent; never raises
        before it has tried every node."""
        errors = []
        for n in self._nodes:
            try:
                self._kill(n)
            except Exception as exc:  # noqa: BLE001 - the others still go
                errors.append("%r: %s" % (n, exc))
        for port in list(self._clients):
            self._drop_client(port)
        if errors:
            raise LabError("stopping the cluster in %s: %s" % (self.workdir, "; ".join(errors)))
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- what the nodes report ------------------------------------------------------------------
    def _slot_map(self, port):
        """CLUSTER SLOTS of one node: a sorted tuple of (start, end, primary port, (replica ports))."""
        out = []
        for r in self._r(port, "CLUSTER", "SLOTS"):
            out.append((int(r[0]), int(r[1]), int(r[2][1]), tuple(sorted(int(x[1]) for x in r[3:]))))
        return tuple(sorted(out))

    def _any_map(self):
        for n in self._nodes:
            if self._alive(n):
                try:
                    return self._slot_map(n.port)
                except Exception:  # noqa: BLE001 - the next one
                    continue
        raise LabError("no node of the cluster in %s answers" % self.workdir)

    def _role(self, port):
        return self._r(port, "ROLE")

    def _node(self, port):
        for n in self._nodes:
            if n.port == port:
                return n
        raise LabError("no node of the cluster listens on %s" % port)

    def _primary_node(self, i):
        """The live node of shard i that reports ROLE master (the one serving slots if two do)."""
        members = [n for n in self._shard(i) if self._alive(n)]
        masters = []
        for n in members:
            try:
                if self._role(n.port)[0] == "master":
                    masters.append(n)
            except Exception:  # noqa: BLE001 - not answering: not its primary
                pass
        if len(masters) > 1:
            owners = {m[2] for m in self._any_map()}
            masters = [n for n in masters if n.port in owners] or masters
        if not masters:
            raise LabError("shard %d has no live primary (nodes %s)" % (i, [n.port for n in self._shard(i)]))
        return masters[0]

    def _shard(self, i):
        if self._shards is None:
            raise LabError("the cluster is not started")
        if not 0 <= i < len(self._shards):
            raise LabError("no shard %r (the cluster has %d)" % (i, len(self._shards)))
        return self._shards[i]

    # ---- health ---------------------------------------------------------------------------------
    def problems(self):
        """What keeps the cluster from being healthy, as every live node reports it ([] when healthy)."""
        problems = []
        live = [n for n in self._nodes if self._alive(n)]
        views = {}
        for n in live:
            try:
                info = dict(line.split(":", 1) for line in self._r(n.port, "CLUSTER", "INFO").splitlines()
                            if ":" in line)
                views[n.port] = {"info": info, "map": self._slot_map(n.port), "role": self._role(n.port),
                                 "nodes": self._r(n.port, "CLUSTER", "NODES")}
            except Exception as exc:  # noqa: BLE001
                problems.append(":%d does not answer (%s)" % (n.port, exc))
        if problems:
            return problems
        by_id = {n.id: n for n in self._nodes}
        live_ids = {n.id for n in live}
        for port, v in views.items():
            info = v["info"]
            if info.get("cluster_state") != "ok":
                problems.append(":%d cluster_state:%s" % (port, info.get("cluster_state")))
            if info.get("cluster_slots_ok") != str(SLOTS):
                problems.append(":%d cluster_slots_ok:%s" % (port, info.get("cluster_slots_ok")))
            if info.get("cluster_known_nodes") != str(len(self._nodes)):
                problems.append(":%d knows %s nodes" % (port, info.get("cluster_known_nodes")))
            for line in v["nodes"].splitlines():
                f = line.split()
                if len(f) < 8:
                    continue
                if f[0] not in by_id:
                    problems.append(":%d knows a node %s not of this cluster" % (port, f[0][:8]))
                    continue
                flags = set(f[2].split(","))
                bad = flags & {"fail", "fail?", "handshake", "noaddr"}
                if f[0] in live_ids and bad:
                    problems.append(":%d sees :%d as %s" % (port, by_id[f[0]].port, ",".join(sorted(bad))))
                if any(s.startswith("[") for s in f[8:]):
                    problems.append(":%d has a slot migration under way" % port)
        maps = {v["map"] for v in views.values()}
        if len(maps) != 1:
            problems.append("nodes disagree on CLUSTER SLOTS: %s" % "; ".join(
                ":%d %s" % (p, self._fmt_map(v["map"])) for p, v in sorted(views.items())))
            return problems
        (m,) = maps
        if sum(e - s + 1 for s, e, _, _ in m) != SLOTS:
            problems.append("CLUSTER SLOTS covers %d slots" % sum(e - s + 1 for s, e, _, _ in m))
        owner_replicas = {}
        for i, members in enumerate(self._shards or []):
            members = [n for n in members if n.port in views]
            masters = [n for n in members if views[n.port]["role"][0] == "master"]
            if len(masters) != 1:
                problems.append("shard %d has %d nodes saying ROLE master (%s)"
                                % (i, len(masters), [n.port for n in masters]))
                continue
            p = masters[0]
            reps = []
            for r in members:
                if r is p:
                    continue
                role = views[r.port]["role"]
                if role[0] != "slave" or int(role[2]) != p.port or role[3] != "connected":
                    problems.append("shard %d: :%d is not a linked replica of :%d (ROLE %s)"
                                    % (i, r.port, p.port, role[:4]))
                    continue
                reps.append(r.port)
            if reps:
                try:
                    repl = self._r(p.port, "INFO", "replication")
                except Exception as exc:  # noqa: BLE001
                    problems.append(":%d INFO replication: %s" % (p.port, exc))
                    continue
                online = {v.get("port") for k, v in repl.items()
                          if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"}
                for r in reps:
                    if r not in online:
                        problems.append("shard %d: :%d does not stream to :%d yet" % (i, p.port, r))
            owner_replicas[p.port] = tuple(sorted(reps))
        for s, e, owner, reps in m:
            if owner not in owner_replicas:
                problems.append("slots %d-%d are served by :%d, no shard's primary" % (s, e, owner))
            elif reps != owner_replicas[owner]:
                problems.append("CLUSTER SLOTS lists replicas %s for :%d, the shard has %s"
                                % (list(reps), owner, list(owner_replicas[owner])))
        return problems

    @staticmethod
    def _fmt_map(m):
        return ",".join("%d-%d:%d%s" % (s, e, p, "+" + "+".join(map(str, r)) if r else "") for s, e, p, r in m)

    def _detail(self):
        parts = ["cluster state: %s" % (self._why or "?")]
        for n in self._nodes:
            parts.append("node :%s %s" % (n.port, "alive" if self._alive(n) else "down"))
            parts.append(log_tail(n.log, 8))
        return "\n".join(parts)

    def _stale_gossip(self, since_ms):
        """Pairs of live nodes where one has had no PONG from the other since since_ms (wall clock)."""
        live = {n.id: n for n in self._nodes if self._alive(n)}
        stale = []
        for n in live.values():
            for line in self._r(n.port, "CLUSTER", "NODES").splitlines():
                f = line.split()
                if len(f) >= 8 and f[0] in live and f[0] != n.id and int(f[5]) < since_ms:
                    stale.append(":%d has heard nothing from :%d since the change" % (n.port, live[f[0]].port))
        return stale

    def _wait(self, what, timeout, extra=None, settle=True):
        """Until problems() is empty and extra() (if given) returns None instead of a complaint; then
        (settle) until every live node has had a PONG from every other one since -- a whole gossip
        round on the agreed state, so no node acts next (a failover) on a message from before it."""
        agreed = [None]

        def cond():
            p = self.problems()
            if extra is not None:       # also while unhealthy: it may act (switchover asks again)
                try:
                    e = extra()
                except LabError as exc:
                    e = str(exc)
                if e:
                    p = [e] + p
            if p:
                agreed[0] = None
            elif settle:
                if agreed[0] is None:
                    agreed[0] = int(time.time() * 1000)
                p = self._stale_gossip(agreed[0])
            self._why = "; ".join(p[:6]) + (" (+%d more)" % (len(p) - 6) if len(p) > 6 else "")
            return not p
        wait_until(cond, timeout, what, interval=0.05, detail=self._detail)

    def wait_healthy(self, timeout=30.0, settle=True):
        """Wait until every live node reports the same healthy cluster (see the module's docstring)
        and (settle) a gossip round has gone by since."""
        self._wait("the Redis Cluster in %s to be healthy" % self.workdir, timeout, settle=settle)

    def heal(self, timeout=30.0):
        """Restart any node that is down, then wait until healthy."""
        for n in self._nodes:
            if not self._alive(n):
                self.restart(n.port, timeout)
        self.wait_healthy(timeout)

    def wait_replicated(self, timeout=10.0):
        """Wait until every live replica has processed its primary's whole replication stream so far
        (so nothing written before is lost when a primary is killed next)."""
        for i in range(len(self._shards)):
            p, reps = self.shard_nodes(i)
            off = int(self._r(p, "INFO", "replication")["master_repl_offset"])
            for r in reps:
                wait_until(lambda: int(self._r(r, "INFO", "replication").get("slave_repl_offset", -1)) >= off,
                           timeout, "replica :%d to reach offset %d of :%d" % (r, off, p), interval=0.01)

    def check(self):
        """`redis-cli --cluster check` against a primary; its output (LabError if it reports an error)."""
        p = self.primaries()[0][1]
        out = run([self.redis_cli, "--cluster", "check", "%s:%d" % (self.host, p)], timeout=30,
                  what="redis-cli --cluster check")
        if "[ERR]" in out or "[WARNING]" in out:
            raise LabError("redis-cli --cluster check:\n%s" % out)
        return out

    # ---- queries --------------------------------------------------------------------------------
    @property
    def nodes(self):
        """Ports of every node (in the order they were made)."""
        return [n.port for n in self._nodes]

    def node_id(self, port):
        return self._node(port).id

    def log(self, port):
        return self._node(port).log

    def alive(self, port):
        return self._alive(self._node(port))

    def shard_of(self, port):
        for i, members in enumerate(self._shards or []):
            if any(n.port == port for n in members):
                return i
        raise LabError("no node of the cluster listens on %s" % port)

    def shard_nodes(self, i):
        """(primary port, [live replica ports]) of shard i, as its nodes report their ROLE now."""
        p = self._primary_node(i)
        return p.port, [n.port for n in self._shard(i) if n is not p and self._alive(n)]

    def primaries(self):
        """[(shard index, primary port)] for every shard, shard 0 first."""
        return [(i, self.shard_nodes(i)[0]) for i in range(len(self._shards or []))]

    def slots_of_shard(self, i):
        """[(first, last)] slot ranges shard i serves now."""
        p = self._primary_node(i).port
        return [(s, e) for s, e, owner, _ in self._any_map() if owner == p]

    def primary_of_slot(self, slot):
        """Port of the primary serving a slot now (CLUSTER SLOTS of a live node)."""
        for s, e, owner, _ in self._any_map():
            if s <= slot <= e:
                return owner
        raise LabError("no node serves slot %d" % slot)

    slot_of = staticmethod(slot_of)
    keys_for_slots = staticmethod(keys_for_slots)

    def key_in_shard(self, i, prefix="k", n=0):
        """The n-th key "PREFIX:J" (J = 0, 1, ...) whose slot shard i serves now."""
        ranges = self.slots_of_shard(i)
        if not ranges:
            raise LabError("shard %d serves no slot" % i)
        j = 0
        while True:
            k = "%s:%d" % (prefix, j)
            s = slot_of(k)
            if any(a <= s <= b for a, b in ranges):
                if n == 0:
                    return k
                n -= 1
            j += 1

    def seeds_config(self):
        """repoint's `members =` value: every shard's primary, "host:port, host:port, ..."."""
        return ", ".join("%s:%d" % (self.host, p) for _, p in self.primaries())

    # ---- drills ---------------------------------------------------------------------------------
    def _election_window_s(self):
        """How long a replica keeps the state of an election it ran (Redis' auth_retry_time)."""
        return 2 * max(2 * self.node_timeout_ms, 2000) / 1000.0

    def switchover(self, i, timeout=30.0):
        """CLUSTER FAILOVER on shard i's replica: returns (old primary port, new primary port) once the
        replica is primary, the old primary its linked replica and every node's CLUSTER SLOTS says so."""
        self.wait_healthy(timeout, settle=False)
        old, reps = self.shard_nodes(i)
        if not reps:
            raise LabError("shard %d has no live replica to switch over to" % i)
        new = reps[0]
        # A replica that won an election less than auth_retry_time ago (4 s at a 1 s node timeout) still
        # counts that election's votes: asked for a manual failover then, Redis 7.0 has it "win" at once
        # with its old epoch; the others keep the current primary, turn it back into a replica, and the
        # manual failover lapses. That state is not visible from outside, so wait for its end.
        left = self._elected.get(new, -1e9) + self._election_window_s() + 0.25 - time.monotonic()
        if left > 0:
            time.sleep(left)
        asked = [None]

        def done():
            e = self._expect_primary(i, new, old)
            if e and (asked[0] is None or time.monotonic() - asked[0] > MF_RETRY_S):
                # not yet asked, or asked long enough ago that Redis gave up (CLUSTER_MF_TIMEOUT, 5 s)
                role = self._role(new)
                if role[0] == "slave" and int(role[2]) == old and role[3] == "connected":
                    self._r(new, "CLUSTER", "FAILOVER")
                    asked[0] = time.monotonic()
            return e
        self._wait("shard %d's switchover :%d -> :%d (CLUSTER FAILOVER) to be seen by every node" % (i, old, new),
                   timeout, extra=done)
        self._elected[new] = time.monotonic()
        return old, new

    def _expect_primary(self, i, primary, replica=None):
        p, reps = self.shard_nodes(i)
        if p != primary:
            return "shard %d's primary is :%d, not :%d" % (i, p, primary)
        if replica is not None and replica not in reps:
            return "shard %d: :%d is no replica of :%d" % (i, replica, primary)
        return None

    def crash(self, i, timeout=30.0):
        """SIGKILL shard i's primary; returns (killed port, promoted port) once the cluster has elected
        a replica and every live node agrees. restart(killed port) brings the node back."""
        self.wait_healthy(timeout, settle=False)
        old, reps = self.shard_nodes(i)
        if not reps:
            raise LabError("shard %d has no live replica to take over" % i)
        self._kill(self._node(old))

        def elected():
            p = self.shard_nodes(i)[0]
            return None if p in reps else "shard %d's primary is still :%d" % (i, p)
        self._wait("a replica of shard %d (%s) to be elected after :%d was killed, and every live node "
                   "to agree" % (i, reps, old), timeout, extra=elected)
        new = self.shard_nodes(i)[0]
        self._elected[new] = time.monotonic()
        return old, new

    def restart(self, port, timeout=30.0):
        """Start a killed node again (same nodes.conf, no data): it rejoins its shard as a replica.
        Returns its primary's port once it is linked and every node agrees."""
        n = self._node(port)
        if self._alive(n):
            raise LabError("node :%d is running (pid %s)" % (port, n.pid))
        self._kill(n)                     # leftovers, if any
        i = self.shard_of(port)
        self._elected.pop(port, None)     # a new process: no election state
        self._launch(n)
        if not self._wait_up(n, timeout):
            raise LabError("node :%d could not bind its port again\n%s" % (port, log_tail(n.log)))
        self._wait("node :%d to rejoin shard %d as a linked replica" % (port, i), timeout,
                   extra=lambda: self._expect_primary(i, self._primary_node(i).port, port))
        return self.shard_nodes(i)[0]

    def reshard(self, src, dst, nslots, timeout=60.0):
        """Move nslots slots (and their keys) from shard src to shard dst with redis-cli --cluster reshard;
        returns the slots moved (sorted) once every node agrees."""
        self.wait_healthy(timeout, settle=False)
        sp, dp = self._primary_node(src), self._primary_node(dst)
        before = {s for a, b in self.slots_of_shard(dst) for s in range(a, b + 1)}
        run([self.redis_cli, "--cluster", "reshard", "%s:%d" % (self.host, sp.port),
             "--cluster-from", sp.id, "--cluster-to", dp.id, "--cluster-slots", str(nslots), "--cluster-yes"],
            timeout=timeout, what="redis-cli --cluster reshard")

        def moved():
            now = {s for a, b in self.slots_of_shard(dst) for s in range(a, b + 1)}
            if len(now - before) != nslots:
                return "shard %d gained %d slots, not %d" % (dst, len(now - before), nslots)
            return None
        self._wait("every node to see %d slots moved from shard %d to shard %d" % (nslots, src, dst), timeout,
                   extra=moved)
        return sorted({s for a, b in self.slots_of_shard(dst) for s in range(a, b + 1)} - before)
