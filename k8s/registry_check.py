#!/usr/bin/env python3
"""Pushes the images to a real registry on this machine and checks what arrived.

Usage: registry_check.py --rendered target/k8s/base.yaml   (inside `just with-docker`)

Starts Debian's docker-registry (the CNCF distribution registry) on a free port of
127.0.0.1 with its storage in a temporary directory, runs `just push` against it, and then
proves, reading the registry with skopeo, that:
- the index (manifest list) lists exactly linux/amd64 and linux/arm64, with the digests of
  the two images that were pushed, and its own digest is the one `just push` printed;
- a clean tree's index is also tagged VERSION, a dirty tree's never is;
- the amd64 image pulled back from the registry by digest runs as the Deployment runs it
  (k8s/image_check.py, on a copy of the rendered manifests naming that digest).
The registry is stopped by its PID and its directory removed, whatever happens.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from live_check import Checks, free_port, request, stop, wait_for

ROOT = Path(__file__).resolve().parent.parent


def run(*command, check=True):
    return subprocess.run(command, capture_output=True, text=True, check=check, cwd=ROOT)


def skopeo(*args, check=True):
    return run("skopeo", *args, "--tls-verify=false", check=check)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rendered", type=Path, required=True)
    args = parser.parse_args()
    checks = Checks()
    workdir = Path(tempfile.mkdtemp(prefix="mongo-api-registry-"))
    port = free_port()
    registry = f"127.0.0.1:{port}"
    (workdir / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
        f"http:\n  addr: {registry}\n"
    )
    processes = [
        subprocess.Popen(["docker-registry", "serve", str(workdir / "config.yml")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ]
    repo = f"{registry}/mongo-api"
    try:
        wait_for("the registry", lambda: request("GET", f"http://{registry}/v2/")[0] == 200, timeout=30)
        pushed = run("just", "push", registry, check=False)
        print(pushed.stdout.strip())
        if pushed.returncode != 0:
            print(pushed.stderr)
            raise SystemExit("just push failed")
        tags = re.findall(r"^pushed \S+:(\S+)$", pushed.stdout, re.M)
        index_ref = re.search(r"^index: (\S+@sha256:[0-9a-f]{64})$", pushed.stdout, re.M).group(1)
        tag = tags[0]
        version = re.search(r'^version = "(.*)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)

        raw = skopeo("inspect", "--raw", f"docker://{repo}:{tag}").stdout
        index = json.loads(raw)
        platforms = {
            f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in index.get("manifests", [])
        }
        checks.expect(
            "manifest.list" in index.get("mediaType", "") or "image.index" in index.get("mediaType", ""),
            f"{repo}:{tag} is an index ({index.get('mediaType')})",
        )
        checks.expect(set(platforms) == {"linux/amd64", "linux/arm64"}, f"it lists linux/amd64 and linux/arm64 ({sorted(platforms)})")
        for arch in ("amd64", "arm64"):
            image_digest = skopeo("inspect", "--format", "{{.Digest}}", f"docker://{repo}:{tag}-{arch}").stdout.strip()
            checks.expect(platforms.get(f"linux/{arch}") == image_digest, f"linux/{arch} is the {arch} image pushed ({image_digest})")
        index_digest = skopeo("inspect", "--format", "{{.Digest}}", f"docker://{repo}:{tag}").stdout.strip()
        checks.expect(index_ref.endswith(index_digest), f"just push printed the index's digest ({index_digest})")
        release = skopeo("inspect", "--format", "{{.Digest}}", f"docker://{repo}:{version}", check=False)
        if "-dirty-" in tag:
            checks.expect(release.returncode != 0, f"a dirty tree never pushes :{version}")
        else:
            checks.expect(release.stdout.strip() == index_digest, f":{version} is the same index as :{tag}")

        # The amd64 image, pulled back by digest, run as the Deployment runs it.
        pulled = f"{repo}@{platforms.get('linux/amd64')}"
        run("docker", "pull", "--quiet", pulled)
        rendered = workdir / "rendered.yaml"
        text = args.rendered.read_text()
        named = re.sub(r"(?m)^(\s*image: )mongo-api:\S+$", lambda m: m.group(1) + pulled, text)
        checks.expect(named != text, "the rendered Deployment names the pulled image by digest")
        rendered.write_text(named)
        image = subprocess.run(
            [sys.executable, str(ROOT / "k8s/image_check.py"), str(rendered), "--image", pulled], cwd=ROOT
        )
        checks.expect(image.returncode == 0, "the image pulled by digest passes the image check")
    finally:
        stop(processes)
        for tag_name in ("mongo-api",):
            subprocess.run(["bash", "-c", f"rm -rf ~/.docker/manifests/{registry.replace(':', '-')}*{tag_name}*"], check=False)
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    checks.finish("registry checks passed")


if __name__ == "__main__":
    main()
