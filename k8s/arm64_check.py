#!/usr/bin/env python3
"""Runs the arm64 (aarch64) static binary under qemu-user and checks it serves the API.

Usage: arm64_check.py --binary target/aarch64-unknown-linux-musl/release/mongo-api [--qemu qemu-aarch64-static]

Minikube on Apple Silicon, and arm64 nodes anywhere, run the aarch64 build. No arm64
machine is at hand here, so the binary is run the way the kernel would run it there,
instruction by instruction under qemu's user-mode emulation, against a local MongoDB
stand-in with authentication on: it must answer every route, store and list documents,
report ready, and stop cleanly on SIGTERM.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AARCH64 = 0xB7  # e_machine of an ELF file for the 64-bit ARM architecture


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def request(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return None, ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=Path, required=True)
    parser.add_argument("--qemu", default="qemu-aarch64-static")
    args = parser.parse_args()
    header = args.binary.read_bytes()[:20]
    if header[:4] != b"\x7fELF" or header[18] != AARCH64:
        raise SystemExit(f"{args.binary} is not an aarch64 ELF binary")

    failures = []

    def expect(ok, what):
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    workdir = Path(tempfile.mkdtemp(prefix="arm64-check-"))
    processes = []
    try:
        db_port = free_port()
        processes.append(subprocess.Popen(
            ["secantusd-rs", "--host", "127.0.0.1", "--port", str(db_port), "--storage-path", str(workdir / "db"),
             "--auth", "--sync-on-commit", "--log-file-max", "16MB", "--cache-size", "128M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        wait_for("the MongoDB stand-in", lambda: socket.socket().connect_ex(("127.0.0.1", db_port)) == 0)
        bench = ["cargo", "run", "--quiet", "-p", "bench", "--", "create-user", "--port", str(db_port)]
        subprocess.run(bench + ["--user", "arm64", "--role", "readWrite@arm64"], check=True, cwd=ROOT,
                       env={**os.environ, "NEW_USER_PASSWORD": "arm64-pw"})

        port, management = free_port(), free_port()
        env = {"MONGO_HOST": "127.0.0.1", "MONGO_PORT": str(db_port), "MONGO_USER": "arm64",
               "MONGO_PASSWORD": "arm64-pw", "MONGO_DB": "arm64", "MONGO_AUTH_DB": "admin",
               "BIND_ADDR": "127.0.0.1", "PORT": str(port), "MANAGEMENT_PORT": str(management)}
        log = (workdir / "service.log").open("w")
        service = subprocess.Popen([args.qemu, str(args.binary)], env=env, stdout=log, stderr=subprocess.STDOUT)
        processes.append(service)
        base, manage = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{management}"
        wait_for("the emulated service to answer its readiness probe", lambda: request("GET", f"{manage}/readyz")[0] == 200)

        status, body = request("GET", f"{base}/")
        expect(status == 200 and body.startswith("Welcome to the Flask app! The current time is: "), f"GET / -> {status}")
        status, body = request("POST", f"{base}/data", b'{"arch":"arm64","n":1.5}')
        expect(status == 201, f"POST /data -> {status} {body}")
        status, body = request("GET", f"{base}/data")
        expect(status == 200 and json.loads(body) == [{"arch": "arm64", "n": 1.5}], f"GET /data -> {status} {body}")
        status, _ = request("POST", f"{base}/data", b"[1]")
        expect(status == 400, f"POST /data [1] -> {status}")
        status, body = request("GET", f"{manage}/metrics")
        expect(status == 200 and "http_requests_total" in body, f"GET /metrics -> {status}")

        service.send_signal(signal.SIGTERM)
        try:
            code = service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None
        expect(code == 0, f"SIGTERM: exit code {code}")
        log.close()
        lines = (workdir / "service.log").read_text().splitlines()
        expect(any('"message":"stopped"' in line for line in lines), f"{len(lines)} JSON log lines, ending with a clean stop")
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("the aarch64 binary serves the API under qemu")


if __name__ == "__main__":
    main()
