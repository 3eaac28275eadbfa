"""Redis 7: a primary and replicas (no persistence); switchover with FAILOVER TO."""

import os
import uuid

from .base import Engine
from .procs import wait_until


class Redis(Engine):
    name = "redis"
    prefix = "rd"
    count = 3
    port_offset = 5
    proc_names = ("redis-server", "redis-check-rdb")

    @property
    def password(self):
        return self.lab.state.get("redis_password")

    def connect(self, node, decode_responses=True, socket_timeout=3, **kw):
        import redis
        kw.setdefault("password", self.password)
        if self.lab.tls:
            kw.setdefault("ssl", True)
            kw.setdefault("ssl_ca_certs", self.lab.tls["ca"])
        return redis.Redis(host=node.host, port=node.port, decode_responses=decode_responses,
                           socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout, **kw)

    def r(self, node, *args):
        c = self.connect(node, socket_timeout=2)
        try:
            return c.execute_command(*args)
        finally:
            c.close()

    def _info(self, node):
        c = self.connect(node, socket_timeout=2)
        try:
            return c.info("replication")
        finally:
            c.close()

    def _start_proc(self, node, replicaof=None, wait=True):
        tls = self.lab.tls
        port = ["--port", str(node.port)] if not tls else [
            "--port", "0", "--tls-port", str(node.port), "--tls-cert-file", tls["cert"], "--tls-key-file", tls["key"],
            "--tls-ca-cert-file", tls["ca"], "--tls-auth-clients", "no", "--tls-replication", "yes"]
        cmd = ["/usr/bin/redis-server"] + port + ["--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--dir", node.dir, "--logfile", node.log,
               # disk-based sync: the primary puts a replica online as soon as the RDB is sent (a diskless
               # sync waits for the replica's next REPLCONF ACK, up to 1 s, before streaming writes to it)
               "--repl-diskless-sync", "no", "--dbfilename", "dump.rdb", "--loglevel", "notice"]
        if self.password:
            cmd += ["--requirepass", self.password, "--masterauth", self.password]
        if replicaof is not None:
            cmd += ["--replicaof", replicaof.host, str(replicaof.port)]
        self._spawn(node, cmd)
        if not wait:
            return
        self.wait_ready(node, lambda: self.r(node, "PING"))
        if replicaof is not None:
            self._wait_linked(node, replicaof)

    def _wait_linked(self, node, primary, timeout=15.0):
        def cond():
            i = self._info(node)
            if not (i.get("role") == "slave" and i.get("master_port") == primary.port
                    and i.get("master_link_status") == "up" and not i.get("master_sync_in_progress")):
                return False
            # ...and the primary streams to it (state=online), not just "sync done" on the replica's side
            pi = self._info(primary)
            return any(isinstance(v, dict) and v.get("port") == node.port and v.get("state") == "online"
                       for k, v in pi.items() if k.startswith("slave"))
        wait_until(cond, timeout, "%s to replicate from %s" % (node.name, primary.name), interval=0.01)

    # ---- Engine interface -----------------------------------------------------------------------
    def create(self, nodes):
        p, replicas = nodes[0], nodes[1:]
        for n in nodes:
            os.makedirs(n.dir, exist_ok=True)
        self._start_proc(p)
        for r in replicas:
            self._start_proc(r, p, wait=False)   # replicas start in parallel
        for r in replicas:
            self.wait_ready(r, lambda: self.r(r, "PING"))
            self._wait_linked(r, p)
        self.write_and_check(p, replicas)

    def start(self, node, as_replica_of=None):
        if as_replica_of is not None:
            self._start_proc(node, as_replica_of)
            return
        up = node.st.get("upstream")
        self._start_proc(node, self.lab.node(self.name, up) if up and node.st.get("role") != "primary" else None)

    def role(self, node):
        return "primary" if self.r(node, "ROLE")[0] == "master" else "replica"

    def upstream_port(self, node):
        i = self._info(node)
        if i.get("role") == "slave" and i.get("master_link_status") == "up":
            return i.get("master_port")
        return None

    def promote(self, node, steps):
        self.r(node, "REPLICAOF", "NO", "ONE")
        steps.promoted()

    def make_replica(self, node, primary, steps):
        with steps("repoint_%s" % node.name):
            self.r(node, "REPLICAOF", primary.host, str(primary.port))
            self._wait_linked(node, primary)

    def rejoin(self, node, primary, steps):
        with steps("start_%s" % node.name):
            self._start_proc(node, primary)

    def switchover(self, old, new, others, steps):
        """A coordinated handover that loses no acknowledged write: pause writes on the old primary,
        wait until the target has every byte of its replication stream (polled, so it takes
        milliseconds, where FAILOVER waits for the replica's once-a-second ACK), promote the target,
        make the old primary its replica, then lift the pause (writes that waited are refused with
        READONLY by what is now a replica)."""
        with steps("pause_old"):
            self.r(old, "CLIENT", "PAUSE", "10000", "WRITE")
        try:
            with steps("catch_up"):
                offset = int(self._info(old)["master_repl_offset"])
                wait_until(lambda: int(self._info(new).get("slave_repl_offset", -1)) >= offset, 15,
                           "%s to catch up with %s" % (new.name, old.name), interval=0.001)
            with steps("promote"):
                self.promote(new, steps)
            with steps("rejoin_old"):
                self.r(old, "REPLICAOF", new.host, str(new.port))
        finally:
            self.r(old, "CLIENT", "UNPAUSE")
        with steps("link_old"):
            self._wait_linked(old, new)
        with steps("repoint_others"):
            for o in others:
                self.make_replica(o, new, steps)

    def write_and_check(self, primary, replicas, timeout=15.0):
        token = uuid.uuid4().hex
        self.r(primary, "SET", "_lab:heartbeat", token)
        for r in replicas:
            wait_until(lambda: self.r(r, "GET", "_lab:heartbeat") == token, timeout,
                       "a write on %s to reach %s" % (primary.name, r.name), interval=0.005)

    def service_config(self):
        if self.password:
            return {"probe_user": "default", "probe_password": self.password}
        return {}

