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
import subprocess
import tempfile
from pathlib import Path

from live_check import Checks, free_port, request, start_stand_in, stop, wait_for

ROOT = Path(__file__).resolve().parent.parent
AARCH64 = 0xB7  # e_machine of an ELF file for the 64-bit ARM architecture


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=Path, required=True)
    parser.add_argument("--qemu", default="qemu-aarch64-static")
    args = parser.parse_args()
    header = args.binary.read_bytes()[:20]
    if header[:4] != b"\x7fELF" or header[18] != AARCH64:
        raise SystemExit(f"{args.binary} is not an aarch64 ELF binary")

    checks = Checks()

    workdir = Path(tempfile.mkdtemp(prefix="arm64-check-"))
    processes = []
    try:
        db_port = free_port()
        processes.append(start_stand_in(db_port, workdir))
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

        status, _, body = request("GET", f"{base}/")
        checks.expect(status == 200 and body.startswith("Welcome to the Flask app! The current time is: "), f"GET / -> {status}")
        status, _, body = request("POST", f"{base}/data", b'{"arch":"arm64","n":1.5}')
        checks.expect(status == 201, f"POST /data -> {status} {body}")
        status, _, body = request("GET", f"{base}/data")
        checks.expect(status == 200 and json.loads(body) == [{"arch": "arm64", "n": 1.5}], f"GET /data -> {status} {body}")
        status, _, _ = request("POST", f"{base}/data", b"[1]")
        checks.expect(status == 400, f"POST /data [1] -> {status}")
        status, _, body = request("GET", f"{manage}/metrics")
        checks.expect(status == 200 and "http_requests_total" in body, f"GET /metrics -> {status}")

        service.send_signal(signal.SIGTERM)
        try:
            code = service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None
        checks.expect(code == 0, f"SIGTERM: exit code {code}")
        log.close()
        lines = (workdir / "service.log").read_text().splitlines()
        checks.expect(any('"message":"stopped"' in line for line in lines), f"{len(lines)} JSON log lines, ending with a clean stop")
    finally:
        stop(processes)
        shutil.rmtree(workdir, ignore_errors=True)
    checks.finish("the aarch64 binary serves the API under qemu")


if __name__ == "__main__":
    main()
