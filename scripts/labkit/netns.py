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
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)
