"""A certificate authority for the lab and for tests, made with the openssl command line: a CA, certificates
for names/addresses it signs, and an expired one (for refusal tests)."""

import os
import subprocess


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name, days=2):
    """A self-signed CA `name`; returns the path of its certificate (its key is next to it)."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".crt",
            "-days", str(days), "-subj", "/CN=repoint test " + name, cwd=d)
    return os.path.join(d, name + ".crt")


def make_cert(d, ca, name, san, days=2):
    """A certificate for `san` (e.g. "IP:127.0.0.1,DNS:localhost") signed by the CA `ca`: (cert, key)."""
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\n" % san)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
            "-subj", "/CN=" + name, cwd=d)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key", "-CAcreateserial",
            "-out", name + ".crt", "-days", str(days), "-extfile", name + ".ext", cwd=d)
    return os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")


def make_expired(d, ca, name, san):
    """A certificate from `ca` for `san` that expired in 2020 (openssl ca takes explicit dates)."""
    with open(os.path.join(d, name + ".cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = d\n[d]\ndatabase = %s.index\nnew_certs_dir = .\nserial = %s.serial\n"
                "default_md = sha256\npolicy = p\ncopy_extensions = copy\n[p]\ncommonName = supplied\n"
                "[ext]\nsubjectAltName = %s\n" % (name, name, san))
    open(os.path.join(d, name + ".index"), "w").close()
    with open(os.path.join(d, name + ".serial"), "w") as f:
        f.write("1000\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
            "-subj", "/CN=" + name, cwd=d)
    openssl("ca", "-batch", "-config", name + ".cnf", "-extensions", "ext", "-startdate", "20200101000000Z",
            "-enddate", "20200102000000Z", "-cert", ca + ".crt", "-keyfile", ca + ".key", "-in", name + ".csr",
            "-out", name + ".crt", "-notext", cwd=d)
    return os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")


def lab_pki(d):
    """The lab's, in a fresh `d`: a CA (ca.pem) and one server certificate for 127.0.0.1 / localhost (server.crt,
    server.key) that every node serves."""
    import shutil
    shutil.rmtree(d, ignore_errors=True)   # a certificate left from an earlier lab is no longer signed by this CA
    os.makedirs(d)
    os.chmod(d, 0o755)
    make_ca(d, "ca", days=7)              # a lab may stay up for days
    cert, key = make_cert(d, "ca", "server", "IP:127.0.0.1,DNS:localhost", days=7)
    ca = os.path.join(d, "ca.pem")
    os.replace(os.path.join(d, "ca.crt"), ca)
    for f in ("ca.srl", "server.csr", "server.ext"):
        os.unlink(os.path.join(d, f))
    for p in (ca, cert, key):
        os.chmod(p, 0o644)   # servers run as their own users; a test lab's key is no secret
    return {"ca": ca, "cert": cert, "key": key}
