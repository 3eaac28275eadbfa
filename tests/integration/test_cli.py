"""The command line and the configuration contract: no servers needed."""
import os
import re
import subprocess

import pytest

from conftest import REPOINT_BIN, TOP


def run(*args, input_text=None):
    return subprocess.run([REPOINT_BIN, *args], capture_output=True, text=True, timeout=30)


def write(tmp_path, text, name="repoint.ini"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


VALID = """\
[repoint]
admin = 127.0.0.1:9901

[service orders]
protocol = postgres
listen = 127.0.0.1:6432
members = 127.0.0.1:25432, 127.0.0.1:25433
"""


def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0 and "-c FILE" in r.stdout and "--test" in r.stdout
    r = run("--version")
    assert r.returncode == 0 and re.match(r"repoint \d+\.\d+\.\d+", r.stdout)
    for flag in ("--version", "-V"):
        r = run("drill", flag)
        assert r.returncode == 0 and re.match(r"repoint \d+\.\d+\.\d+", r.stdout), (flag, r.stdout, r.stderr)


def test_check_mode_accepts_a_valid_config(tmp_path):
    r = run("-t", "-c", write(tmp_path, VALID))
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


def test_check_mode_warns_about_likely_mistakes(tmp_path):
    r = run("-t", "-c", write(tmp_path, VALID))
    assert r.returncode == 0 and "warning" not in r.stdout, r.stdout
    text = VALID.replace("admin = 127.0.0.1:9901", "admin = 0.0.0.0:9901").replace(
        "127.0.0.1:25433", "no-such-member.invalid:25433")
    r = run("-t", "-c", write(tmp_path, text))
    assert r.returncode == 0, r.stderr
    assert "admin listens on 0.0.0.0, beyond loopback" in r.stdout and "until admin_token is set" in r.stdout
    assert "member no-such-member.invalid does not resolve now" in r.stdout
    # A secret written in the file: said (never the secret itself); from the environment: not.
    r = run("-t", "-c", write(tmp_path, VALID + "probe_password = hunter2\n"))
    assert r.returncode == 0 and "the password is written in the file" in r.stdout, r.stdout
    assert "hunter2" not in r.stdout + r.stderr
    env = dict(os.environ, REPOINT_TEST_PW="hunter2")
    r = subprocess.run([REPOINT_BIN, "-t", "-c", write(tmp_path, VALID + "probe_password = env:REPOINT_TEST_PW\n")],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and "warning" not in r.stdout, r.stdout


def test_config_words_in_any_case(tmp_path):
    r = run("-t", "-c", write(tmp_path, VALID.replace("admin = 127.0.0.1:9901", "admin = 127.0.0.1:9901\nlog_level = INFO")
                                   .replace("protocol = postgres", "protocol = Postgres")))
    assert r.returncode == 0, r.stderr


def test_example_config_is_valid():
    r = run("-t", "-c", os.path.join(TOP, "conf", "repoint.ini"))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("text,line,words", [
    (VALID.replace("protocol = postgres", "protocol = oracle"), 5, "protocol"),
    (VALID.replace("[service orders]", "[servce orders]"), 4, "servce"),
    (VALID + "probe_interval = fast\n", 8, "probe_interval"),
    (VALID + "colour = blue\n", 8, "colour"),
    (VALID + "\n[service billing]\nprotocol = redis\nlisten = 127.0.0.1:6432\nmembers = 127.0.0.1:1\n", 11,
     "127.0.0.1:6432"),
    (VALID.replace("listen = 127.0.0.1:6432\n", ""), 4, "listen"),
    (VALID.replace("127.0.0.1:25433", "127.0.0.1:99999"), 7, "members"),
    (VALID.replace("listen = 127.0.0.1:6432", "listen = :6432"), 6, "write 127.0.0.1:6432 for this machine only"),
])
def test_bad_config_names_file_and_line_and_exits_2(tmp_path, text, line, words):
    path = write(tmp_path, text)
    for args in (("-t", "-c", path), ("-c", path)):
        r = run(*args)
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        assert f"{path}:{line}:" in r.stderr, r.stderr
        assert words in r.stderr, r.stderr


def test_missing_config_file(tmp_path):
    r = run("-c", str(tmp_path / "nope.ini"))
    assert r.returncode == 2 and "nope.ini" in r.stderr


def test_usage_errors_exit_2():
    assert run().returncode == 2
    assert run("--frobnicate").returncode == 2


def test_an_in_tree_build_does_not_break_the_scripts(tmp_path):
    """README's quick build (./configure at the top) must not stop the scripts' out-of-tree builds."""
    src = str(tmp_path / "src")
    subprocess.run(["git", "clone", "-q", TOP, src], check=True, timeout=120)
    subprocess.run(["autoreconf", "-fi"], cwd=src, check=True, capture_output=True, timeout=300)
    subprocess.run(["./configure", "-q"], cwd=src, check=True, capture_output=True, timeout=300)
    os.makedirs(os.path.join(src, "build", "x"))
    r = subprocess.run(["../../configure", "-q"], cwd=os.path.join(src, "build", "x"), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "already configured" in r.stderr   # what the scripts met before
    r = subprocess.run([os.path.join(src, "scripts", "undo-intree-build")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "undoing the in-tree build" in r.stderr, r.stderr
    r = subprocess.run(["../../configure", "-q"], cwd=os.path.join(src, "build", "x"), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr


def test_a_member_name_is_looked_up_again(tmp_path):
    """A member given by name follows its DNS: repoint runs in a mount namespace of its own whose /etc/hosts is
    a file of the test's; when the name moves to another address, new sessions go there (resolve_interval)."""
    import shlex
    import redis
    from conftest import Repoint, free_port, wait_for
    port = free_port()
    servers = [subprocess.Popen(["redis-server", "--bind", ip, "--port", str(port), "--save", "", "--appendonly",
                                 "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
               for ip in ("127.0.0.2", "127.0.0.3")]
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.2 member.repoint.test\n")
    listen, admin = free_port(), free_port()
    cfg = tmp_path / "names.ini"
    cfg.write_text("[repoint]\nadmin = 127.0.0.1:%d\n[service rd]\nprotocol = redis\nlisten = 127.0.0.1:%d\n"
                   "members = member.repoint.test:%d\nprobe_interval = 100ms\nresolve_interval = 1s\n"
                   % (admin, listen, port))

    def in_own_hosts(argv):
        return ["unshare", "-m", "sh", "-c", "mount --bind %s /etc/hosts && exec %s" % (
            shlex.quote(str(hosts)), " ".join(shlex.quote(a) for a in argv))]
    rp = None
    try:
        for ip in ("127.0.0.2", "127.0.0.3"):
            wait_for(lambda ip=ip: redis.Redis(ip, port, socket_timeout=2).ping(), 10, what="redis on " + ip)
        rp = Repoint(str(cfg), admin, {"rd": listen}, wrap=in_own_hosts)
        wait_for(lambda: rp.status(), 10, what="repoint")
        rp.wait_writer("rd")
        c = redis.Redis("127.0.0.1", listen, socket_timeout=5)
        c.set("where", "first")
        c.close()
        assert redis.Redis("127.0.0.2", port).get("where") == b"first"
        hosts.write_text("127.0.0.3 member.repoint.test\n")   # the same file, seen through the bind mount
        wait_for(lambda: "now resolves to 127.0.0.3" in rp.logtext(), 15, what="the name looked up again")
        c = redis.Redis("127.0.0.1", listen, socket_timeout=5)
        c.set("where", "second")
        c.close()
        assert redis.Redis("127.0.0.3", port).get("where") == b"second"
        assert redis.Redis("127.0.0.2", port).get("where") == b"first"
    finally:
        if rp is not None:
            rp.stop()
        for s in servers:
            s.kill()
            s.wait()
