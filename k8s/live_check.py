"""What the checks that run the product (image_check, mongo_init_check, arm64_check) share:
a container's environment as the kubelet builds it from rendered manifests, the MongoDB
stand-in they run against, waiting, HTTP requests, and the ok/FAIL lines they print."""

import base64
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml


def rendered_documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def container_env(docs, kind, container_name, pod_ip="127.0.0.1"):
    """The environment of container `container_name` of the `kind` workload, as the kubelet
    would build it (plain values, ConfigMap and Secret keys resolved from the rendered
    objects, the pod's address given as `pod_ip`); also the pod spec, the container and the
    objects by (kind, name)."""
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}

    def config(name):
        return by_name[("ConfigMap", name)].get("data") or {}

    def secret(name):
        data = by_name[("Secret", name)].get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    workload = next(d for d in docs if d["kind"] == kind)
    pod = workload["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == container_name)
    env = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env.update(config(source["configMapRef"]["name"]))
        if "secretRef" in source:
            env.update(secret(source["secretRef"]["name"]))
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            env[item["name"]] = config(ref["configMapKeyRef"]["name"])[ref["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in ref:
            env[item["name"]] = secret(ref["secretKeyRef"]["name"])[ref["secretKeyRef"]["key"]]
        elif (ref.get("fieldRef") or {}).get("fieldPath") == "status.podIP":
            env[item["name"]] = pod_ip
        else:
            raise SystemExit(f"cannot resolve env {item['name']}: {ref}")
    return env, pod, container, by_name


def expand(command, env):
    """A probe's or container's command with `$(VAR)` replaced as the kubelet does (an
    unknown variable is left as written)."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), word) for word in command]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=60):
    """Waits until `check()` is true; a connection error counts as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def request(method, url, body=None, content_type="application/json"):
    """(status, headers, body text); status None when no answer came. A body is sent as
    `content_type`."""
    headers = {"Content-Type": content_type} if body is not None else {}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        # Generous: the arm64 binary runs under emulation.
        with urllib.request.urlopen(req, timeout=20) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()
    except OSError:
        return None, {}, ""


def start_stand_in(port, workdir):
    """The MongoDB stand-in with authentication on (users are created through the
    localhost exception), on `port`, its data in `workdir`/db; returns once it accepts."""
    process = subprocess.Popen(
        ["secantusd-rs", "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(workdir / "db"),
         "--auth", "--sync-on-commit", "--log-file-max", "16MB", "--cache-size", "128M"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(f"the MongoDB stand-in on {port}", lambda: socket.create_connection(("127.0.0.1", port), 1).close() or True)
    except SystemExit:
        stop([process])
        raise
    return process


def stop(processes):
    """Stops each process by its handle (SIGTERM, then SIGKILL after 10 s), last started first."""
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Checks:
    def __init__(self):
        self.failed = []

    def expect(self, ok, what):
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failed.append(what)

    def finish(self, passed):
        """Exits 1 if any check failed, else prints `passed`."""
        if self.failed:
            print(f"{len(self.failed)} check(s) failed")
            sys.exit(1)
        print(passed)
