"""MariaDB 10.11: a primary and GTID replicas; roles are @@global.read_only.

A node whose GTID history has diverged from the primary's (a primary killed before its last events
shipped, a second writer) cannot follow it (error 1236, or duplicate keys): it is re-cloned from a
consistent mariadb-dump of the primary, like pg's rewind/basebackup fallback."""

import os
import re
import subprocess
import uuid

from . import iam
from .base import Engine, Steps
from .procs import LabError, in_parallel, is_root, run, wait_until

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

# Schemas a re-clone neither copies nor drops (users/grants are mirrored separately, see _sync_users).
SYSTEM_DBS = ("information_schema", "performance_schema", "mysql", "sys")
# Accounts a re-clone leaves as the node has them (install-db's own, identical on every node).
SYSTEM_USERS = ("root", "mariadb.sys", "")
GTID_LIST = re.compile(r"^(\d+-\d+-\d+(,\d+-\d+-\d+)*)?$")


def _gtids(text):
    """'0-1-5,1-2-7' -> [(0, 1, 5), (1, 2, 7)]"""
    text = (text or "").replace("\n", "").replace(" ", "")
    return [tuple(int(x) for x in g.split("-")) for g in text.split(",") if g]


def _reason(exc):
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else repr(exc))[:300]


class MariaDB(Engine):
    name = "mysql"
    prefix = "my"
    count = 2
    port_offset = 3
    proc_names = ("mariadbd", "mysqld")

    # ---- plumbing -------------------------------------------------------------------------------
    def connect(self, node, user=TEST_USER, password=TEST_PASSWORD, database="test", connect_timeout=3, **kw):
        import pymysql
        if self.lab.tls:
            kw.setdefault("ssl", {"ca": self.lab.tls["ca"], "check_hostname": True})
        return pymysql.connect(host=node.host, port=node.port, user=user, password=password, database=database,
                               autocommit=True, connect_timeout=connect_timeout, **kw)

    def admin(self, node):
        """root over the node's unix socket (works whatever read_only says)."""
        import pymysql
        return pymysql.connect(unix_socket=node.sock, user="root", autocommit=True, connect_timeout=2,
                               cursorclass=pymysql.cursors.DictCursor)

    def auth_file(self, path):
        """An auth_file for repoint (auth = repoint): the test user with the mysql_native_password hash the
        primary keeps in mysql.user (every node has the same: the accounts replicate), no password."""
        h = self.q(self.lab.primary("mysql"), "SELECT authentication_string AS h FROM mysql.user "
                   "WHERE user = %s AND host = '%%'", args=(TEST_USER,))
        with open(path, "w") as f:
            f.write('"%s" "%s"\n' % (TEST_USER, h[0]["h"]))
        return path

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
               "--max-connections=500", "--max-allowed-packet=64M", "--report-host=127.0.0.1", "--report-port=%d" % node.port]
        if self.lab.tls:
            # TLS only over TCP (the unix socket the lab administers through counts as secure).
            cmd += ["--ssl-cert=%s" % self.lab.tls["cert"], "--ssl-key=%s" % self.lab.tls["key"],
                    "--ssl-ca=%s" % self.lab.tls["ca"], "--require-secure-transport=ON",
                    # IAM users (labkit/iam.py): PAM asks the client for the token in clear (over TLS),
                    # as RDS MySQL's AWSAuthenticationPlugin does
                    "--plugin-load-add=auth_pam", "--pam-use-cleartext-plugin=ON"]
        if skip_slave_start:
            cmd.append("--skip-slave-start")
        if is_root():
            cmd.append("--user=root")
        self._spawn(node, cmd)
        self.wait_ready(node, lambda: self.q(node, "SELECT 1"))

    def _slave_status(self, node):
        rows = self.q(node, "SHOW SLAVE STATUS")
        return rows[0] if rows else None

    def _link_up(self, node, primary):
        """True if node's replication threads run against primary; raises on a replication error
        (e.g. 1236: its GTID history has diverged from primary's binlog)."""
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

    def _wait_replicating(self, node, primary, timeout=15.0):
        wait_until(lambda: self._link_up(node, primary), timeout,
                   "%s to replicate from %s" % (node.name, primary.name))

    def _write_token(self, primary):
        token = uuid.uuid4().hex
        self.q(primary, "CREATE TABLE IF NOT EXISTS test._lab_heartbeat (id INT PRIMARY KEY, token VARCHAR(64))",
               "REPLACE INTO test._lab_heartbeat VALUES (1, '%s')" % token)
        return token

    def _wait_token(self, node, primary, token, timeout):
        """Wait until token (written on primary) shows on node; fail at once on a replication error."""
        def seen():
            try:
                rows = self.q(node, "SELECT token FROM test._lab_heartbeat WHERE id = 1")
                if rows and rows[0]["token"] == token:
                    return True
            except Exception:  # noqa: BLE001 - no table yet (or a blip): look at the link below
                pass
            self._link_up(node, primary)
            return False
        wait_until(seen, timeout, "a write on %s to reach %s" % (primary.name, node.name), interval=0.01)

    def _diverged(self, node, primary):
        """Why node's GTID history is not part of primary's (None if it looks like it is).

        node asks primary for the events after its gtid_binlog_pos (see _change_master); primary's
        gtid_binlog_state holds the last seq_no it logged for every (domain, server_id). A GTID of
        node's that primary never logged means node has transactions primary lacks: a primary killed
        before its last events shipped, or a second writer (even its heartbeat writes)."""
        pos = self.q(node, "SELECT @@global.gtid_binlog_pos AS p")[0]["p"]
        state = self.q(primary, "SELECT @@global.gtid_binlog_state AS s")[0]["s"]
        last = {(d, s): n for d, s, n in _gtids(state)}
        extra = ["%d-%d-%d" % g for g in _gtids(pos) if last.get(g[:2], -1) < g[2]]
        if extra:
            return "diverged: %s has GTID %s, not in %s's binlog (state %s)" % (
                node.name, ",".join(extra), primary.name, state or "empty")
        return None

    def _mariadb(self, prog, node, args, stdin=None, what=None):
        cmd = [prog, "--no-defaults", "--socket=%s" % node.sock, "--user=root"] + args
        try:
            p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                               env=self.runas.env(), **self.runas.popen_kwargs())
        except subprocess.TimeoutExpired as exc:
            raise LabError("%s timed out" % (what or prog)) from exc
        if p.returncode != 0:
            raise LabError("%s failed (exit %d): %s" % (what or prog, p.returncode,
                                                        p.stderr.decode("utf-8", "replace").strip()[-1000:]))
        return p.stdout

    def _sync_users(self, node, primary):
        """Make node's accounts (but install-db's root/mariadb.sys) and their grants those of primary."""
        def accounts(n):
            return {(r["u"], r["h"]) for r in self.q(n, "SELECT User AS u, Host AS h FROM mysql.global_priv")
                    if r["u"] not in SYSTEM_USERS}
        conn = self.admin(primary)
        wanted = {}
        try:
            with conn.cursor() as cur:
                for acct in sorted(accounts(primary)):
                    try:
                        cur.execute("SHOW CREATE USER %s@%s", acct)
                        stmts = [list(cur.fetchone().values())[0]]
                        cur.execute("SHOW GRANTS FOR %s@%s", acct)
                        stmts += [list(r.values())[0] for r in cur.fetchall()]
                    except Exception:  # noqa: BLE001 - e.g. a role: leave node's as it is
                        continue
                    wanted[acct] = stmts
        finally:
            conn.close()
        stale = accounts(node) - set(wanted)
        sqls = ["SET sql_log_bin = 0"]
        for acct in sorted(stale | set(wanted)):
            sqls.append("DROP USER IF EXISTS '%s'@'%s'" % tuple(x.replace("'", "''") for x in acct))
        for stmts in wanted.values():
            sqls += stmts
        sqls += ["FLUSH PRIVILEGES", "SET sql_log_bin = 1"]
        self.q(node, *sqls)

    def _reclone(self, node, primary):
        """Replace node's data with a consistent dump of primary and replicate from the dump's GTID."""
        self.q(node, "SET GLOBAL read_only = 1", "STOP SLAVE", "RESET SLAVE ALL")
        dbs = [r["Database"] for r in self.q(primary, "SHOW DATABASES") if r["Database"] not in SYSTEM_DBS]
        dump = b""
        pos = self.q(primary, "SELECT @@global.gtid_binlog_pos AS p")[0]["p"]   # if there is nothing to dump
        if dbs:
            dump = self._mariadb("mariadb-dump", primary, [
                "--single-transaction", "--master-data=2", "--gtid", "--routines", "--events", "--triggers",
                "--add-drop-database", "--max-allowed-packet=64M", "--databases"] + dbs,
                what="mariadb-dump of %s" % primary.name)
            found = re.findall(rb"SET GLOBAL gtid_slave_pos\s*=\s*'([^']*)'", dump)
            if not found:
                raise LabError("mariadb-dump of %s has no GTID position" % primary.name)
            pos = found[-1].decode()
        if not GTID_LIST.match(pos):
            raise LabError("unexpected GTID position %r from %s" % (pos, primary.name))
        mine = [r["Database"] for r in self.q(node, "SHOW DATABASES") if r["Database"] not in SYSTEM_DBS]
        self.q(node, "SET sql_log_bin = 0", *["DROP DATABASE IF EXISTS `%s`" % d.replace("`", "``") for d in mine])
        if dump:
            self._mariadb("mariadb", node, ["--max-allowed-packet=64M"], stdin=b"SET sql_log_bin = 0;\n" + dump,
                          what="loading %s's dump into %s" % (primary.name, node.name))
        self._sync_users(node, primary)
        # node's binlog now starts at the dump's position, as if it had replicated up to there.
        # RESET MASTER waits for InnoDB to make the binlog's last commits durable, which with
        # innodb_flush_log_at_trx_commit=2 happens only on its once-a-second flush: force it now.
        flush = self.q(node, "SELECT @@global.innodb_flush_log_at_trx_commit AS f")[0]["f"]
        try:
            self.q(node, "SET GLOBAL innodb_flush_log_at_trx_commit = 1", "FLUSH ENGINE LOGS", "RESET MASTER",
                   "SET GLOBAL gtid_binlog_state = '%s'" % pos)
        finally:
            self.q(node, "SET GLOBAL innodb_flush_log_at_trx_commit = %d" % int(flush))
        self._change_master(node, primary)     # gtid_slave_pos = gtid_binlog_pos = pos
        self._wait_replicating(node, primary, 10.0)
        self._wait_token(node, primary, self._write_token(primary), 10.0)

    # ---- Engine interface -----------------------------------------------------------------------
    def create(self, nodes):
        p, replicas = nodes[0], nodes[1:]
        pam_service = iam.setup(self.lab.dir) if self.lab.tls else None

        def init(n):
            os.makedirs(n.dir, exist_ok=True)
            os.makedirs(self._tmpdir(n), exist_ok=True)
            cmd = ["mariadb-install-db", "--no-defaults", "--datadir=%s" % n.dir, "--tmpdir=%s" % self._tmpdir(n),
                   "--auth-root-authentication-method=normal", "--skip-test-db"]
            if is_root():
                cmd.append("--user=root")
            run(cmd, cwd=os.path.dirname(n.dir), what="mariadb-install-db for %s" % n.name)
            self._start_proc(n, read_only=(n is not p))
            self.q(n, *BOOTSTRAP)
            if self.lab.tls:
                # Each node's own user (not replicated, as BOOTSTRAP's): probes log in with IAM tokens.
                # iam_app: the sessions' user, whose logins repoint makes with tokens (member_password = iam).
                self.q(n, "SET sql_log_bin = 0",
                       "CREATE USER IF NOT EXISTS 'iam_probe'@'%%' IDENTIFIED VIA pam USING '%s'" % pam_service,
                       "CREATE USER IF NOT EXISTS 'iam_app'@'%%' IDENTIFIED VIA pam USING '%s'" % pam_service,
                       "GRANT ALL PRIVILEGES ON test.* TO 'iam_app'@'%'",
                       "SET sql_log_bin = 1")
        errors = in_parallel(init, nodes)
        if errors:
            raise errors[0][1]
        for r in replicas:
            self._change_master(r, p)
        for r in replicas:
            self._wait_replicating(r, p)
        self.write_and_check(p, replicas)

    def _change_master(self, node, primary):
        self.q(node, "SET GLOBAL read_only = 1", "STOP SLAVE",
               "SET GLOBAL gtid_slave_pos = @@global.gtid_binlog_pos",
               "CHANGE MASTER TO MASTER_HOST='%s', MASTER_PORT=%d, MASTER_USER='%s', MASTER_PASSWORD='%s', "
               "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1%s"
               % (primary.host, primary.port, REPL_USER, REPL_PASSWORD,
                  ", MASTER_SSL=1, MASTER_SSL_CA='%s', MASTER_SSL_VERIFY_SERVER_CERT=1" % self.lab.tls["ca"]
                  if self.lab.tls else ""),
               "START SLAVE")

    def start(self, node, as_replica_of=None):
        if self.lab.tls:
            iam.ensure_pam(self.lab.dir)     # after `down --keep`, which takes it away
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
        # Apply what the replica already received before cutting it loose (a promotion that drops
        # its relay log loses acknowledged writes): stop fetching, wait for the SQL thread to
        # reach the received position, then promote.
        if self._slave_status(node) is not None:
            self.q(node, "STOP SLAVE IO_THREAD")
            io_pos = (self._slave_status(node) or {}).get("Gtid_IO_Pos") or ""
            if io_pos:
                self.q(node, "SELECT MASTER_GTID_WAIT(%s, 10)", args=(io_pos,))
        self.q(node, "STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0")
        steps.promoted()

    def make_replica(self, node, primary, steps):
        """Follow primary via GTID; re-clone from primary's dump if node's history has diverged."""
        with steps("repoint_%s" % node.name):
            why = self._diverged(node, primary)
            if why is None:
                try:
                    self._change_master(node, primary)
                    self._wait_replicating(node, primary, 5.0)
                    # Slave_IO_Running=Yes comes before the primary checks the GTID: a 1236 may follow
                    self._wait_token(node, primary, self._write_token(primary), 5.0)
                    return
                except LabError as exc:
                    why = _reason(exc)
        steps.steps["repoint_%s_failed" % node.name] = why
        with steps("reclone_%s" % node.name):
            try:
                self._reclone(node, primary)
            except LabError as exc:
                raise LabError("could not re-clone %s from %s: %s" % (node.name, primary.name, exc)) from None

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
        token = self._write_token(primary)
        for r in replicas:
            self._wait_token(r, primary, token, timeout)

    def service_config(self):
        return {"probe_user": TEST_USER, "probe_password": TEST_PASSWORD, "probe_database": "test"}
