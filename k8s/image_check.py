#!/usr/bin/env python3
"""Runs the built image the way the rendered Deployment runs it, and checks it.

Usage: image_check.py RENDERED.yaml --image mongo-api:0.1.0

Kubernetes cannot run here, so this proves what can be proven without it: the image
starts with exactly the environment the Deployment gives its container (plain values,
ConfigMap keys and Secret keys resolved from the rendered objects), finds `mongo`
(mapped to a local MongoDB stand-in on the port the ConfigMap names, with the
application user the Secret names), serves every endpoint, runs as the unprivileged user
without a shell, and stops cleanly on SIGTERM. Needs DOCKER_HOST to reach a Docker engine
that already has the image (`just test-image` starts one and builds it).
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from live_check import Checks, container_env, rendered_documents, request, start_stand_in, stop, wait_for

ROOT = Path(__file__).resolve().parent.parent
CONTAINER = "mongo-api-image-check"


def probe_url(container, kind, ports):
    """The URL the kubelet requests for the container's `kind` probe (on the host network)."""
    http = container[kind]["httpGet"]
    port = ports[http["port"]] if isinstance(http["port"], str) else http["port"]
    return f"http://127.0.0.1:{port}{http['path']}"


def pod_annotations(docs):
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    return deployment["spec"]["template"]["metadata"].get("annotations") or {}


def docker(*args, check=True):
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered", type=Path)
    parser.add_argument("--image", required=True)
    args = parser.parse_args()
    docs = rendered_documents(args.rendered)
    env, _, container, _ = container_env(docs, "Deployment", "api")
    if container["image"] != args.image:
        raise SystemExit(f"the Deployment runs {container['image']}, not {args.image}")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    mongo_port = int(env["MONGO_PORT"])
    base = f"http://127.0.0.1:{ports['http']}"
    liveness = probe_url(container, "livenessProbe", ports)
    readiness = probe_url(container, "readinessProbe", ports)
    management = f"http://127.0.0.1:{ports['management']}"
    checks = Checks()

    workdir = Path(tempfile.mkdtemp(prefix="image-check-"))
    processes = []
    try:
        # The database the Deployment's variables point at: `mongo` (an --add-host entry)
        # on MONGO_PORT, with the application user and password from the Secret.
        processes.append(start_stand_in(mongo_port, workdir))
        bench = ["cargo", "run", "--quiet", "-p", "bench", "--", "create-user", "--port", str(mongo_port)]
        subprocess.run(bench + ["--user", "root"], check=True, cwd=ROOT, env={**os.environ, "NEW_USER_PASSWORD": "image-check-root"})
        subprocess.run(
            bench + ["--user", env["MONGO_USER"], "--role", f"readWrite@{env['MONGO_DB']}"],
            check=True, cwd=ROOT,
            env={**os.environ, "ADMIN_USER": "root", "ADMIN_PASSWORD": "image-check-root", "NEW_USER_PASSWORD": env["MONGO_PASSWORD"]},
        )

        env_file = workdir / "env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        docker("rm", "-f", CONTAINER, check=False)
        docker("run", "--detach", "--name", CONTAINER, "--network", "host", "--add-host", "mongo:127.0.0.1",
               "--env-file", str(env_file), args.image)
        wait_for(f"the container to answer its liveness probe ({liveness})", lambda: request("GET", liveness)[0] == 200)
        print(f"container running with {sorted(env)} from the rendered Deployment")

        inspect = json.loads(docker("image", "inspect", args.image).stdout)[0]
        size = inspect["Size"]
        checks.expect(size < 10_000_000, f"image size {size / 1e6:.2f} MB is under 10 MB")
        checks.expect(inspect["Config"]["User"] == "65532:65532", f"image user {inspect['Config']['User']} is unprivileged")
        shell = docker("run", "--rm", "--entrypoint", "/bin/sh", args.image, "-c", "true", check=False)
        checks.expect(shell.returncode != 0, "the image has no shell")

        wait_for(f"readiness (MongoDB reachable as `mongo`; {readiness})", lambda: request("GET", readiness)[0] == 200)
        status, _, _ = request("GET", f"{base}/healthz")
        checks.expect(status == 200, f"GET /healthz on the API port (kept for compatibility) -> {status}")
        status, headers, body = request("GET", f"{base}/")
        checks.expect(status == 200 and body.startswith("Welcome to the Flask app! The current time is: "), f"GET / -> {status}")
        status, _, body = request("POST", f"{base}/data", b'{"from":"image check","n":1}')
        checks.expect(status == 201 and json.loads(body) == {"status": "Data inserted"}, f"POST /data -> {status} {body}")
        status, _, body = request("GET", f"{base}/data")
        checks.expect(status == 200 and json.loads(body) == [{"from": "image check", "n": 1}], f"GET /data -> {status} {body}")
        status, headers, body = request("GET", f"{base}/data?limit=1")
        checks.expect(status == 200, f"GET /data?limit=1 -> {status}")
        status, _, body = request("POST", f"{base}/data", b"[]")
        checks.expect(status == 400 and "error" in json.loads(body), f"POST /data [] -> {status}")
        status, _, _ = request("POST", f"{base}/data", b"{}", "text/plain")
        checks.expect(status == 415, f"POST /data as text/plain -> {status}")
        status, _, _ = request("GET", f"{base}/nope")
        checks.expect(status == 404, f"GET /nope -> {status}")
        status, headers, _ = request("DELETE", f"{base}/data")
        checks.expect(status == 405 and headers.get("Allow") == "GET, HEAD, POST", f"DELETE /data -> {status}")
        scrape = pod_annotations(docs)
        status, _, body = request("GET", f"http://127.0.0.1:{scrape['prometheus.io/port']}{scrape['prometheus.io/path']}")
        checks.expect(status == 200 and "http_requests_total" in body, f"scrape of the annotated metrics port -> {status}")
        status, _, _ = request("GET", f"{management}/data")
        checks.expect(status == 404, f"GET /data on the management port -> {status} (it serves probes and metrics only)")

        # Kubernetes stops a pod with SIGTERM; the process must drain and exit 0 in time.
        started = time.monotonic()
        docker("stop", "--time", "20", CONTAINER)
        took = time.monotonic() - started
        state = json.loads(docker("inspect", CONTAINER).stdout)[0]["State"]
        checks.expect(state["ExitCode"] == 0 and took < 5, f"SIGTERM: exit code {state['ExitCode']} after {took:.2f} s")
        logs = docker("logs", CONTAINER).stdout.splitlines()
        checks.expect(all(json.loads(line).get("level") for line in logs), f"{len(logs)} log lines, each a JSON object")
        checks.expect(any('"message":"stopped"' in line for line in logs), "the log ends with a clean stop")
        checks.expect(not any(env["MONGO_PASSWORD"] in line for line in logs), "the password is not in the logs")
    finally:
        docker("rm", "-f", CONTAINER, check=False)
        stop(processes)
        shutil.rmtree(workdir, ignore_errors=True)
    checks.finish("image checks passed")


if __name__ == "__main__":
    main()
