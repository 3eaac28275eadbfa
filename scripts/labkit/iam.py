"""A TLS lab's RDS IAM authentication, shared by its engines: one PAM service per lab
(/etc/pam.d/repoint-lab-<hash>) whose pam_exec runs labkit/iamcheck.py with the token, and the
checker's settings and log in DIR/iam. Postgres logs its IAM roles in through it (pg_hba `pam`),
MariaDB its IAM users (auth_pam with the cleartext plugin, as RDS MySQL's AWSAuthenticationPlugin
asks for the token). `Lab.down` takes the PAM service and DIR/iam away."""

import contextlib
import hashlib
import json
import os

CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "iamcheck.py")


def service(lab_dir):
    """The name of a lab's PAM service: one per lab dir, so that labs side by side do not share one."""
    return "repoint-lab-" + hashlib.sha1(lab_dir.encode()).hexdigest()[:10]


def paths(lab_dir):
    d = os.path.join(lab_dir, "iam")
    return {"dir": d, "config": os.path.join(d, "iam.json"), "log": os.path.join(d, "iam.log"),
            "pam": os.path.join("/etc/pam.d", service(lab_dir))}


def write_pam(lab_dir):
    p = paths(lab_dir)
    with open(p["pam"], "w") as f:
        f.write("# repoint lab %s: RDS IAM tokens, checked by %s\n"
                "auth required pam_exec.so expose_authtok quiet /usr/bin/python3 %s %s\n"
                "account required pam_permit.so\n" % (lab_dir, CHECKER, CHECKER, p["config"]))
    os.chmod(p["pam"], 0o644)


def setup(lab_dir, log_owner=None):
    """The checker's settings (kept when there already), its log (writable by log_owner (uid, gid):
    the server that runs the check), and the PAM service; returns the service's name."""
    from .awscreds import DEFAULT_CREDENTIALS, DEFAULT_REGION
    p = paths(lab_dir)
    os.makedirs(p["dir"], mode=0o755, exist_ok=True)
    os.chmod(p["dir"], 0o755)
    if not os.path.isfile(p["config"]):
        with open(p["config"], "w") as f:
            json.dump({"region": DEFAULT_REGION, "credentials": DEFAULT_CREDENTIALS, "log": p["log"], "skew_s": 0}, f)
        os.chmod(p["config"], 0o644)
    open(p["log"], "a").close()
    if log_owner is not None:
        os.chown(p["log"], *log_owner)
    write_pam(lab_dir)
    return service(lab_dir)


def ensure_pam(lab_dir):
    """After `down --keep`, which takes the PAM service away, a node started again gets it back."""
    p = paths(lab_dir)
    if os.path.isfile(p["config"]) and not os.path.exists(p["pam"]):
        write_pam(lab_dir)


def configure(lab_dir, **changes):
    """The checker's settings (region, credentials, skew_s): read at each login."""
    path = paths(lab_dir)["config"]
    with open(path) as f:
        cfg = json.load(f)
    cfg.update(changes)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def log(lab_dir):
    with open(paths(lab_dir)["log"]) as f:
        return f.read()


def remove_pam(lab_dir):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths(lab_dir)["pam"])
