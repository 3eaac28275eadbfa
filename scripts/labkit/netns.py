"""Network namespaces for fault tests: one namespace per member, a veth pair to the root namespace, a private
/30 (10.231.N.0/30: .1 in the root namespace, .2 inside) that exists only on this machine. Faults are nft rules
inside the member's namespace (drop = black hole, reject = refused) or the link going down (partition).
Everything made here is removed by close(), which never raises."""
import os
import subprocess

from .procs import LabError, wait_until

SUBNET = "10.231"


def _ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=10)
    if check and r.returncode != 0:
        raise LabError("ip %s: %s" % (" ".join(args), r.stderr.strip()))
    return r


class NetNS:
    """A namespace holding one member address. index picks the /30 (0..63); the names carry our pid so
    parallel runs do not collide."""

    def __init__(self, index):
        if not 0 <= index < 64:
            raise LabError("netns index %d out of range" % index)
        tag = "%d%d" % (os.getpid() % 100000, index)
        self.name = "rpt%s" % tag
        self.host_if, self.ns_if = "rph%s" % tag, "rpn%s" % tag
        third = (os.getpid() % 4) * 64 + index
        self.host_addr = "%s.%d.1" % (SUBNET, third)
        self.addr = "%s.%d.2" % (SUBNET, third)
        self.procs = []
        self.dirs = []
        try:
            _ip("netns", "add", self.name)
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", self.host_addr + "/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            self.run(["ip", "addr", "add", self.addr + "/30", "dev", self.ns_if])
            self.run(["ip", "link", "set", self.ns_if, "up"])
            self.run(["ip", "link", "set", "lo", "up"])
        except Exception:
            self.close()
            raise

    def run(self, cmd, check=True, input=None):
        r = subprocess.run(["ip", "netns", "exec", self.name] + list(cmd), capture_output=True, text=True,
                           timeout=15, input=input)
        if check and r.returncode != 0:
            raise LabError("in %s: %s: %s" % (self.name, " ".join(cmd), r.stderr.strip()))
        return r

    def spawn(self, cmd, log_path):
        log = open(log_path, "wb")
        p = subprocess.Popen(["ip", "netns", "exec", self.name] + list(cmd), stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    # ---- faults -----------------------------------------------------------------------------------
    def _nft(self, rule_body):
        self.run(["nft", "-f", "-"], input="table inet fault\ndelete table inet fault\n", check=False)
        self.run(["nft", "-f", "-"], input="table inet fault {\n chain input {\n type filter hook input priority 0;\n"
                 "%s\n }\n}\n" % rule_body)

    def drop(self):
        """Black hole: every packet reaching the member is dropped (established connections too)."""
        self._nft("iifname \"%s\" drop" % self.ns_if)

    def reject(self):
        """Refusal: new TCP connections get a reset, existing ones too."""
        self._nft("iifname \"%s\" meta l4proto tcp reject with tcp reset" % self.ns_if)

    def heal(self):
        self.run(["nft", "delete", "table", "inet", "fault"], check=False)
        self.run(["ip", "link", "set", self.ns_if, "up"], check=False)

    def link_down(self):
        """Partition: the member's side of the link goes down."""
        self.run(["ip", "link", "set", self.ns_if, "down"])

    # ---- servers ----------------------------------------------------------------------------------
    def redis(self, workdir, port=6379, replicaof=None):
        """redis-server bound to this namespace's address; returns the Popen once it answers PING."""
        cmd = ["redis-server", "--port", str(port), "--bind", self.addr, "--save", "", "--appendonly", "no",
               "--dir", workdir, "--protected-mode", "no"]
        if replicaof:
            cmd += ["--replicaof", replicaof[0], str(replicaof[1])]
        p = self.spawn(cmd, os.path.join(workdir, "redis-%s.log" % self.name))
        wait_until(lambda: self.run(["redis-cli", "-h", self.addr, "-p", str(port), "PING"],
                                    check=False).stdout.strip() == "PONG", 10, "redis in %s" % self.name)
        return p

    def postgres(self, workdir, port=5432, standby=False):
        """A PostgreSQL 15 server bound to this namespace's address (trust auth), run as the postgres user
        (it refuses root); standby=True starts it in recovery with no primary: a standby in name only
        that `SELECT pg_promote()` turns into a writer. Returns the Popen once it answers."""
        import pwd
        bindir = "/usr/lib/postgresql/15/bin"
        pw = pwd.getpwnam("postgres")
        import tempfile
        data = tempfile.mkdtemp(prefix="repoint-%s-pg-" % self.name)  # under /tmp: the postgres user reaches it
        self.dirs.append(data)
        os.chown(data, pw.pw_uid, pw.pw_gid)
        as_pg = ["runuser", "-u", "postgres", "--"]
        r = subprocess.run(as_pg + [bindir + "/initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync",
                                    "--no-instructions", "-E", "UTF8", "--locale=C"],
                           capture_output=True, text=True, timeout=120, cwd="/")
        if r.returncode != 0:
            raise LabError("initdb in %s: %s" % (self.name, r.stdout + r.stderr))
        with open(os.path.join(data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhost all all 0.0.0.0/0 trust\n")
        if standby:
            open(os.path.join(data, "standby.signal"), "w").close()
        for n in ("pg_hba.conf", "standby.signal"):
            if os.path.exists(os.path.join(data, n)):
                os.chown(os.path.join(data, n), pw.pw_uid, pw.pw_gid)
        p = self.spawn(as_pg + [bindir + "/postgres", "-D", data, "-p", str(port), "-k", data,
                                "-c", "listen_addresses=%s" % self.addr, "-c", "fsync=off"],
                       os.path.join(workdir, "pg-%s.log" % self.name))
        wait_until(lambda: self.run(["runuser", "-u", "postgres", "--", bindir + "/psql", "-h", self.addr, "-p",
                                     str(port), "-U", "postgres", "-Atc", "SELECT 1"], check=False).stdout.strip()
                   == "1", 30, "postgres in %s" % self.name)
        return p

    def mariadb(self, workdir, port=3306, read_only=False):
        """A MariaDB server bound to this namespace's address with a TCP user test/test (all privileges on
        test.*; SUPER-free, so read_only binds it); read_only=True is a replica in name only that
        `SET GLOBAL read_only = 0` turns into a writer. Returns the Popen once it answers."""
        import tempfile
        data = tempfile.mkdtemp(prefix="repoint-%s-my-" % self.name)
        self.dirs.append(data)
        sock = self.mariadb_sock = os.path.join(data, "sock")
        r = subprocess.run(["mariadb-install-db", "--no-defaults", "--datadir=%s" % data, "--user=root",
                            "--auth-root-authentication-method=normal", "--skip-test-db"],
                           capture_output=True, text=True, timeout=120, cwd="/")
        if r.returncode != 0:
            raise LabError("mariadb-install-db in %s: %s" % (self.name, r.stdout + r.stderr))
        p = self.spawn(["/usr/sbin/mariadbd", "--no-defaults", "--datadir=%s" % data, "--port=%d" % port,
                        "--bind-address=%s" % self.addr, "--socket=%s" % sock, "--user=root", "--skip-name-resolve",
                        "--read-only=%d" % (1 if read_only else 0), "--innodb-buffer-pool-size=16M",
                        "--performance-schema=OFF", "--pid-file=%s/mariadbd.pid" % data],
                       os.path.join(workdir, "mariadb-%s.log" % self.name))

        def ready():
            return self.run(["mariadb", "--no-defaults", "-S", sock, "-uroot", "-e",
                             "CREATE DATABASE IF NOT EXISTS test; CREATE USER IF NOT EXISTS 'test'@'%' IDENTIFIED BY 'test';"
                             " GRANT ALL ON test.* TO 'test'@'%'"], check=False).returncode == 0
        wait_until(ready, 60, "mariadb in %s" % self.name)
        return p

    def mariadb_root(self, sql):
        """Run SQL as root over this namespace's MariaDB socket (what the TCP user may not do)."""
        return self.run(["mariadb", "--no-defaults", "-S", self.mariadb_sock, "-uroot", "-e", sql])

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 9)
                except OSError:
                    pass
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        self.procs = []
        import shutil
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.dirs = []
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)
