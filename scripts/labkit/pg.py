"""PostgreSQL 15: a primary and streaming replicas (pg_basebackup -R), switchover, pg_rewind."""

import os
import shutil
import signal
import uuid

from . import iam
from .base import Engine
from .procs import LabError, in_parallel, pid_alive, run, wait_until

PG_BIN = os.environ.get("REPOINT_LAB_PG_BIN", "/usr/lib/postgresql/15/bin")

CONF = """
# ---- repoint lab ----
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 16
max_replication_slots = 16
wal_keep_size = 256MB
wal_log_hints = on
hot_standby = on
hot_standby_feedback = on
shared_buffers = 16MB
max_connections = 300
fsync = off
synchronous_commit = on
full_page_writes = on
wal_receiver_status_interval = 1s
wal_retrieve_retry_interval = 200ms
log_line_prefix = '%m [%p] '
log_min_messages = warning
"""

HBA = """local all all trust
local replication all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


# A TLS lab is the managed-service lab: these roles log in with RDS IAM tokens (pam, pam_exec, checked
# by labkit/iamcheck.py against the emulator's credentials), the rest over TLS as before.
IAM_ROLES = ("iam_app", "iam_probe")
# ... and a role with a password, SCRAM-SHA-256 only, as RDS stores them: its verifier replicates.
SCRAM_ROLE, SCRAM_PASSWORD = "scram_app", "lab-scram-password"


class Postgres(Engine):
    name = "postgres"
    prefix = "pg"
    count = 3
    port_offset = 0
    proc_names = ("postgres", "postmaster")
    stop_signal = signal.SIGINT      # fast shutdown
    service_user = "postgres"

    # ---- plumbing -------------------------------------------------------------------------------
    def _bin(self, prog):
        return os.path.join(PG_BIN, prog)

    def _dsn(self, node, dbname="postgres"):
        return "host=%s port=%d user=postgres dbname=%s%s" % (node.host, node.port, dbname, self._ssl())

    def connect(self, node, dbname="test", user="postgres", password=None, connect_timeout=3, **kw):
        import psycopg2
        if self.lab.tls:
            kw.setdefault("sslmode", "verify-full")
            kw.setdefault("sslrootcert", self.lab.tls["ca"])
        conn = psycopg2.connect(host=node.host, port=node.port, user=user, password=password,
                                dbname=dbname, connect_timeout=connect_timeout, **kw)
        conn.autocommit = True
        return conn

    def q(self, node, sql, args=None, dbname="postgres", fetch="one"):
        conn = self.connect(node, dbname=dbname, connect_timeout=2)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                if fetch == "one":
                    return cur.fetchone()
                if fetch == "all":
                    return cur.fetchall()
                return None
        finally:
            conn.close()

    def _conninfo(self, node, primary):
        return "host=%s port=%d user=postgres application_name=%s%s" % (primary.host, primary.port, node.name,
                                                                         self._ssl())

    def _server_files(self):
        """The lab's certificate and key, as the server user's own files (Postgres refuses a key others
        can read)."""
        d = os.path.join(os.path.dirname(self.lab.tls["key"]), "postgres")
        cert, key = os.path.join(d, "server.crt"), os.path.join(d, "server.key")
        if not os.path.exists(key):
            self.runas.mkdir(d, 0o700)
            for src, dst in ((self.lab.tls["cert"], cert), (self.lab.tls["key"], key)):
                with open(src) as f:
                    self.runas.write(dst, f.read(), 0o600)
        return cert, key

    def _ssl(self):
        """conninfo words for a TLS lab (hostssl only): verified against the lab CA."""
        return " sslmode=verify-full sslrootcert=%s" % self.lab.tls["ca"] if self.lab.tls else ""

    def _controldata(self, node):
        out = run([self._bin("pg_controldata"), "-D", node.dir], runas=self.runas, what="pg_controldata")
        data = {}
        for line in out.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                data[k.strip()] = v.strip()
        return data

    def _clear_stale_pidfile(self, node):
        """A SIGKILLed postmaster may linger as a zombie (until init reaps it), and postgres treats a
        zombie's pid in its lock files as a running postmaster: drop them if it is dead."""
        for path in (os.path.join(node.dir, "postmaster.pid"),
                     os.path.join(node.sockdir, ".s.PGSQL.%d.lock" % node.port)):
            try:
                with open(path) as f:
                    pid = int(f.readline().strip() or 0)
            except (OSError, ValueError):
                continue
            if not pid_alive(pid, self.proc_names, node.dir):
                os.unlink(path)

    def _start_proc(self, node):
        self._clear_stale_pidfile(node)
        cmd = [self._bin("postgres"), "-D", node.dir, "-p", str(node.port), "-k", node.sockdir,
               "-c", "listen_addresses=127.0.0.1", "-c", "cluster_name=%s" % node.name]
        if self.lab.tls:
            cert, key = self._server_files()
            cmd += ["-c", "ssl=on", "-c", "ssl_cert_file=%s" % cert, "-c", "ssl_key_file=%s" % key,
                    "-c", "ssl_ca_file=%s" % self.lab.tls["ca"]]
        self._spawn(node, cmd)
        self.wait_ready(node, lambda: self.q(node, "SELECT 1"))

    def _set_standby_config(self, node, primary):
        """Offline: standby.signal + primary_conninfo in postgresql.auto.conf."""
        auto = os.path.join(node.dir, "postgresql.auto.conf")
        lines = []
        if os.path.exists(auto):
            with open(auto) as f:
                lines = [l for l in f.read().splitlines() if not l.strip().startswith("primary_conninfo")]
        lines.append("primary_conninfo = '%s'" % self._conninfo(node, primary))
        self.runas.write(auto, "\n".join(lines) + "\n")
        self.runas.write(os.path.join(node.dir, "standby.signal"), "")
        for f in ("recovery.signal",):
            p = os.path.join(node.dir, f)
            if os.path.exists(p):
                os.unlink(p)

    def _timeline(self, primary):
        return self.q(primary, "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int")[0]

    def _wait_following(self, node, primary, timeout):
        tli = self._timeline(primary)

        def cond():
            if not self.alive(node):
                self.fail(node, "exited while joining %s" % primary.name)
            row = self.q(node, "SELECT status, sender_port, received_tli FROM pg_stat_wal_receiver")
            return row is not None and row[0] == "streaming" and row[1] == primary.port and row[2] == tli
        wait_until(cond, timeout, "%s to stream from %s (timeline %d)" % (node.name, primary.name, tli))

    def _basebackup(self, node, primary):
        if os.path.isdir(node.dir):
            shutil.rmtree(node.dir)
        self.runas.mkdir(node.dir)
        run([self._bin("pg_basebackup"), "-d", self._dsn(primary), "-D", node.dir, "-X", "stream", "-c", "fast",
             "-N", "-R"],
            runas=self.runas, cwd=os.path.dirname(node.dir), what="pg_basebackup of %s" % node.name)
        self._set_standby_config(node, primary)

    def _rewind(self, node, primary):
        # pg_rewind reads the source's control file: make sure it knows its new timeline.
        self.q(primary, "CHECKPOINT", fetch=None)
        sig = os.path.join(node.dir, "standby.signal")
        if os.path.exists(sig):   # single-user crash recovery (run by pg_rewind) refuses standby mode
            os.unlink(sig)
        self._clear_stale_pidfile(node)
        run([self._bin("pg_rewind"), "-D", node.dir, "--source-server", self._dsn(primary)],
            runas=self.runas, cwd=os.path.dirname(node.dir), what="pg_rewind of %s" % node.name)

    def _start_standby(self, node, primary, how):
        """Start node as a standby of primary, preparing its data dir per how (plain/rewind/basebackup)."""
        if how == "rewind":
            self._rewind(node, primary)
        elif how == "basebackup":
            self._basebackup(node, primary)
        self._set_standby_config(node, primary)
        self._start_proc(node)
        self._wait_following(node, primary, 5.0 if how == "plain" else 15.0)

    def _join_chain(self, node, primary, steps, order):
        """Try the given ways to bring a stopped node back as a standby, cheapest first."""
        last = None
        for how in order:
            try:
                with steps("%s_%s" % (how, node.name)):
                    self._start_standby(node, primary, how)
                return how
            except LabError as exc:
                last = exc
                steps.steps["%s_%s_failed" % (how, node.name)] = str(exc).strip().splitlines()[-1][:300]
                self.stop(node)
        raise LabError("could not rejoin %s as a replica of %s: %s" % (node.name, primary.name, last))

    # ---- Engine interface -----------------------------------------------------------------------
    def create(self, nodes):
        p, replicas = nodes[0], nodes[1:]
        self.runas.mkdir(p.dir)
        run([self._bin("initdb"), "-D", p.dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
             "--no-sync", "--no-instructions"], runas=self.runas, cwd=os.path.dirname(p.dir), what="initdb")
        with open(os.path.join(p.dir, "postgresql.conf"), "a") as f:
            f.write(CONF)
        # A TLS lab takes TCP connections over TLS only (hostssl), as rds.force_ssl = 1 does; its IAM
        # roles log in with tokens only (pam: the replicas get the same pg_hba.conf from the backup).
        hba = HBA
        if self.lab.tls:
            hba = HBA.replace("\nhost ", "\nhostssl ")
            hba = hba.replace("local replication all trust\n", "local replication all trust\n"
                              "hostssl all %s 127.0.0.1/32 pam pamservice=%s\n"
                              "hostssl all %s 127.0.0.1/32 scram-sha-256\n"
                              % (",".join(IAM_ROLES), self.iam_setup(), SCRAM_ROLE))
        self.runas.write(os.path.join(p.dir, "pg_hba.conf"), hba)
        self._start_proc(p)
        self.q(p, "CREATE DATABASE test", fetch=None)
        if self.lab.tls:
            for role in IAM_ROLES:
                self.q(p, "CREATE ROLE %s LOGIN" % role, fetch=None)
            self.q(p, "GRANT pg_read_all_data, pg_write_all_data TO iam_app", fetch=None)
            self.q(p, "GRANT CREATE ON SCHEMA public TO iam_app", dbname="test", fetch=None)
            self.q(p, "SET password_encryption = 'scram-sha-256'; CREATE ROLE %s LOGIN PASSWORD '%s'"
                   % (SCRAM_ROLE, SCRAM_PASSWORD), fetch=None)
            self.q(p, "GRANT pg_read_all_data, pg_write_all_data TO %s" % SCRAM_ROLE, fetch=None)
            self.q(p, "GRANT CREATE ON SCHEMA public TO %s" % SCRAM_ROLE, dbname="test", fetch=None)

        def clone(r):
            self._basebackup(r, p)
            self._start_proc(r)
        errors = in_parallel(clone, replicas)
        if errors:
            raise errors[0][1]
        for r in replicas:
            self._wait_following(r, p, 15)
        self.write_and_check(p, replicas)

    # ---- IAM (a TLS lab) ------------------------------------------------------------------------
    def iam_setup(self):
        """The lab's PAM service for IAM logins (labkit/iam.py); the check runs as postgres."""
        return iam.setup(self.lab.dir, (self.runas.uid, self.runas.gid))

    def auth_file(self, path):
        """A TLS lab's auth_file for repoint (auth = repoint): the SCRAM role with the verifier the
        primary stores (every node has the same: the catalog replicates), no password."""
        v = self.q(self.lab.primary("postgres"), "SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                   (SCRAM_ROLE,))[0]
        with open(path, "w") as f:
            f.write('"%s" "%s"\n' % (SCRAM_ROLE, v))
        return path

    def start(self, node, as_replica_of=None):
        if self.lab.tls:
            iam.ensure_pam(self.lab.dir)     # after `down --keep`, which takes it away
        if as_replica_of is None:
            self._start_proc(node)
        else:
            self.rejoin(node, as_replica_of, None)

    def role(self, node):
        return "replica" if self.q(node, "SELECT pg_is_in_recovery()")[0] else "primary"

    def upstream_port(self, node):
        row = self.q(node, "SELECT status, sender_port FROM pg_stat_wal_receiver")
        return row[1] if row and row[0] == "streaming" else None

    def promote(self, node, steps):
        # pg_promote(true) polls every 100 ms; trigger it and poll faster ourselves.
        if not self.q(node, "SELECT pg_promote(false)")[0]:
            self.fail(node, "pg_promote refused")
        wait_until(lambda: not self.q(node, "SELECT pg_is_in_recovery()")[0], 30, "%s to finish promotion" % node.name,
                   interval=0.002)
        steps.promoted()

    def make_replica(self, node, primary, steps):
        if self.role(node) == "primary":           # a second writer: demote it
            with steps("stop_%s" % node.name):
                self.stop(node)
            self._join_chain(node, primary, steps, ["rewind", "basebackup"])
            return
        with steps("repoint_%s" % node.name):
            self.q(node, "ALTER SYSTEM SET primary_conninfo = %s", (self._conninfo(node, primary),), fetch=None)
            self.q(node, "SELECT pg_reload_conf()")
            try:   # streaming starts within ~100 ms unless the node went past the new timeline's fork
                self._wait_following(node, primary, 2)
                return
            except LabError:
                pass
        with steps("stop_%s" % node.name):         # it went past the fork point: rewind it
            self.stop(node)
        self._join_chain(node, primary, steps, ["rewind", "basebackup"])

    def rejoin(self, node, primary, steps):
        from .base import Steps
        steps = steps or Steps()
        state = self._controldata(node).get("Database cluster state", "")
        order = ["plain", "rewind", "basebackup"] if "recovery" in state else ["rewind", "basebackup"]
        return self._join_chain(node, primary, steps, order)

    def _read_only(self, node, on):
        """Every new transaction on node read-only (a write is refused 25006 and runs nowhere), or not;
        returns once a new connection sees it -- the postmaster has told every backend by then, and each
        takes it before its next command."""
        self.q(node, "ALTER SYSTEM %s" % ("SET default_transaction_read_only = on" if on else
                                          "RESET default_transaction_read_only"), fetch=None)
        self.q(node, "SELECT pg_reload_conf()")
        want = "on" if on else "off"
        wait_until(lambda: self.q(node, "SHOW default_transaction_read_only")[0] == want, 10,
                   "%s's default_transaction_read_only to be %s" % (node.name, want), interval=0.002)

    def switchover(self, old, new, others, steps):
        """The switchover a careful operator runs: the old primary stops taking writes first (new
        transactions read-only, as libpq's target_session_attrs=read-write reads it), the transactions
        that began before finish (5 s at most), the target replays the old primary's last WAL and is
        promoted, and only then does the old primary shut down and follow it. A write meanwhile is
        refused read-only without running (a proxy may hold it for the new primary); no write in flight
        is cut by the shutdown."""
        with steps("check_streaming"):     # the old primary's last WAL must be able to reach the target
            self._wait_following(new, old, 10)
        with steps("read_only_old"):
            self._read_only(old, True)
            since = self.q(old, "SELECT clock_timestamp()")[0]
        try:
            with steps("drain_old"):
                # The transactions that began writable finish; those still open after a second are ended
                # (57P01), before the last WAL position is read: none of them can commit after it.
                older = ("FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                         "AND xact_start < %s")
                try:
                    wait_until(lambda: self.q(old, "SELECT count(*) " + older, (since,))[0] == 0, 1,
                               "%s's writable transactions to end" % old.name, interval=0.005)
                except LabError:
                    self.q(old, "SELECT count(pg_terminate_backend(pid, 5000)) " + older, (since,))
            lsn = self.q(old, "SELECT pg_current_wal_lsn()")[0]
            with steps("wait_replay"):
                wait_until(lambda: self.q(new, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))[0], 15,
                           "%s to replay %s's WAL up to %s" % (new.name, old.name, lsn), interval=0.005)
        except BaseException:
            self._read_only(old, False)  # roll back: the old primary takes writes again
            raise
        with steps("promote"):
            self.promote(new, steps)
        with steps("stop_old"):
            # The setting stays in the old primary's files until it follows the new one: keep it out.
            self.q(old, "ALTER SYSTEM RESET default_transaction_read_only", fetch=None)
            self.stop(old)
        with steps("repoint_others"):
            for o in others:
                self.make_replica(o, new, steps)
        with steps("rejoin_old"):
            self._join_chain(old, new, steps, ["rewind", "basebackup"])  # its shutdown went past the fork

    def write_and_check(self, primary, replicas, timeout=15.0):
        token = uuid.uuid4().hex
        self.q(primary, "CREATE TABLE IF NOT EXISTS _lab_heartbeat (id int PRIMARY KEY, token text)",
               dbname="test", fetch=None)
        self.q(primary, "INSERT INTO _lab_heartbeat VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET token = "
               "excluded.token", (token,), dbname="test", fetch=None)
        for r in replicas:
            wait_until(lambda: self.q(r, "SELECT token FROM _lab_heartbeat WHERE id = 1", dbname="test") == (token,),
                       timeout, "a write on %s to reach %s" % (primary.name, r.name), interval=0.01)

    def service_config(self):
        return {"probe_user": "postgres", "probe_password": "", "probe_database": "postgres"}
