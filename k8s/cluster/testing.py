"""What the cluster's tests share: kubectl and just against the test cluster, busybox pods
that Pod Security `restricted` admits, waiting, and a steady HTTP load that counts every
request that failed."""

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import settings as s

BUSYBOX = s.BUSYBOX_IMAGE

# kubectl keeps what an API server serves (its discovery) for 6 hours in ~/.kube/cache,
# by the server's address, which every test cluster shares: a kind that an earlier
# cluster, or an earlier test, had and this one has not would still be "known" to it.
# Every kubectl of a test run (its own, and those the recipes run) reads a cache of its own.
os.environ["KUBECACHEDIR"] = tempfile.mkdtemp(prefix="kubectl-cache-")
atexit.register(shutil.rmtree, os.environ["KUBECACHEDIR"], ignore_errors=True)
# What Pod Security `restricted` asks of a container.
RESTRICTED = {
    "runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}


def kubectl(*args, input=None, check=True):
    return subprocess.run(["kubectl", f"--kubeconfig={s.KUBECONFIG}", *args], input=input, capture_output=True,
                          text=True, check=check)


def just(*args, env=None, check=True):
    """A recipe, as a user runs it, against the test cluster (its kubeconfig in KUBECONFIG)."""
    environment = {**os.environ, "KUBECONFIG": str(s.KUBECONFIG), **(env or {})}
    done = subprocess.run(["just", *args], cwd=s.ROOT, env=environment, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"just {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def scope(namespace):
    """kubectl's arguments for NAMESPACE; none for cluster-wide objects (None)."""
    return ["-n", namespace] if namespace else []


def get(namespace, *args):
    return json.loads(kubectl(*scope(namespace), "get", *args, "-o", "json").stdout)


def apply(namespace, *objects):
    kubectl(*scope(namespace), "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                     "items": list(objects)}))


def pod(name, command, security=None, container=(), volumes=(), mounts=(), labels=None):
    """A busybox pod running COMMAND, with a writable /tmp (the image is FROM scratch)."""
    spec = {"name": name, "image": BUSYBOX, "command": ["sh", "-c", command],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts], **dict(container)}
    if security is not None:
        spec["securityContext"] = security
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [spec], "terminationGracePeriodSeconds": 0,
                     "volumes": [{"name": "tmp", "emptyDir": {}}, *volumes]}}


def wait_ready(namespace, name, timeout=120):
    kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{name}", f"--timeout={timeout}s")


def eventually(what, seconds, check, every=1):
    """CHECK's first true value within SECONDS, else a failure naming WHAT (a string, or a
    function giving one then)."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what() if callable(what) else what}")
        time.sleep(every)


def http(method, url, body=None, timeout=5):
    """(status, body) of one request on a new connection; status 0 when none came."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except urllib.error.URLError as e:
        return 0, str(e.reason)


def http_get(url):
    status, body = http("GET", url)
    if status != 200:
        raise AssertionError(f"GET {url}: {status} {body}")
    return body.strip()


class SteadyLoad:
    """CLIENTS threads each sending GET PATH on a new connection (so kube-proxy spreads them,
    as it spreads clients) until stopped; every request that did not end in 200 is kept
    with the second it failed at. `with SteadyLoad(url) as load: ...; load.failures`."""

    def __init__(self, url, clients=4, pause=0.02):
        self.url, self.clients, self.pause = url, clients, pause
        self.ok = 0
        self.failures = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []

    def _client(self):
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status, body = http("GET", self.url, timeout=10)
                error = None if status == 200 else f"status {status}: {body[:80]}"
            except Exception as e:  # a reset, a timeout, a body cut short: each a failure
                error = f"{type(e).__name__}: {e}"
            with self._lock:
                if error is None:
                    self.ok += 1
                else:
                    self.failures.append((round(started - self.started, 1), error))
            time.sleep(self.pause)

    def __enter__(self):
        self.started = time.monotonic()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()

    def summary(self):
        return f"{self.ok} requests answered 200, {len(self.failures)} failed: {self.failures[:10]}"
