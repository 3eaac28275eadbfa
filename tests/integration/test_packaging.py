"""Packaging: `make install` puts the binary, the example configuration and a systemd unit where they belong;
the unit passes `systemd-analyze verify`; repoint speaks systemd's notify protocol (READY=1 once it listens,
RELOADING=1 / READY=1 around a reload, STOPPING=1 when it stops)."""
import os
import signal
import socket
import subprocess

import pytest

from conftest import REPOINT_BIN, TOP, free_port


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dest = str(tmp_path_factory.mktemp("dest"))
    build = os.path.dirname(os.path.dirname(REPOINT_BIN))
    r = subprocess.run(["make", "-s", "-C", build, "install", "DESTDIR=" + dest], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return dest


def installed_files(dest):
    return {os.path.relpath(os.path.join(d, f), dest) for d, _, fs in os.walk(dest) for f in fs}


def test_make_install(installed):
    files = installed_files(installed)
    units = [f for f in files if f.endswith("lib/systemd/system/repoint.service")]
    assert any(f.endswith("bin/repoint") for f in files), files
    assert units, files
    # The example configuration, in its own directory under sysconfdir: where the unit runs it and
    # --help says it is.
    prefix = "/" + units[0].split("/lib/systemd/")[0]
    example = "%s/etc/repoint/repoint.ini" % prefix
    with open(installed + example) as f, open(os.path.join(TOP, "conf", "repoint.ini")) as shipped:
        assert f.read() == shipped.read()
    unit = open(os.path.join(installed, units[0])).read()
    assert "ExecStart=%s/bin/repoint -c %s\n" % (prefix, example) in unit, unit
    assert "ExecStartPre=%s/bin/repoint -t -c %s\n" % (prefix, example) in unit, unit
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "DynamicUser=yes", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=",
                 "ConfigurationDirectory=repoint"):
        assert line + "\n" in unit.split("[Service]")[1], line
    help_text = subprocess.run([REPOINT_BIN, "--help"], capture_output=True, text=True, timeout=30).stdout
    assert example in " ".join(help_text.split()), help_text
    # `repoint drill --help` points to a reference that is installed.
    help_text = subprocess.run([REPOINT_BIN, "drill", "--help"], capture_output=True, text=True, timeout=30).stdout
    ref = help_text.split("Reference")[1].split(": ", 1)[1].strip()
    assert ref.endswith("/drill.md") and os.path.exists(installed + ref), (ref, files)


