"""Tests the logic of k8s/deploy.sh (what `just deploy` runs) without a cluster: `minikube`,
`kubectl` and `helm` are stubs on PATH that record the commands they were given and answer as a
cluster in the state each test sets up.

Run: python3 -m unittest k8s/test_deploy.py (from the repository root, or inside k8s/).
"""

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import textwrap
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "k8s/deploy.sh"
REAL_KUBECTL = shutil.which("kubectl")

STUB = textwrap.dedent(
    r"""
    #!/usr/bin/env bash
    # Records the call, then answers like a cluster described by STUB_* variables.
    echo "$(basename "$0") $*" >>"$STUB_LOG"
    args=" $* "
    case "$(basename "$0")" in
      minikube)
        case "$args" in
          *" status "*) [ "$STUB_RUNNING" = 1 ] ;;
          *" service "*) echo "http://192.168.49.2:30007" ;;
          *) true ;;
        esac ;;
      kubectl)
        case "$args" in
          *" get --raw /version "*) printf '{\n  "major": "1",\n  "minor": "%s",\n  "gitVersion": "v1.%s.0"\n}\n' "$STUB_MINOR" "$STUB_MINOR" ;;
          *"capacity.cpu"*) echo "$STUB_CPUS" ;;
          *"architecture"*) echo "$STUB_ARCH" ;;
          *" get daemonset calico-node "*) [ "$STUB_CALICO" = 1 ] ;;
          *" apply -k "*) dir=${args##* -k }; cat "${dir% }/kustomization.yaml" >>"$STUB_LOG" ;;
          *" get crd -o name "*) [ "$STUB_OPERATOR" = 1 ] && printf '%s\n' \
               customresourcedefinition.apiextensions.k8s.io/mongodbcommunity.mongodbcommunity.mongodb.com \
               customresourcedefinition.apiextensions.k8s.io/certificates.cert-manager.io ;;
          *" get crd "*) [ "$STUB_OPERATOR" = 1 ] ;;
          *) true ;;
        esac ;;
      helm)
        case "$args" in
          *" status "*) [ "$STUB_OPERATOR" = 1 ] ;;
          *) true ;;
        esac ;;
    esac
    """
).lstrip()


@contextlib.contextmanager
def secrets_present():
    """The Secret values kustomize needs (`just secrets` writes them), made for the test
    and removed after it if there were none."""
    secrets = ROOT / "k8s/base/secrets.env"
    made = not secrets.exists()
    if made:
        secrets.write_text("MONGO_ROOT_USER=r\nMONGO_ROOT_PASSWORD=a\nMONGO_APP_USER=u\nMONGO_APP_PASSWORD=b\n")
    try:
        yield
    finally:
        if made:
            secrets.unlink()


