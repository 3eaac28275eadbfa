"""MariaDB 10.11: a primary and GTID replicas; roles are @@global.read_only."""

import os
import threading
import uuid

from .base import Engine, Steps
from .procs import LabError, is_root, run, wait_until

REPL_USER, REPL_PASSWORD = "repl", "repl"
TEST_USER, TEST_PASSWORD = "test", "test"

BOOTSTRAP = [
    "SET sql_log_bin = 0",
    "CREATE DATABASE IF NOT EXISTS test",
    "CREATE USER IF NOT EXISTS 'test'@'%' IDENTIFIED BY 'test'",
    "CREATE USER IF NOT EXISTS 'test'@'localhost' IDENTIFIED BY 'test'",
    "GRANT ALL PRIVILEGES ON *.* TO 'test'@'%'",
    "GRANT ALL PRIVILEGES ON *.* TO 'test'@'localhost'",
    # ALL includes READ_ONLY ADMIN (which bypasses read_only): take it away so that the test user,
    # like an application, cannot write on a replica / demoted primary.
    "REVOKE READ_ONLY ADMIN ON *.* FROM 'test'@'%', 'test'@'localhost'",
    "CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'repl'",
    "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'%'",
    "SET sql_log_bin = 1",
]


class MariaDB(Engine):
    name = "mysql"
    prefix = "my"
    count = 2
    port_offset = 3
    proc_names = ("mariadbd", "mysqld")

    # ---- plumbing -------------------------------------------------------------------------------
    def connect(self, node, user=TEST_USER, password=TEST_PASSWORD, database="test", connect_timeout=3, **kw):
        import pymysql
        return pymysql.connect(host=node.host, port=node.port, user=user, password=password, database=database,
                               autocommit=True, connect_timeout=connect_timeout, **kw)

    def admin(self, node):
        """root over the node's unix socket (works whatever read_only says)."""
        import pymysql
        return pymysql.connect(unix_socket=node.sock, user="root", autocommit=True, connect_timeout=2,
                               cursorclass=pymysql.cursors.DictCursor)

    def q(self, node, *sqls, args=None):
        """Run statements in order on one admin connection; return the rows of the last one."""
        conn = self.admin(node)
        try:
            with conn.cursor() as cur:
                for sql in sqls:
                    cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    def _tmpdir(self, node):
        # one per server: concurrent servers sharing /tmp trip over each other's temp tables
        return os.path.join(os.path.dirname(node.dir), "tmp", node.name)

    def _start_proc(self, node, read_only, skip_slave_start=False):
        os.makedirs(self._tmpdir(node), exist_ok=True)
        cmd = ["/usr/sbin/mariadbd", "--no-defaults", "--datadir=%s" % node.dir, "--port=%d" % node.port,
               "--tmpdir=%s" % self._tmpdir(node),
               "--bind-address=127.0.0.1", "--socket=%s" % node.sock, "--pid-file=%s/mariadbd.pid" % node.dir,
               "--server-id=%d" % node.st["server_id"], "--log-bin=binlog", "--log-slave-updates",
               "--relay-log=relay-bin", "--binlog-format=ROW", "--skip-name-resolve",
               "--read-only=%d" % (1 if read_only else 0), "--innodb-buffer-pool-size=32M",
               "--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0", "--performance-schema=OFF",
               "--max-connections=500", "--report-host=127.0.0.1", "--report-port=%d" % node.port]
        if skip_slave_start:
            cmd.append("--skip-slave-start")
        if is_root():
            cmd.append("--user=root")
        self._spawn(node, cmd)
        self.wait_ready(node, lambda: self.q(node, "SELECT 1"))

    def _slave_status(self, node):
        rows = self.q(node, "SHOW SLAVE STATUS")
        return rows[0] if rows else None

    def _wait_replicating(self, node, primary, timeout=15.0):
        def cond():
            st = self._slave_status(node)
            if st is None:
                raise LabError("%s has no replication configured" % node.name)
            if st["Last_IO_Errno"] and st["Slave_IO_Running"] != "Connecting":
                raise LabError("%s replication IO error %s: %s" % (node.name, st["Last_IO_Errno"], st["Last_IO_Error"]))
            if st["Last_SQL_Errno"]:
                raise LabError("%s replication SQL error %s: %s" % (node.name, st["Last_SQL_Errno"],
                                                                   st["Last_SQL_Error"]))
            return (st["Slave_IO_Running"] == "Yes" and st["Slave_SQL_Running"] == "Yes"
                    and int(st["Master_Port"]) == primary.port)
        wait_until(cond, timeout, "%s to replicate from %s" % (node.name, primary.name))

    # ---- Engine interface -----------------------------------------------------------------------
    def create(self, nodes):
        p, replicas = nodes[0], nodes[1:]
        errors = []

        def init(n):
            try:
                os.makedirs(n.dir, exist_ok=True)
                os.makedirs(self._tmpdir(n), exist_ok=True)
                cmd = ["mariadb-install-db", "--no-defaults", "--datadir=%s" % n.dir, "--tmpdir=%s" % self._tmpdir(n),
                       "--auth-root-authentication-method=normal", "--skip-test-db"]
                if is_root():
                    cmd.append("--user=root")
                run(cmd, cwd=os.path.dirname(n.dir), what="mariadb-install-db for %s" % n.name)
                self._start_proc(n, read_only=(n is not p))
                self.q(n, *BOOTSTRAP)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        threads = [threading.Thread(target=init, args=(n,)) for n in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        for r in replicas:
            self._change_master(r, p)
        for r in replicas:
            self._wait_replicating(r, p)
        self.write_and_check(p, replicas)

    def _change_master(self, node, primary):
        self.q(node, "SET GLOBAL read_only = 1", "STOP SLAVE",
               "SET GLOBAL gtid_slave_pos = @@global.gtid_binlog_pos",
               "CHANGE MASTER TO MASTER_HOST='%s', MASTER_PORT=%d, MASTER_USER='%s', MASTER_PASSWORD='%s', "
               "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1"
               % (primary.host, primary.port, REPL_USER, REPL_PASSWORD),
               "START SLAVE")

    def start(self, node, as_replica_of=None):
        if as_replica_of is None:
            self._start_proc(node, read_only=node.st.get("role") != "primary")
        else:
            self.rejoin(node, as_replica_of, Steps())

    def role(self, node):
        return "replica" if int(self.q(node, "SELECT @@global.read_only AS ro")[0]["ro"]) else "primary"

    def upstream_port(self, node):
        st = self._slave_status(node)
        if st and st["Slave_IO_Running"] == "Yes":
            return int(st["Master_Port"])
        return None

    def promote(self, node, steps):
        self.q(node, "STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0")
        steps.promoted()

    def make_replica(self, node, primary, steps):
        with steps("repoint_%s" % node.name):
            self._change_master(node, primary)
            self._wait_replicating(node, primary)

    def rejoin(self, node, primary, steps):
        with steps("start_%s" % node.name):
            self._start_proc(node, read_only=True, skip_slave_start=True)
        self.make_replica(node, primary, steps)

    def switchover(self, old, new, others, steps):
        with steps("read_only_old"):
            pos = self.q(old, "SET GLOBAL read_only = 1", "SELECT @@global.gtid_binlog_pos AS pos")[0]["pos"]
        with steps("wait_gtid"):
            r = self.q(new, "SELECT MASTER_GTID_WAIT(%s, 30) AS r", args=(pos,))[0]["r"]
            if r != 0:
                raise LabError("%s did not apply %s's GTID %s within 30 s" % (new.name, old.name, pos))
        with steps("promote"):
            self.promote(new, steps)
        with steps("repoint_others"):
            for o in others:
                self.make_replica(o, new, steps)
        with steps("rejoin_old"):
            self.make_replica(old, new, steps)

    def write_and_check(self, primary, replicas, timeout=15.0):
        token = uuid.uuid4().hex
        conn = self.admin(primary)
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE IF NOT EXISTS test._lab_heartbeat (id INT PRIMARY KEY, token VARCHAR(64))")
                cur.execute("REPLACE INTO test._lab_heartbeat VALUES (1, %s)", (token,))
        finally:
            conn.close()

        def seen(r):
            rows = self.q(r, "SELECT token FROM test._lab_heartbeat WHERE id = 1")
            return bool(rows) and rows[0]["token"] == token
        for r in replicas:
            wait_until(lambda: seen(r), timeout, "a write on %s to reach %s" % (primary.name, r.name), interval=0.01)

    def service_config(self):
        return {"probe_user": TEST_USER, "probe_password": TEST_PASSWORD, "probe_database": "test"}
