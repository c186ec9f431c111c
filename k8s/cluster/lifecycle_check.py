#!/usr/bin/env python3
"""The test cluster's whole life, as `just test` runs it, each step a check:

1. the host is recorded (host_check.py);
2. `up` is killed (SIGKILL) once its control plane runs, as a user's Ctrl-\\ or an OOM
   kill would: its daemons go on without it;
3. `up` again: it removes what the killed run left and starts a working node;
4. the cluster's tests (test_cluster.py), then the tests given as arguments (modules in
   k8s/cluster or k8s), against that node;
5. `down`, and the host is as recorded;
6. `up` after that `down`, and `down` again: the host is still as recorded.

Whatever fails, the cluster is brought down before this exits.
"""

import signal
import subprocess
import sys
import time
import unittest

import host
import settings as s

PYTHON = sys.executable
CLUSTER = [PYTHON, str(s.HERE / "cluster.py")]
HOST_CHECK = [PYTHON, str(s.HERE / "host_check.py")]
SNAPSHOT = s.CACHE / "host-before.json"


def step(what):
    print(f"cluster lifecycle: {what}", flush=True)


def run(argv):
    subprocess.run(argv, check=True)


def killed_up():
    """`up`, SIGKILLed once the API server has started."""
    proc = subprocess.Popen(CLUSTER + ["up"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while host.running("kube-apiserver") is None:
        if proc.poll() is not None:
            raise RuntimeError(f"up ended ({proc.returncode}) before the API server started")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("the API server did not start within 300 s")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def tests(modules):
    suite = unittest.defaultTestLoader.loadTestsFromNames(["test_cluster", *modules])
    return unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()


def main():
    modules = sys.argv[1:]
    step("removing what an earlier run may have left, then recording the host")
    run(CLUSTER + ["down"])
    run(HOST_CHECK + ["snapshot", str(SNAPSHOT)])
    passed = False
    try:
        step("up, killed once its API server runs")
        killed_up()
        step("up again, over what the killed run left")
        run(CLUSTER + ["up"])
        step("the tests")
        passed = tests(modules)
    finally:
        step("down")
        run(CLUSTER + ["down"])
    run(HOST_CHECK + ["compare", str(SNAPSHOT)])
    if not passed:
        sys.exit("cluster lifecycle: tests failed")
    step("up after down, and down again")
    try:
        run(CLUSTER + ["up"])
    finally:
        run(CLUSTER + ["down"])
    run(HOST_CHECK + ["compare", str(SNAPSHOT)])


if __name__ == "__main__":
    main()