class Deploy(unittest.TestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp())
        for name in ("minikube", "kubectl", "helm"):
            stub = self.dir / name
            stub.write_text(STUB)
            stub.chmod(0o755)
        self.log = self.dir / "log"
        self.log.write_text("")
        self.env = {
            **os.environ,
            "PATH": f"{self.dir}:{os.environ['PATH']}",
            "STUB_LOG": str(self.log),
            "STUB_RUNNING": "1",
            "STUB_MINOR": "32",
            "STUB_CPUS": "2",
            "STUB_ARCH": "arm64",
            "STUB_CALICO": "1",
            "STUB_OPERATOR": "0",
        }

    def tearDown(self):
        shutil.rmtree(self.dir)

    def deploy(self, *args, **stub):
        env = {**self.env, **{f"STUB_{k.upper()}": str(v) for k, v in stub.items()}}
        run = subprocess.run([str(DEPLOY), *args], env=env, capture_output=True, text=True, cwd=ROOT)
        return run, self.log.read_text().splitlines()

    def assert_only_minikube_touched(self, calls):
        for call in calls:
            if call.startswith("kubectl "):
                self.assertTrue(call.startswith("kubectl --context minikube "), call)
            if call.startswith("minikube "):
                self.assertTrue(call.startswith("minikube -p minikube "), call)
            if call.startswith("helm "):
                self.assertTrue(call.startswith("helm --kube-context minikube "), call)

    def test_a_stopped_minikube_is_started_with_the_pinned_version_and_calico(self):
        run, calls = self.deploy("cluster", "base", running=0)
        self.assertEqual(run.returncode, 0, run.stderr)
        starts = [c for c in calls if " start " in f" {c} "]
        self.assertEqual(len(starts), 1, calls)
        for flag in ("--kubernetes-version=v1.32.0", "--cni=calico", "--cpus=2"):
            self.assertIn(flag, starts[0])
        self.assertIn("minikube -p minikube addons enable metrics-server", calls)
        self.assert_only_minikube_touched(calls)

    def test_a_running_cluster_is_reused_without_being_restarted(self):
        run, calls = self.deploy("cluster", "base")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertFalse([c for c in calls if " start " in f" {c} "], calls)
        self.assert_only_minikube_touched(calls)

    def test_a_cluster_older_than_the_manifests_need_is_refused_in_one_line(self):
        run, calls = self.deploy("cluster", "base", minor=28)
        self.assertEqual(run.returncode, 1)
        self.assertEqual(len(run.stderr.strip().splitlines()), 1, run.stderr)
        self.assertIn("Kubernetes 1.28; the manifests need 1.30 or newer", run.stderr)
        self.assertFalse([c for c in calls if "apply" in c])

    def test_a_cluster_without_calico_is_refused_unless_allowed(self):
        run, _ = self.deploy("cluster", "base", calico=0)
        self.assertEqual(run.returncode, 1)
        self.assertIn("no Calico", run.stderr)
        self.env["ALLOW_NO_CALICO"] = "1"
        run, _ = self.deploy("cluster", "base", calico=0)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("warning: no Calico", run.stderr)

    def test_the_assignment_overlay_needs_four_cpus(self):
        run, _ = self.deploy("cluster", "overlays/assignment", cpus=2)
        self.assertEqual(run.returncode, 1)
        self.assertIn("overlays/assignment needs 4", run.stderr)
        run, calls = self.deploy("cluster", "overlays/assignment", running=0)
        self.assertIn("--cpus=4", next(c for c in calls if " start " in f" {c} "))

    def test_the_node_architecture_is_read_from_the_minikube_context(self):
        run, calls = self.deploy("node-arch", arch="arm64")
        self.assertEqual(run.stdout.strip(), "arm64")
        self.assert_only_minikube_touched(calls)

    @unittest.skipUnless(REAL_KUBECTL, "needs kubectl for kustomize")
    def test_apply_deploys_the_build_tag_and_leaves_the_committed_manifests_pinned(self):
        with secrets_present():
            for overlay in ("base", "overlays/assignment"):
                run, calls = self.deploy("apply", overlay, "mongo-api:0.1.0-abc1234-dirty-0123abcd")
                self.assertEqual(run.returncode, 0, run.stderr)
                self.assert_only_minikube_touched(calls)
                staged = ROOT / "target/deploy" / overlay
                rendered = subprocess.run(
                    [REAL_KUBECTL, "kustomize", str(staged)], capture_output=True, text=True, check=True
                ).stdout
                self.assertIn("image: mongo-api:0.1.0-abc1234-dirty-0123abcd", rendered)
                self.assertNotIn("image: mongo-api:0.1.0\n", rendered)
            committed = (ROOT / "k8s/base/api-deployment.yaml").read_text()
            self.assertIn("image: mongo-api:0.1.0\n", committed)

    @unittest.skipUnless(
        shutil.which("just") and (ROOT / "target/x86_64-unknown-linux-musl/release/mongo-api").exists(),
        "needs just and a static build",
    )
    def test_the_image_tag_names_the_commit_and_marks_a_dirty_tree_with_the_binary_digest(self):
        tag = subprocess.run(
            ["just", "image-tag", "amd64"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        self.assertTrue(tag.startswith(f"0.1.0-{commit}"), tag)
        if dirty:
            binary = (ROOT / "target/x86_64-unknown-linux-musl/release/mongo-api").read_bytes()
            digest = hashlib.sha256(binary).hexdigest()[:8]
            self.assertEqual(tag, f"0.1.0-{commit}-dirty-{digest}")
        else:
            self.assertEqual(tag, f"0.1.0-{commit}")

    def test_undeploy_deletes_the_namespace_in_minikube_only(self):
        run, calls = self.deploy("undeploy")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(calls[-1], "kubectl --context minikube delete namespace mongo-api --ignore-not-found")
        self.assertFalse([c for c in calls if "uninstall" in c or " delete " in c and "namespace" not in c], calls)
        self.assert_only_minikube_touched(calls)

    def test_undeploy_removes_the_replica_set_then_the_operator_and_its_crds_only(self):
        run, calls = self.deploy("undeploy", operator=1)
        self.assertEqual(run.returncode, 0, run.stderr)
        steps = [
            "kubectl --context minikube -n mongo-api delete mongodbcommunity --all --ignore-not-found --wait",
            "helm --kube-context minikube uninstall mongodb-kubernetes -n mongo-api --wait",
            "kubectl --context minikube delete customresourcedefinition.apiextensions.k8s.io/mongodbcommunity.mongodbcommunity.mongodb.com",
            "kubectl --context minikube delete namespace mongo-api --ignore-not-found",
        ]
        self.assertEqual([calls.index(step) for step in steps], sorted(calls.index(step) for step in steps), calls)
        self.assertFalse([c for c in calls if "cert-manager" in c], calls)
        self.assert_only_minikube_touched(calls)

    def test_the_replicaset_overlay_by_its_short_name_needs_four_cpus(self):
        run, _ = self.deploy("cluster", "replicaset", cpus=2)
        self.assertEqual(run.returncode, 1)
        self.assertIn("overlays/replicaset needs 4", run.stderr)

    @unittest.skipUnless(REAL_KUBECTL, "needs kubectl for kustomize")
    def test_the_replicaset_overlay_installs_the_pinned_operator_first_and_waits_for_the_set(self):
        with secrets_present():
            run, calls = self.deploy("apply", "replicaset", "mongo-api:0.1.0-abc1234")
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assert_only_minikube_touched(calls)
            install = next(i for i, c in enumerate(calls) if " upgrade --install " in c)
            self.assertIn("mongodb-kubernetes mongodb/mongodb-kubernetes --version 1.11.1 --namespace mongo-api", calls[install])
            applied = next(i for i, c in enumerate(calls) if " apply -k " in c)
            waited = next(i for i, c in enumerate(calls) if "wait mongodbcommunity/mongo" in c)
            rolled = next(i for i, c in enumerate(calls) if "rollout status deployment/mongo-api" in c)
            self.assertLess(install, applied)
            self.assertLess(applied, waited)
            self.assertLess(waited, rolled)
            self.assertIn("--for=jsonpath={.status.phase}=Running", calls[waited])
            self.assertFalse([c for c in calls if "statefulset/mongo" in c], calls)

    def test_the_replicaset_overlay_without_helm_says_so_in_one_line(self):
        (self.dir / "helm").unlink()
        self.env["PATH"] = f"{self.dir}:/usr/bin:/bin"
        run, calls = self.deploy("apply", "replicaset", "mongo-api:0.1.0")
        self.assertEqual(run.returncode, 1)
        self.assertEqual(len(run.stderr.strip().splitlines()), 1, run.stderr)
        self.assertIn("install helm", run.stderr)
        self.assertFalse([c for c in calls if "apply" in c], calls)


if __name__ == "__main__":
    unittest.main()
