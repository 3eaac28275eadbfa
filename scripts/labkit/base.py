"""The interface every engine of the lab implements, plus the parts they share."""

import contextlib
import signal
import time

from .procs import LabError, RunAs, kill_hard, log_tail, pid_alive, signal_pid, spawn, wait_until


class Steps:
    """Collects named step durations (ms) for switchover/repoint reports."""

    def __init__(self):
        self.steps = {}
        self.promoted_at = None
        self._t0 = time.monotonic()

    @contextlib.contextmanager
    def __call__(self, name):
        t = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = round((time.monotonic() - t) * 1000.0, 1)

    def promoted(self):
        self.promoted_at = time.time()

    def total_ms(self):
        return round((time.monotonic() - self._t0) * 1000.0, 1)


class Engine:
    """One database engine. Subclasses implement the abstract methods below.

    Nodes are labkit.lab.Node objects (name/host/port/pid/dir/log/st); node.st is the node's
    mutable state dict (persisted by the Lab).
    """

    name = None            # "postgres" | "mysql" | "redis"
    prefix = None          # node name prefix: "pg", "my", "rd"
    count = 0              # nodes created by up()
    port_offset = 0        # offset of the first node from --base-port
    proc_names = ()        # process names (/proc/PID/comm) of this engine's servers
    stop_signal = signal.SIGTERM
    service_user = None    # OS user the servers must run as when the lab runs as root
    ready_timeout = 30.0

    def __init__(self, lab):
        self.lab = lab
        self.runas = RunAs(self.service_user)

    # ---- to implement ---------------------------------------------------------------------------
    def create(self, nodes):
        """Initialise and start all nodes: nodes[0] primary, the rest replicas; return when replicating."""
        raise NotImplementedError

    def destroy(self, nodes):
        """After the nodes' data is gone: anything else the engine made outside them (optional)."""

    def start(self, node, as_replica_of=None):
        """Start a stopped node: with its last configuration, or as a replica of as_replica_of."""
        raise NotImplementedError

    def connect(self, node, **kw):
        """A client connection (autocommit) to the node, as the test user."""
        raise NotImplementedError

    def role(self, node):
        """'primary' | 'replica' as the node itself reports it; raises if unreachable."""
        raise NotImplementedError

    def upstream_port(self, node):
        """Port of the primary this node is actually replicating from (link up), or None."""
        raise NotImplementedError

    def promote(self, node, steps):
        raise NotImplementedError

    def make_replica(self, node, primary, steps):
        """Turn a live node (replica of someone else, or a second primary) into a replica of primary."""
        raise NotImplementedError

    def rejoin(self, node, primary, steps):
        """Start a stopped/crashed node as a replica of primary."""
        raise NotImplementedError

    def switchover(self, old, new, others, steps):
        """Planned switchover old -> new; others (live replicas) follow new; old rejoins as replica."""
        raise NotImplementedError

    def write_and_check(self, primary, replicas, timeout=15.0):
        """Write a token on primary and wait until every replica has it."""
        raise NotImplementedError

    def service_config(self):
        """Engine-specific keys of repoint's [service] section (probe_user, ...)."""
        raise NotImplementedError

    # ---- shared ---------------------------------------------------------------------------------
    def alive(self, node):
        return pid_alive(node.pid, self.proc_names, node.dir)

    def safe_role(self, node):
        if not self.alive(node):
            return "down"
        try:
            return self.role(node)
        except Exception:  # noqa: BLE001 - unreachable counts as down
            return "down"

    def _spawn(self, node, cmd):
        # cwd = the node's dir: identifies the process (pid_alive) even before it has set up its argv
        pid = spawn(cmd, node.log, cwd=node.dir, runas=self.runas)
        self.lab._set_node(node, pid=pid)
        return pid

    def wait_ready(self, node, probe, timeout=None, what="to accept connections"):
        """Poll probe() until it succeeds; fail fast with the log tail if the process dies."""
        def cond():
            if not self.alive(node):
                raise LabError("%s (%s, pid %s) exited while starting\n%s" % (
                    node.name, self.name, node.pid, log_tail(node.log)))
            probe()
            return True
        wait_until(cond, timeout or self.ready_timeout, "%s %s" % (node.name, what), interval=0.02,
                   detail=lambda: log_tail(node.log))

    def stop(self, node, timeout=10.0):
        """Graceful stop (engine's stop signal), SIGKILL of the whole group after timeout."""
        if node.pid and self.alive(node):
            signal_pid(node.pid, self.stop_signal)
            try:
                wait_until(lambda: not self.alive(node), timeout, "%s to stop" % node.name, interval=0.02)
            except LabError:
                pass
        kill_hard(node.pid, self.proc_names, node.dir)

    def crash(self, node):
        kill_hard(node.pid, self.proc_names, node.dir)

    def fail(self, node, msg):
        raise LabError("%s: %s\n%s" % (node.name, msg, log_tail(node.log)))
