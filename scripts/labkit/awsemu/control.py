"""The lab's side of the emulator: start it detached, stop it, talk to its control API, write a
repoint config whose services follow the emulated clusters (`source = rds:lab-postgres`, ...).

Used by labkit.lab.Lab.aws_* and `scripts/lab aws ...`.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from ..procs import LabError, RunAs, free_port, log_tail, signal_pid
from . import nodes as awsnodes
from .models import GLOBAL_ID, MEMORYDB, RDS_CLUSTERS, REGION
from .server import DEFAULT_CREDENTIALS, DEFAULT_REGION

SCRIPTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
LONG_TERM_KEY = "AKIALABLABLABLAB1234"
TEMP_KEY = "ASIALABLABLABLAB5678"


def _emulator_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except (OSError, TypeError):
        return None


def _is_emulator(pid, lab_dir):
    args = _emulator_cmdline(pid) if pid else None
    if not args:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
    except OSError:
        return False
    return b"labkit.awsemu" in args and os.fsencode(lab_dir) in args


def find_emulators(lab_dir):
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit() and int(e) != os.getpid() and _is_emulator(int(e), lab_dir):
            out.append(int(e))
    return out


def info(lab):
    lab._refresh()
    aws = lab.state.get("aws") or {}
    if not aws.get("url") or not _is_emulator(aws.get("pid"), lab.dir):
        raise LabError("the AWS emulator is not running in %s (run `lab aws up`)" % lab.dir)
    return aws


def url(lab):
    return info(lab)["url"]


def call(lab, method, path, data=None, timeout=30.0):
    """The emulator's control API: JSON in, JSON out."""
    u = info(lab)["url"] + path
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(u, data=body, method=method,
                                 headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.load(exc)
        except ValueError:
            detail = {}
        raise LabError("emulator %s %s: HTTP %d %s" % (method, path, exc.code, detail.get("error", detail)))
    except (urllib.error.URLError, OSError) as exc:
        raise LabError("emulator %s %s: %s" % (method, path, exc))


def up(lab, port=None, delays=None, config=None, quiet=True, timeout=30.0):
    """Start the emulator's Redis nodes and the emulator (detached); returns its endpoint URL."""
    with lab._op():
        if not lab.state.get("engines"):
            raise LabError("nothing is up in %s: run `lab up` first" % lab.dir)
        aws = lab.state.get("aws") or {}
        if aws.get("pid") and _is_emulator(aws["pid"], lab.dir):
            raise LabError("the AWS emulator already runs in %s (pid %d, %s); `lab aws down` first"
                           % (lab.dir, aws["pid"], aws.get("url")))
        for pid in find_emulators(lab.dir):          # a leftover without state
            _stop_pid(pid)
        lab.state["aws"] = aws
        base = awsnodes.aws_dir(lab)
        os.makedirs(base, exist_ok=True)
        eng = awsnodes.engine(lab)
        ns = awsnodes.nodes(lab)
        if not ns or not all(eng.alive(n) for n in ns):
            if ns:
                awsnodes.stop_all(lab)
            awsnodes.start_all(lab)
        cfg = dict(config or {})
        d = dict(cfg.pop("delays", None) or {})
        for env, key in (("AWSEMU_PROMOTE_DELAY", "promote"), ("AWSEMU_SETTLE_DELAY", "settle")):
            if os.environ.get(env) and key not in d:
                d[key] = float(os.environ[env])
        d.update(delays or {})
        cfg["delays"] = d
        cfg.setdefault("region", DEFAULT_REGION)
        cfg.setdefault("credentials", DEFAULT_CREDENTIALS)
        cfg_path = os.path.join(base, "awsemu.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
        ready = os.path.join(base, "awsemu.ready")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ready)
        log = os.path.join(base, "awsemu.log")
        cmd = [PYTHON, "-m", "labkit.awsemu", "--dir", lab.dir, "--port", str(port or 0),
               "--config", cfg_path, "--ready-file", ready] + (["--quiet"] if quiet else [])
        runas = RunAs()
        with open(log, "ab") as logf:
            p = subprocess.Popen(cmd, cwd=SCRIPTS, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                 env=dict(runas.env(), PYTHONPATH=SCRIPTS, PYTHONDONTWRITEBYTECODE="1"))
        from .. import procs
        procs._children[p.pid] = p       # reaped by this process, not left a zombie
        deadline = time.monotonic() + timeout
        while True:
            if p.poll() is not None:
                raise LabError("the AWS emulator exited (%s) while starting\n%s" % (p.returncode, log_tail(log)))
            if os.path.exists(ready):
                with open(ready) as f:
                    r = json.load(f)
                break
            if time.monotonic() > deadline:
                _stop_pid(p.pid)
                raise LabError("the AWS emulator did not start within %ss\n%s" % (timeout, log_tail(log)))
            time.sleep(0.02)
        aws.update(pid=p.pid, port=r["port"], url=r["url"], log=log, config=cfg_path,
                   region=cfg["region"], started_at=time.time())
        lab._save()
    # answering?
    deadline = time.monotonic() + timeout
    while True:
        try:
            call(lab, "GET", "/_lab/health", timeout=2)
            break
        except LabError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    return r["url"]


def _stop_pid(pid, timeout=15.0):
    if not pid:
        return
    signal_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    from .. import procs
    while time.monotonic() < deadline:
        procs._reap(pid)
        args = _emulator_cmdline(pid)
        if not args or not any(b"labkit.awsemu" in a for a in args) or _zombie(pid):
            procs._reap(pid)
            return
        time.sleep(0.02)
    signal_pid(pid, signal.SIGKILL)
    procs._reap(pid)


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def down(lab, remove=True):
    """Stop the emulator and its Redis nodes (call inside lab._op() or not)."""
    with lab._op():
        aws = lab.state.get("aws") or {}
        pids = set(find_emulators(lab.dir))
        if aws.get("pid") and _is_emulator(aws["pid"], lab.dir):
            pids.add(aws["pid"])
        for pid in pids:
            _stop_pid(pid)
        if aws.get("nodes"):
            awsnodes.stop_all(lab, remove=remove)
        if remove:
            shutil.rmtree(awsnodes.aws_dir(lab), ignore_errors=True)
            lab.state.pop("aws", None)
        else:
            for k in ("pid", "port", "url"):
                aws.pop(k, None)
        if lab.state.get("engines") or os.path.exists(lab.state_path):
            lab._save()
        return sorted(pids)


def env(lab, temporary=False):
    """Environment for the aws CLI, botocore and repoint (the standard credential chain)."""
    aws = info(lab)
    creds = DEFAULT_CREDENTIALS
    try:
        with open(aws["config"]) as f:
            creds = json.load(f).get("credentials") or creds
    except (OSError, ValueError, KeyError):
        pass
    pick = [k for k, v in creds.items() if bool(v.get("token")) == bool(temporary)]
    if not pick:
        raise LabError("no %s credentials configured" % ("temporary" if temporary else "long-term"))
    key = pick[0]
    out = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": creds[key]["secret"],
           "AWS_DEFAULT_REGION": aws.get("region", DEFAULT_REGION), "AWS_REGION": aws.get("region", DEFAULT_REGION),
           "AWS_ENDPOINT_URL": aws["url"], "AWS_EC2_METADATA_DISABLED": "true"}
    if temporary:
        out["AWS_SESSION_TOKEN"] = creds[key]["token"]
    return out