def test_reinstall_and_uninstall_keep_an_edited_configuration(tmp_path):
    dest = str(tmp_path / "dest")
    build = os.path.dirname(os.path.dirname(REPOINT_BIN))

    def make(target):
        r = subprocess.run(["make", "-C", build, target, "DESTDIR=" + dest], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        return r.stdout

    make("install")
    example = next(os.path.join(dest, f) for f in installed_files(dest) if f.endswith("etc/repoint/repoint.ini"))
    with open(example, "a") as f:
        f.write("; edited here\n")
    edited = open(example).read()
    assert "already there: left as it is" in make("install")
    assert open(example).read() == edited
    make("uninstall")
    assert open(example).read() == edited
    assert not any(f.endswith("bin/repoint") or f.endswith(".service") for f in installed_files(dest))
    # Unedited, it goes with the rest.
    with open(os.path.join(TOP, "conf", "repoint.ini")) as f:
        open(example, "w").write(f.read())
    make("uninstall")
    assert not os.path.exists(example)


def verify(tmp_path, text):
    path = tmp_path / "repoint.service"
    path.write_text(text)
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_the_unit_passes_systemd_analyze_verify(installed, tmp_path):
    files = installed_files(installed)
    unit_rel = next(f for f in files if f.endswith("lib/systemd/system/repoint.service"))
    prefix = "/" + unit_rel.split("/lib/systemd/")[0]
    # The binary it names lives under DESTDIR here: point the unit there, nothing else changes.
    text = open(os.path.join(installed, unit_rel)).read().replace(prefix, installed + prefix)
    r = verify(tmp_path, text)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    # The check can fail: a unit whose binary is missing does.
    r = verify(tmp_path, text.replace("bin/repoint -c", "bin/nonexistent -c"))
    assert r.returncode != 0 and "nonexistent" in r.stdout + r.stderr


def test_sd_notify(tmp_path):
    sock_path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(sock_path)
    srv.settimeout(20)
    port, admin = free_port(), free_port()
    cfg = tmp_path / "r.ini"
    cfg.write_text("[repoint]\nadmin = 127.0.0.1:%d\n[service rd]\nprotocol = redis\nlisten = 127.0.0.1:%d\n"
                   "members = 127.0.0.1:1\n" % (admin, port))
    p = subprocess.Popen([REPOINT_BIN, "-c", str(cfg)], env=dict(os.environ, NOTIFY_SOCKET=sock_path),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        msg = srv.recv(4096).decode()
        assert "READY=1" in msg and "MAINPID=%d" % p.pid in msg, msg
        # Ready means listening: the listener takes a connection at once.
        socket.create_connection(("127.0.0.1", port), 2).close()
        p.send_signal(signal.SIGHUP)
        assert srv.recv(4096).decode() == "RELOADING=1"
        assert srv.recv(4096).decode() == "READY=1"
        p.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in srv.recv(4096).decode()
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        srv.close()


def allowed_keys(tmp_path, section):
    """The keys the configuration parser takes in a section, from its own error for an unknown one."""
    body = {"repoint": "[repoint]\nnot_a_key = 1\n", "aws": "[aws]\nnot_a_key = 1\n", "service": ""}[section]
    text = body + "[service s]\nprotocol = redis\nlisten = 127.0.0.1:1\nmembers = 127.0.0.1:2\n"
    if section == "service":
        text += "not_a_key = 1\n"
    path = tmp_path / ("keys-%s.ini" % section)
    path.write_text(text)
    r = subprocess.run([REPOINT_BIN, "-t", "-c", str(path)], capture_output=True, text=True, timeout=30)
    return set(r.stderr.split("allowed keys: ")[1].strip().split(", "))


def test_man_pages(installed, tmp_path):
    import re
    pages = {os.path.basename(f): os.path.join(installed, f) for f in installed_files(installed)
             if re.search(r"share/man/man[15]/repoint", f)}
    assert set(pages) == {"repoint.1", "repoint.ini.5"}, pages
    for path in pages.values():
        r = subprocess.run(["groff", "-mdoc", "-Tutf8", "-ww", "-z", path], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == "", r.stderr
    # repoint.ini(5) documents every key the parser takes, in its section, and no other.
    text = open(pages["repoint.ini.5"]).read()
    documented, section = {}, None
    for line in text.splitlines():
        m = re.match(r"\.Ss \[(\w+)", line)
        if m:
            section = m.group(1)
        m = re.match(r"\.It Cm (\w+)", line)
        if m and section:
            documented.setdefault(section, set()).add(m.group(1))
    for section in ("repoint", "aws", "service"):
        assert documented.get(section) == allowed_keys(tmp_path, section), section
    # repoint(1) documents every option --help shows.
    help_text = subprocess.run([REPOINT_BIN, "--help"], capture_output=True, text=True, timeout=30).stdout
    page = open(pages["repoint.1"]).read()
    for opt in set(re.findall(r"--(\w+)", help_text)):
        assert "Fl -%s" % opt in page, opt


def test_deploy_examples_match_their_configuration(tmp_path):
    """deploy/: the Kubernetes sidecar's probes hit the admin port and paths its ConfigMap's repoint.ini serves,
    that configuration passes `repoint -t`, its secrets come from what the pod mounts or sets; the Dockerfile
    copies paths that exist, installs packages Debian has and runs the configuration where it installs it;
    the ECS task runs that image with it."""
    import json
    import re
    import yaml
    deploy = os.path.join(TOP, "deploy")
    docs = list(yaml.safe_load_all(open(os.path.join(deploy, "kubernetes.yaml"))))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    dep = next(d for d in docs if d["kind"] == "Deployment")
    ini = cm["data"]["repoint.ini"]
    rp = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "repoint")
    mounts = {m["name"]: m["mountPath"] for m in rp["volumeMounts"]}
    # Where the config lives: the args name it in the ConfigMap's mount.
    assert rp["args"] == ["-c", mounts["config"] + "/repoint.ini"], rp["args"]
    # Secrets: env: names what the container sets, file: what the Secret mount holds.
    envs = {e["name"] for e in rp["env"]}
    for name in re.findall(r"env:(\w+)", ini):
        assert name in envs, name
    files = re.findall(r"file:(\S+)", ini)
    assert files and all(f.startswith(mounts["secrets"] + "/") for f in files), files
    # It passes the check (the secret file stands in a temp dir here, the token in the environment).
    (tmp_path / "probe-password").write_text("x\n")
    path = tmp_path / "repoint.ini"
    path.write_text(ini.replace(mounts["secrets"], str(tmp_path)))
    r = subprocess.run([REPOINT_BIN, "-t", "-c", str(path)], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, **{n: "t" for n in envs}))
    assert r.returncode == 0, r.stderr
    admin_port = int(re.search(r"^admin = [^:\n]+:(\d+)", ini, re.M).group(1))
    for probe, want in (("startupProbe", "/startup"), ("readinessProbe", "/ready"), ("livenessProbe", "/live")):
        assert rp[probe]["httpGet"] == {"path": want, "port": admin_port}, (probe, rp[probe])
    assert any(p["containerPort"] == admin_port for p in rp["ports"])
    # The health paths are the admin API's.
    admin_c = open(os.path.join(TOP, "proxy", "admin.c")).read()
    for want in ("/startup", "/ready", "/live"):
        assert 'evhttp_set_cb(a->http, "%s"' % want in admin_c, want
    # The Dockerfile: its COPY sources exist in the tree, its runtime packages exist in Debian, and it runs
    # the configuration where `configure --sysconfdir` puts it.
    dockerfile = open(os.path.join(deploy, "Dockerfile")).read()
    assert "COPY . /src" in dockerfile
    sysconfdir = re.search(r"--sysconfdir=(\S+)", dockerfile).group(1)
    assert 'CMD ["-c", "%s/repoint/repoint.ini"]' % sysconfdir in dockerfile
    assert "COPY --from=build /out%s/repoint/repoint.ini %s/repoint/repoint.ini" % (sysconfdir, sysconfdir) in dockerfile
    runtime = dockerfile.split("FROM debian:bookworm-slim\n")[1]
    pkgs = re.findall(r"\b(lib[\w.+-]+|ca-certificates|curl)\b", runtime.split("&&")[1])
    assert len(pkgs) >= 10, pkgs
    r = subprocess.run(["apt-cache", "policy"] + pkgs, capture_output=True, text=True, timeout=60)
    assert r.stdout.count("Candidate: ") == len(pkgs) and "Candidate: (none)" not in r.stdout, r.stdout
    assert "USER repoint" in dockerfile
    # Its HEALTHCHECK asks /live (a route of the admin API) where the configuration it ships listens.
    shipped_admin = re.search(r"^admin = ([^\n;]+?)\s*(;|$)", open(os.path.join(TOP, "conf", "repoint.ini")).read(),
                              re.M).group(1)
    health = re.search(r"^HEALTHCHECK .*\n?.*CMD (\[.*\])$", dockerfile, re.M)
    assert health and json.loads(health.group(1))[-1] == "http://%s/live" % shipped_admin, dockerfile
    assert "curl" in pkgs
    # ECS: the same image and configuration, the admin port mapped, the app started after repoint.
    task = json.load(open(os.path.join(deploy, "ecs-task-definition.json")))
    ecs_rp = next(c for c in task["containerDefinitions"] if c["name"] == "repoint")
    assert ecs_rp["command"] == ["-c", "%s/repoint/repoint.ini" % sysconfdir]
    example_admin = int(re.search(r"^admin = [^:\n]+:(\d+)", open(os.path.join(TOP, "conf", "repoint.ini")).read(),
                                  re.M).group(1))
    assert ecs_rp["portMappings"][0]["containerPort"] == example_admin
    app = next(c for c in task["containerDefinitions"] if c["name"] == "app")
    assert app["dependsOn"] == [{"containerName": "repoint", "condition": "START"}]
