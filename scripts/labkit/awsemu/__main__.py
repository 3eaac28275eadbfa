"""Run the emulator in the foreground: python3 -m labkit.awsemu --dir LAB_DIR [--port P].

`lab aws up` runs this detached (and starts the emulator's own Redis nodes first)."""

import argparse
import json
import os
import signal
import sys
import threading
import time

from .server import DEFAULT_CREDENTIALS, DEFAULT_REGION, Emulator


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m labkit.awsemu", description=__doc__)
    ap.add_argument("--dir", required=True, help="the lab directory")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: any free port")
    ap.add_argument("--config", help="JSON: {credentials, region, delays, test_failover_limit, ...}")
    ap.add_argument("--ready-file", help="written (JSON: pid, port, url) once listening")
    ap.add_argument("--promote-delay", type=float, help="seconds from a failover call to the promotion")
    ap.add_argument("--settle-delay", type=float, help="seconds from the promotion to 'available'")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    cfg = {}
    if a.config:
        with open(a.config) as f:
            cfg = json.load(f)
    delays = dict(cfg.pop("delays", None) or {})
    for env, key in (("AWSEMU_PROMOTE_DELAY", "promote"), ("AWSEMU_SETTLE_DELAY", "settle")):
        if os.environ.get(env) and key not in delays:
            delays[key] = float(os.environ[env])
    if a.promote_delay is not None:
        delays["promote"] = a.promote_delay
    if a.settle_delay is not None:
        delays["settle"] = a.settle_delay
    cfg["delays"] = delays
    creds = cfg.pop("credentials", None) or DEFAULT_CREDENTIALS
    region = cfg.pop("region", None) or DEFAULT_REGION
    emu = Emulator(a.dir, a.host, a.port, credentials=creds, region=region, cfg=cfg, quiet=a.quiet)

    done = threading.Event()

    def on_signal(signum, frame):
        done.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emu.start()
    if a.ready_file:
        tmp = a.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"pid": os.getpid(), "port": emu.port, "url": emu.url}, f)
        os.replace(tmp, a.ready_file)
    print("awsemu listening on %s (lab %s)" % (emu.url, emu.lab_dir), file=sys.stderr, flush=True)
    # stop with the lab: SIGTERM (lab aws down / lab down), or the lab dir gone
    while not done.wait(1.0):
        if not os.path.isdir(emu.lab_dir):
            print("awsemu: lab dir %s is gone; exiting" % emu.lab_dir, file=sys.stderr, flush=True)
            break
    t = time.time()
    emu.stop()
    print("awsemu stopped (%.2fs)" % (time.time() - t), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