# ---- repoint config ---------------------------------------------------------------------------------
def aws_services(lab):
    """[(service name, protocol, source, shard, lab engine for probe keys)] for what is up."""
    lab._refresh()
    engines = lab.state.get("engines", {})
    out = []
    for cid, eng, *_ in RDS_CLUSTERS:
        if eng in engines:
            out.append((eng, eng, "rds:%s" % cid, None, eng))
    if "redis" in engines:
        out.append(("redis", "redis", "elasticache:lab-redis", None, "redis"))
    if (lab.state.get("aws") or {}).get("nodes"):
        out.append(("redis-global", "redis", "elasticache-global:%s" % GLOBAL_ID, None, "redis"))
        for sname, _, _ in MEMORYDB[2]:
            out.append(("memorydb-%s" % sname, "redis", "memorydb:%s" % MEMORYDB[0], sname, "redis"))
    return out


def write_config(lab, path=None, admin=None, services=None, log_level="info", poll_interval="1s",
                 failover_poll_interval="100ms", region=None, **overrides):
    """A repoint INI whose services take their members from the emulator (`source =`, no members).

    services: names to keep (default all: postgres, mysql, redis, redis-global, memorydb-0001,
    memorydb-0002). overrides: key=value for every service (None drops a key), or NAME={...} for
    one (names with '-' via a dict: **{"redis-global": {...}}).
    Returns {service: listen port, ..., "admin": port}; the aws CLI/repoint credentials come from
    aws_env() (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    """
    aws = info(lab)
    path = path or os.path.join(awsnodes.aws_dir(lab), "repoint.ini")
    if admin is None:
        admin = "127.0.0.1:%d" % free_port()
    elif isinstance(admin, int):
        admin = "127.0.0.1:%d" % admin
    svcs = aws_services(lab)
    if services:
        unknown = set(services) - {s[0] for s in svcs}
        if unknown:
            raise LabError("no such service(s) %s (up: %s)" % (", ".join(sorted(unknown)),
                                                                ", ".join(s[0] for s in svcs)))
        svcs = [s for s in svcs if s[0] in services]
    per = {k: overrides.pop(k) for k in list(overrides) if k in {s[0] for s in svcs}}
    lines = ["[repoint]", "admin = %s" % admin, "log_level = %s" % log_level, "",
             "[aws]", "region = %s" % (region or aws.get("region", REGION)),
             "endpoint_url = %s" % aws["url"], "poll_interval = %s" % poll_interval,
             "failover_poll_interval = %s" % failover_poll_interval, ""]
    ports = {}
    for name, proto, source, shard, eng in svcs:
        port = free_port()
        while port in ports.values():
            port = free_port()
        ports[name] = port
        kv = [("protocol", proto), ("listen", "127.0.0.1:%d" % port), lab.SERVICE_DEFAULTS[0],
              ("source", source)]
        if shard:
            kv.append(("shard", shard))
        kv += list(lab.SERVICE_DEFAULTS[1:])
        kv += list(lab._engine(eng).service_config().items())
        kv += list(lab.SERVICE_TAIL)
        d = dict(kv)
        for k, v in list(overrides.items()) + list(per.get(name, {}).items()):
            d[k] = v
        lines.append("[service %s]" % name)
        lines += ["%s = %s" % (k, v) if v != "" else "%s =" % k for k, v in d.items() if v is not None]
        lines.append("")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    ports["admin"] = int(admin.rsplit(":", 1)[1])
    with lab._op():
        if lab.state.get("aws") is not None:
            lab.state["aws"]["repoint_config"] = {"path": os.path.abspath(path), "admin": admin,
                                                  "services": {k: v for k, v in ports.items() if k != "admin"}}
    return ports
