"""Every recipe that drives an outside tool checks for it before it starts, builds, applies
or writes anything: run with a PATH that lacks each tool in turn (and with a Docker client
whose engine does not answer), each prints one line naming what is missing and exits 2,
and nothing was called or written.

The recipes run in a copy of the justfile and k8s/ in a temporary directory, with a PATH
of links to this machine's commands less minikube, kubectl, docker and helm, which are
stubs that record every call (docker's `info` answers as its engine would).

Run: python3 -m unittest k8s/test_tools.py (from the repository root, or inside k8s/).
"""

import os
import shutil
import subprocess
import tempfile
import textwrap
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("minikube", "kubectl", "docker", "helm")
IMAGE = "registry.invalid/mongo-api@sha256:" + "0" * 64

# Each recipe (with its arguments) and the tools it needs.
RECIPES = [
    (["deploy"], ["minikube", "kubectl", "docker"]),
    (["deploy", "replicaset"], ["minikube", "kubectl", "docker", "helm"]),
    (["url"], ["minikube"]),
    (["logs"], ["kubectl"]),
    (["hpa-demo"], ["minikube", "kubectl"]),
    (["undeploy"], ["kubectl"]),
    (["push", "registry.invalid"], ["docker"]),
    (["build-image"], ["docker"]),
    (["deploy-to", "some-context", IMAGE], ["kubectl"]),
    (["deploy-to", "some-context", IMAGE, "replicaset"], ["kubectl", "helm"]),
]

STUB = textwrap.dedent("""\
    #!/bin/sh
    # Answers `docker info` as an engine that is up (or down, with DOCKER_DOWN=1); records
    # every other call, which none of these recipes may make before its checks pass.
    if [ "$(basename "$0")" = docker ] && [ "$1" = info ]; then
        [ -z "$DOCKER_DOWN" ]
        exit
    fi
    echo "$(basename "$0") $*" >>"$STUB_LOG"
""")


def files(directory):
    return sorted(str(p.relative_to(directory)) for p in Path(directory).rglob("*"))


class ToolsFirst(unittest.TestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="mongo-api-tools."))
        self.addCleanup(shutil.rmtree, self.dir)
        self.repo = self.dir / "repo"
        self.repo.mkdir()
        for name in ("justfile", "Cargo.toml"):
            shutil.copy(ROOT / name, self.repo)
        shutil.copytree(ROOT / "k8s", self.repo / "k8s", ignore=shutil.ignore_patterns(
            "secrets.env", "__pycache__", "cluster"))
        self.bin = self.dir / "bin"
        self.bin.mkdir()
        # Every command of this PATH, less the tools the recipes drive.
        for directory in os.environ["PATH"].split(os.pathsep):
            if not os.path.isdir(directory):
                continue
            for entry in os.scandir(directory):
                target = self.bin / entry.name
                if entry.name not in TOOLS and not target.exists() and os.access(entry.path, os.X_OK):
                    target.symlink_to(entry.path)
        for tool in TOOLS:
            (self.bin / tool).write_text(STUB)
            (self.bin / tool).chmod(0o755)
        self.log = self.dir / "calls.log"
        self.before = files(self.repo)

    def just(self, args, missing=None, docker_down=False):
        if missing:
            (self.bin / missing).unlink()
        env = {"PATH": str(self.bin), "HOME": os.environ.get("HOME", "/root"), "STUB_LOG": str(self.log)}
        if docker_down:
            env["DOCKER_DOWN"] = "1"
        done = subprocess.run(["just", *args], cwd=self.repo, env=env, capture_output=True, text=True)
        if missing:
            (self.bin / missing).write_text(STUB)
            (self.bin / missing).chmod(0o755)
        return done

    def assert_stopped_with_one_line(self, done, start, context):
        self.assertEqual(done.returncode, 2, f"{context}: {done.stdout} {done.stderr}")
        lines = done.stderr.splitlines()
        self.assertEqual(len(lines), 1, f"{context}: {done.stderr}")
        self.assertTrue(lines[0].startswith(start), f"{context}: {lines[0]}")
        for platform in ("Linux", "macOS", "Windows"):
            self.assertIn(platform, lines[0], context)
        self.assertNotIn("command not found", done.stderr)
        self.assertFalse(self.log.exists(), f"{context} called: {self.log.read_text() if self.log.exists() else ''}")
        self.assertEqual(files(self.repo), self.before, f"{context} wrote files")

    def test_each_recipe_names_each_missing_tool_and_does_nothing(self):
        for args, tools in RECIPES:
            for tool in tools:
                with self.subTest(recipe=args, missing=tool):
                    done = self.just(args, missing=tool)
                    self.assert_stopped_with_one_line(done, f"{tool} is not installed", f"just {' '.join(args)}")

    def test_each_recipe_that_builds_an_image_says_when_dockers_engine_does_not_answer(self):
        for args, tools in RECIPES:
            if "docker" in tools:
                with self.subTest(recipe=args):
                    done = self.just(args, docker_down=True)
                    self.assert_stopped_with_one_line(done, "the Docker engine does not answer",
                                                      f"just {' '.join(args)}")


if __name__ == "__main__":
    unittest.main()
