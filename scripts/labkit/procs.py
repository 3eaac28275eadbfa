"""Process, port and waiting helpers shared by every engine of the lab."""

import os
import pwd
import signal
import socket
import subprocess
import threading
import time


class LabError(Exception):
    """A lab operation failed; the message is meant for humans."""


def is_root():
    return os.geteuid() == 0


def wait_until(cond, timeout, what, interval=0.02, detail=None):
    """Poll cond() until it returns something truthy or the deadline passes.

    Exceptions raised by cond() count as "not yet" (the last one is reported).
    detail() may add context (e.g. a log tail) to the timeout error.
    """
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except LabError:
            raise
        except Exception as exc:  # noqa: BLE001 - polled conditions fail while servers start
            last_exc = exc
        if time.monotonic() >= deadline:
            msg = "timed out after %.1fs waiting for %s" % (timeout, what)
            if last_exc is not None:
                msg += " (last error: %s)" % (str(last_exc).strip().splitlines() or [repr(last_exc)])[0]
            if detail:
                extra = detail()
                if extra:
                    msg += "\n" + extra
            raise LabError(msg)
        time.sleep(interval)


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port, host="127.0.0.1"):
    """Free to listen on (like the servers, ignore TIME_WAIT leftovers of earlier connections)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def log_tail(path, lines=25):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no log at %s)" % path
    tail = data[-lines:]
    return "--- last %d lines of %s ---\n%s" % (len(tail), path, "\n".join(tail))


class RunAs:
    """Who runs a server's binaries: the current user, or (as root) a service user."""

    def __init__(self, user=None):
        self.user = user if (user and is_root()) else None
        if self.user:
            pw = pwd.getpwnam(self.user)
            self.uid, self.gid, self.home = pw.pw_uid, pw.pw_gid, pw.pw_dir
        else:
            self.uid, self.gid, self.home = os.getuid(), os.getgid(), os.environ.get("HOME", "/")

    def popen_kwargs(self):
        if not self.user:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def env(self):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC"}
        env["HOME"] = self.home
        if self.user:
            env["USER"] = env["LOGNAME"] = self.user
        return env

    def chown(self, path):
        if self.user:
            os.chown(path, self.uid, self.gid)

    def mkdir(self, path, mode=0o700):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        self.chown(path)

    def write(self, path, text, mode=0o600):
        tmp = path + ".lab-tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        self.chown(tmp)
        os.replace(tmp, path)


def run(cmd, runas=None, cwd=None, timeout=120, what=None):
    """Run a command to completion; raise LabError with its output on failure."""
    runas = runas or RunAs()
    try:
        p = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout, env=runas.env(),
                           **runas.popen_kwargs())
    except subprocess.TimeoutExpired as exc:
        raise LabError("%s timed out after %ss" % (what or cmd[0], timeout)) from exc
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        lines = out.strip().splitlines()
        if len(lines) > 30:   # keep where it went wrong (often near the top) and how it ended
            lines = lines[:15] + ["..."] + lines[-12:]
        tail = "\n".join(lines)
        raise LabError("%s failed (exit %d): %s\n%s" % (what or os.path.basename(cmd[0]), p.returncode,
                                                          " ".join(cmd), tail))
    return out


def spawn(cmd, log_path, cwd, runas=None):
    """Start a long-running server in its own session (so its process group can be killed)."""
    runas = runas or RunAs()
    with open(log_path, "ab") as logf:
        p = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             start_new_session=True, close_fds=True, env=runas.env(),
                             **runas.popen_kwargs())
    _children[p.pid] = p
    return p.pid


# Popen objects of servers started by this process (so they get reaped, not left as zombies).
_children = {}


def _reap(pid):
    p = _children.get(pid)
    if p is not None:
        if p.poll() is not None:
            _children.pop(pid, None)
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def _proc_info(pid):
    """(comm, state, cwd, cmdline) of a process, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        state = stat[stat.rindex(")") + 2:].split()[0]
        try:
            cwd = os.readlink("/proc/%d/cwd" % pid)
        except OSError:
            cwd = ""
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            cmdline = ""
        return comm, state, cwd, cmdline
    except (OSError, ValueError):
        return None


def _belongs(info, names, path):
    comm, state, cwd, cmdline = info
    if state in ("Z", "X") or comm not in names:
        return False
    path = os.path.realpath(path)
    cmdline += " "
    return (cwd == path or cwd.startswith(path + "/") or (path + "/") in cmdline
            or (path + " ") in cmdline)


def pid_alive(pid, names, path):
    """True if pid is a live (non-zombie) process named in names that runs inside path."""
    if not pid:
        return False
    _reap(pid)
    info = _proc_info(pid)
    return bool(info) and _belongs(info, names, path)


def find_procs(names, path):
    """Every live process named in names whose cwd or command line is inside path."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == me:
            continue
        info = _proc_info(pid)
        if info and _belongs(info, names, path):
            found.append(pid)
    return found


def signal_pid(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def kill_hard(pid, names, path):
    """SIGKILL a server, its process group, and any of its processes still around; wait until gone."""
    if pid and pid_alive(pid, names, path):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            signal_pid(pid, signal.SIGKILL)
    for _ in range(3):
        left = find_procs(names, path)
        for p in left:
            signal_pid(p, signal.SIGKILL)
        if not left:
            break
    wait_until(lambda: not pid_alive(pid, names, path) and not find_procs(names, path), 10,
               "processes in %s to die" % path)


def in_parallel(fn, items):
    """fn(item) for every item, each in its own thread; returns [(item, exception)] for those that raised."""
    errors = []

    def one(item):
        try:
            fn(item)
        except Exception as exc:  # noqa: BLE001 - handed back to the caller
            errors.append((item, exc))
    threads = [threading.Thread(target=one, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
