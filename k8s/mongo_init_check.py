#!/usr/bin/env python3
"""Runs MongoDB's side of the manifests for real, as the StatefulSet would, and checks it.

Usage: mongo_init_check.py RENDERED.yaml --mongosh PATH --service BINARY

No cluster runs here, so this does what the `mongo` image's entrypoint does on a first
start with an empty volume, against a local MongoDB stand-in with authentication on:
creates the root user from MONGO_INITDB_ROOT_USERNAME/PASSWORD, then runs every script the
StatefulSet mounts in /docker-entrypoint-initdb.d with the real `mongosh`, logged in as
root, with exactly the environment the StatefulSet gives its container (Secret and
ConfigMap keys resolved from the rendered objects). Then it proves that:

- the service, started with the environment the Deployment gives it, logs in as the
  application user the script created, and stores and lists documents;
- that user can only touch its own database: writing elsewhere, reading elsewhere and
  creating users are refused.

It also measures one run of the command a mongosh readiness probe would run (wall and
CPU time, peak RSS), the figure the StatefulSet's probes were chosen from.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from live_check import Checks, container_env, expand, free_port, rendered_documents, request, start_stand_in, stop, wait_for


def init_scripts(pod, container, by_name):
    """The files the StatefulSet mounts at /docker-entrypoint-initdb.d: (name, text)."""
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/docker-entrypoint-initdb.d")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    data = by_name[("ConfigMap", volume["configMap"]["name"])]["data"]
    return sorted(data.items())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered", type=Path)
    parser.add_argument("--mongosh", required=True)
    parser.add_argument("--service", required=True, help="the mongo-api binary to start")
    args = parser.parse_args()
    docs = rendered_documents(args.rendered)
    port = free_port()
    # The pod's address is where the stand-in listens: mongosh takes host:port.
    mongo_env, pod, container, by_name = container_env(docs, "StatefulSet", "mongo", pod_ip=f"127.0.0.1:{port}")
    api_env, _, _, _ = container_env(docs, "Deployment", "api")
    checks = Checks()

    workdir = Path(tempfile.mkdtemp(prefix="mongo-init-check-"))
    processes = []
    try:
        processes.append(start_stand_in(port, workdir))

        def mongosh(uri, *extra, env=None):
            return subprocess.run(
                [args.mongosh, uri, "--quiet", "--norc", *extra],
                capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120,
            )

        # What docker-entrypoint.sh does first: the root user, through the localhost exception.
        root, root_pw = mongo_env["MONGO_INITDB_ROOT_USERNAME"], mongo_env["MONGO_INITDB_ROOT_PASSWORD"]
        created = mongosh(
            f"mongodb://127.0.0.1:{port}/admin",
            "--eval", f"db.createUser({{user: {json.dumps(root)}, pwd: {json.dumps(root_pw)}, roles: ['root']}})",
        )
        checks.expect(created.returncode == 0, f"root user created ({created.stderr.strip()[:200]})")
        # Then every init script, run by mongosh as root with the container's environment
        # (the entrypoint runs `mongosh --host ... -u root -p ... --authenticationDatabase admin DB FILE`).
        root_uri = f"mongodb://127.0.0.1:{port}/test?authSource=admin"
        for name, text in init_scripts(pod, container, by_name):
            script = workdir / name
            script.write_text(text)
            run = mongosh(root_uri, "-u", root, "-p", root_pw, str(script), env=mongo_env)
            checks.expect(run.returncode == 0, f"{name} ran with mongosh ({(run.stdout + run.stderr).strip()[:200]})")

        # The service, with the Deployment's environment, logs in as the application user.
        http_port, management_port = free_port(), free_port()
        service_env = {**api_env, "MONGO_HOST": "127.0.0.1", "MONGO_PORT": str(port), "BIND_ADDR": "127.0.0.1",
                       "PORT": str(http_port), "MANAGEMENT_PORT": str(management_port)}
        service = subprocess.Popen([args.service], env=service_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(service)
        base = f"http://127.0.0.1:{http_port}"

        wait_for("the service's readiness", lambda: request("GET", f"http://127.0.0.1:{management_port}/readyz")[0] == 200)
        code, _, _ = request("POST", f"{base}/data", b'{"from":"init check"}')
        checks.expect(code == 201, f"the service, logged in as {api_env['MONGO_USER']!r}, stores a document ({code})")
        code, _, body = request("GET", f"{base}/data")
        checks.expect(code == 200 and json.loads(body) == [{"from": "init check"}], f"and lists it ({code} {body[:80]})")

        # The application user may touch its own database only.
        app_uri = f"mongodb://127.0.0.1:{port}/{api_env['MONGO_DB']}?authSource={api_env.get('MONGO_AUTH_DB', 'admin')}"
        login = ["-u", api_env["MONGO_USER"], "-p", api_env["MONGO_PASSWORD"]]
        own = mongosh(app_uri, *login, "--eval", "db.data.countDocuments({})")
        checks.expect(own.returncode == 0 and own.stdout.strip() == "1", f"the app user reads its own database ({own.stdout.strip()})")
        for what, code in [
            ("write another database", "db.getSiblingDB('other').x.insertOne({a: 1})"),
            ("read another database", "db.getSiblingDB('admin').system.users.findOne()"),
            ("create a user", "db.getSiblingDB('admin').createUser({user: 'x', pwd: 'y', roles: ['root']})"),
        ]:
            run = mongosh(app_uri, *login, "--eval", code)
            refused = run.returncode != 0 and re.search(r"[Uu]nauthori[sz]ed|not authorized|requires authentication", run.stdout + run.stderr)
            checks.expect(bool(refused), f"the app user may not {what} ({(run.stdout + run.stderr).strip()[:120]})")

        # The StatefulSet's own startup probe, its command expanded as the kubelet does.
        startup = expand(container["startupProbe"]["exec"]["command"], mongo_env)
        checks.expect(startup[0] == "mongosh", f"the startup probe runs mongosh ({startup[0]})")
        probed = subprocess.run([args.mongosh, *startup[1:]], capture_output=True, text=True, timeout=120)
        checks.expect(
            probed.returncode == 0 and probed.stdout.strip() == "1",
            f"the startup probe, asking the pod's address, answers 1 ({(probed.stdout + probed.stderr).strip()[:120]})",
        )

        # One run of what a mongosh readiness probe runs, inside the container, each period;
        # measured in a process of its own, so that only this run counts.
        probe = [args.mongosh, "--quiet", "--norc", f"mongodb://127.0.0.1:{port}", "--eval", "db.adminCommand('ping').ok"]
        measure = (
            "import resource, subprocess, sys, time; t = time.monotonic(); "
            "out = subprocess.run(sys.argv[1:], capture_output=True, text=True).stdout.strip(); "
            "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "print(out, time.monotonic() - t, r.ru_utime + r.ru_stime, r.ru_maxrss)"
        )
        out, wall, cpu, rss = subprocess.run(
            [sys.executable, "-c", measure, *probe], capture_output=True, text=True, check=True
        ).stdout.split()
        checks.expect(out == "1", "the mongosh ping answers 1")
        print(f"mongosh readiness command: {float(wall):.2f} s wall, {float(cpu):.2f} s CPU, peak RSS {int(rss) // 1024} MiB")
    finally:
        stop(processes)
        shutil.rmtree(workdir, ignore_errors=True)
    checks.finish("MongoDB init checks passed")


if __name__ == "__main__":
    main()
