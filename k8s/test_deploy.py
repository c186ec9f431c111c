"""Tests the logic of k8s/deploy.sh (what `just deploy`, `just undeploy` and `just url` run)
without a cluster: `minikube`, `kubectl`, `helm`, `docker`, `podman` and `curl` are stubs
on PATH that record the commands they were given and answer as the real ones do in the
state each test sets up, where it matters: `minikube service --url` prints a random port
and blocks where the docker driver needs a port-forward, `minikube start` refuses to
downgrade an existing profile and ignores CPUs and memory for it, a docker-driver node
reports the host's CPUs while its container has a CPU quota, `docker port` answers only
for a published port, `helm search` lists only the versions the repository has.

Run: python3 -m unittest k8s/test_deploy.py (from the repository root, or inside k8s/).
"""

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
import time
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "k8s/deploy.sh"
REAL_KUBECTL = shutil.which("kubectl")

STUB = textwrap.dedent(
    r"""
    #!/usr/bin/env bash
    # Records the call, then answers like the real command would for the state in $STUB_STATE.
    echo "$(basename "$0") $*" >>"$STUB_LOG"
    state() { cat "$STUB_STATE/$1" 2>/dev/null; }
    set_state() { echo "$2" >"$STUB_STATE/$1"; }
    args=" $* "
    case "$(basename "$0")" in
      minikube)
        case "$args" in
          *" status "*)
            case "$(state profile)" in
              running) echo "host: Running" ;;
              stopped) echo "host: Stopped"; exit 7 ;;
              *) echo "Profile \"minikube\" not found. Run \"minikube profile list\" to view all profiles."; exit 85 ;;
            esac ;;
          *" start "*)
            wanted=$(echo "$args" | sed -n 's/.*--kubernetes-version=v1\.\([0-9]*\).*/\1/p')
            if [ "$(state profile)" != missing ]; then
              if [ -n "$wanted" ] && [ "$wanted" -lt "$(state minor)" ]; then
                echo "X Exiting due to K8S_DOWNGRADE_UNSUPPORTED: Unable to safely downgrade existing Kubernetes v1.$(state minor).0 cluster to v1.$wanted.0" >&2
                exit 106
              fi
              case "$args" in *" --cpus="*|*" --memory="*)
                echo "! You cannot change the CPUs or memory for an existing minikube cluster. Please first delete the cluster." >&2 ;;
              esac
            else
              [ -n "$wanted" ] && set_state minor "$wanted"
              case "$args" in *" --ports=127.0.0.1:30007:30007 "*)
                case "$(state driver)" in docker|podman) set_state published 1 ;; esac ;;
              esac
            fi
            set_state profile running ;;
          *" service "*)
            if [ "$(state forward)" = 1 ]; then
              # A tunnel on a random port, until interrupted.
              echo "http://127.0.0.1:$((40000 + RANDOM % 20000))"
              echo "! Because you are using a Docker driver on darwin, the terminal needs to be open to run it." >&2
              exec sleep 3600
            fi
            echo "http://192.168.49.2:30007" ;;
          *" ip "*) echo "192.168.49.2" ;;
          *" profile list "*)
            if [ "$(state profile)" = missing ]; then echo '{"invalid":[],"valid":[]}'; else
              printf '{"invalid":[],"valid":[{"Name":"minikube","Status":"%s","Config":{"Name":"minikube","Driver":"%s","CPUs":2}}]}\n' \
                "$(state profile)" "$(state driver)"; fi ;;
          *) true ;;
        esac ;;
      docker|podman)
        case "$args" in
          *" port minikube 30007/tcp "*)
            if [ "$(state published)" = 1 ]; then echo "127.0.0.1:30007"; else
              echo "Error: No public port '30007/tcp' published for minikube" >&2; exit 1; fi ;;
          *" inspect -f {{.HostConfig.NanoCpus}} minikube "*) state nanocpus ;;
          *) true ;;
        esac ;;
      curl) [ "$(state reachable)" = 1 ] || exit 28 ;;
      kubectl)
        case "$args" in
          *" config get-contexts "*) name=${args##* config get-contexts }; echo " $(state contexts) " | grep -q " ${name% } " ;;
          *" get --raw /version "*) printf '{\n  "major": "1",\n  "minor": "%s",\n  "gitVersion": "v1.%s.0"\n}\n' "$(state minor)" "$(state minor)" ;;
          *"capacity.cpu"*) state hostcpus ;;
          *"architecture"*) state arch ;;
          *" get daemonset calico-node "*) [ "$(state calico)" = 1 ] ;;
          *" apply -k "*) dir=${args##* -k }; cat "${dir% }/kustomization.yaml" >>"$STUB_LOG"; set_state namespace 1 ;;
          *" get namespace mongo-api -o jsonpath"*) state deployed ;;
          *" get namespace mongo-api "*) [ "$(state namespace)" = 1 ] ;;
          *" get mongodbcommunity mongo "*) [ "$(state legacy)" = replicaset ] ;;
          *" get statefulset mongo "*) [ "$(state legacy)" = base ] ;;
          *" annotate namespace mongo-api "*) set_state deployed "${args##*mongo-api/overlay=}" ;;
          *" get crd -o name "*) [ "$(state operator)" = 1 ] && printf '%s\n' \
               customresourcedefinition.apiextensions.k8s.io/mongodbcommunity.mongodbcommunity.mongodb.com \
               customresourcedefinition.apiextensions.k8s.io/certificates.cert-manager.io ;;
          *" get crd "*) [ "$(state operator)" = 1 ] ;;
          *" get validatingwebhookconfiguration "*) [ "$(state operator)" = 1 ] && state webhook ;;
          *" get storageclass -o jsonpath"*) [ "$(state defaultclass)" = 1 ] && echo true ;;
          *" get apiservice "*) echo True ;;
          *" get services -A "*) state nodeports ;;
          *" get service mongo-api -o jsonpath"*) echo 30007 ;;
          *" get service mongo -o jsonpath"*) state mongoip ;;
          *" get pvc "*) false ;;
          *) true ;;
        esac ;;
      helm)
        case "$args" in
          *" status "*) [ "$(state operator)" = 1 ] ;;
          *" search repo "*)
            version=$(echo "$args" | sed -n 's/.* --version \([^ ]*\) .*/\1/p')
            if echo " $(state charts) " | grep -q " $version "; then
              printf '[{"name":"mongodb/mongodb-kubernetes","version":"%s","app_version":"%s"}]\n' "$version" "$version"
            else echo '[]'; fi ;;
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


def deploy_script_value(pattern):
    match = re.search(pattern, DEPLOY.read_text())
    assert match, pattern
    return match.group(1)


class Deploy(unittest.TestCase):
    # A cluster as `just deploy` leaves it on Linux: docker driver, port published, Calico.
    CLUSTER = {
        "profile": "running",
        "minor": "32",
        "driver": "docker",
        "forward": "0",
        "published": "1",
        "nanocpus": "0",
        "hostcpus": "2",
        "arch": "arm64",
        "calico": "1",
        "operator": "0",
        "namespace": "0",
        "deployed": "",
        "legacy": "",
        "mongoip": "",
        "reachable": "1",
        # Another cluster's: a default StorageClass, no other Service on a NodePort, and
        # the operator's webhook (when installed) calling into our namespace.
        "defaultclass": "1",
        "nodeports": "",
        "webhook": "mongo-api",
        "charts": deploy_script_value(r"OPERATOR_VERSION=(\S+)"),
        "contexts": "minikube prod",
    }

    def setUp(self):
        self.dir = Path(tempfile.mkdtemp())
        for name in ("minikube", "kubectl", "helm", "docker", "podman", "curl"):
            stub = self.dir / name
            stub.write_text(STUB)
            stub.chmod(0o755)
        self.state = self.dir / "state"
        self.state.mkdir()
        self.log = self.dir / "log"
        self.log.write_text("")
        self.env = {
            **os.environ,
            "PATH": f"{self.dir}:{os.environ['PATH']}",
            "STUB_LOG": str(self.log),
            "STUB_STATE": str(self.state),
        }
        self.cluster(**self.CLUSTER)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def cluster(self, **state):
        for key, value in state.items():
            (self.state / key).write_text(f"{value}\n")

    def deploy(self, *args, timeout=20, **state):
        self.cluster(**state)
        run = subprocess.run([str(DEPLOY), *args], env=self.env, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
        return run, self.log.read_text().splitlines()

    def assert_only_minikube_touched(self, calls):
        for call in calls:
            if call.startswith("kubectl "):
                self.assertTrue(call.startswith("kubectl --context minikube "), call)
            if call.startswith("minikube "):
                self.assertTrue(call.startswith("minikube -p minikube "), call)
            if call.startswith("helm "):
                self.assertTrue(call.startswith("helm --kube-context minikube "), call)

    def assert_one_line(self, run):
        self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
        self.assertEqual(len(run.stderr.strip().splitlines()), 1, run.stderr)

    # ---- starting and checking the cluster ----

    def test_a_new_cluster_is_started_with_the_pinned_version_calico_and_the_port_published(self):
        run, calls = self.deploy("cluster", "base", profile="missing")
        self.assertEqual(run.returncode, 0, run.stderr)
        starts = [c for c in calls if " start " in f" {c} "]
        self.assertEqual(len(starts), 1, calls)
        for flag in ("--kubernetes-version=v1.32.0", "--cni=calico", "--cpus=2", "--ports=127.0.0.1:30007:30007"):
            self.assertIn(flag, starts[0])
        self.assertIn("minikube -p minikube addons enable metrics-server", calls)
        self.assert_only_minikube_touched(calls)

    def test_a_running_cluster_is_reused_without_being_restarted(self):
        run, calls = self.deploy("cluster", "base")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertFalse([c for c in calls if " start " in f" {c} "], calls)
        self.assert_only_minikube_touched(calls)

    def test_a_stopped_profile_made_with_a_newer_kubernetes_is_started_as_it_was_made(self):
        run, calls = self.deploy("cluster", "base", profile="stopped", minor="34")
        self.assertEqual(run.returncode, 0, run.stderr)
        start = next(c for c in calls if " start " in f" {c} ")
        self.assertEqual(start, "minikube -p minikube start")
        self.assertNotIn("downgrade", run.stderr)
        # And then checked as a running one: its version read from the API server.
        self.assertTrue([c for c in calls if "get --raw /version" in c], calls)

    def test_a_stopped_profile_older_than_the_manifests_need_is_refused_in_one_line(self):
        run, calls = self.deploy("cluster", "base", profile="stopped", minor="28")
        self.assert_one_line(run)
        self.assertIn("Kubernetes 1.28; the manifests need 1.30 or newer", run.stderr)

    def test_a_cluster_older_than_the_manifests_need_is_refused_in_one_line(self):
        run, calls = self.deploy("cluster", "base", minor=28)
        self.assert_one_line(run)
        self.assertIn("Kubernetes 1.28; the manifests need 1.30 or newer", run.stderr)
        self.assertFalse([c for c in calls if "apply" in c])

    def test_a_cluster_without_calico_is_refused_unless_allowed(self):
        run, _ = self.deploy("cluster", "base", calico=0)
        self.assert_one_line(run)
        self.assertIn("no Calico", run.stderr)
        self.env["ALLOW_NO_CALICO"] = "1"
        run, _ = self.deploy("cluster", "base", calico=0)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("warning: no Calico", run.stderr)

    def test_calico_is_waited_for_before_anything_is_deployed(self):
        run, calls = self.deploy("cluster", "base")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("kubectl --context minikube -n kube-system rollout status daemonset/calico-node --timeout=300s", calls)

    def test_the_assignment_overlay_needs_four_cpus(self):
        run, _ = self.deploy("cluster", "overlays/assignment", hostcpus=2)
        self.assert_one_line(run)
        self.assertIn("overlays/assignment needs 4", run.stderr)
        run, calls = self.deploy("cluster", "overlays/assignment", profile="missing")
        self.assertIn("--cpus=4", next(c for c in calls if " start " in f" {c} "))

    def test_on_the_docker_driver_the_cpus_are_the_containers_quota_not_the_hosts(self):
        # The node reports the host's 8 cores; its container may use 2.
        run, _ = self.deploy("cluster", "overlays/assignment", hostcpus=8, nanocpus=2_000_000_000)
        self.assert_one_line(run)
        self.assertIn("has 2 CPUs; overlays/assignment needs 4", run.stderr)
        run, _ = self.deploy("cluster", "overlays/assignment", hostcpus=8, nanocpus=4_000_000_000)
        self.assertEqual(run.returncode, 0, run.stderr)
        # A VM driver's node reports what the VM has.
        run, _ = self.deploy("cluster", "overlays/assignment", driver="kvm2", hostcpus=4, nanocpus=0)
        self.assertEqual(run.returncode, 0, run.stderr)

    def test_the_node_architecture_is_read_from_the_minikube_context(self):
        run, calls = self.deploy("node-arch", arch="arm64")
        self.assertEqual(run.stdout.strip(), "arm64")
        self.assert_only_minikube_touched(calls)

    # ---- the URL ----

    def test_the_url_returns_at_once_where_the_docker_driver_needs_a_port_forward(self):
        # macOS, Windows, Docker Desktop, rootless: `minikube service --url` would block.
        started = time.monotonic()
        run, calls = self.deploy("url", forward=1, published=1, reachable=0, timeout=10)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.strip(), "http://127.0.0.1:30007")
        self.assertLess(time.monotonic() - started, 5)
        self.assertFalse([c for c in calls if " service " in c], calls)

    def test_the_url_on_a_vm_driver_is_the_nodes_address(self):
        run, _ = self.deploy("url", driver="kvm2", published=0)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stdout.strip(), "http://192.168.49.2:30007")

    def test_a_cluster_that_does_not_publish_the_port_gets_one_line_saying_what_to_do(self):
        run, _ = self.deploy("url", forward=1, published=0, reachable=0, timeout=10)
        self.assert_one_line(run)
        self.assertIn("port-forward", run.stderr)
        # Where its address answers (Linux, rootful Docker), that is the URL.
        run, _ = self.deploy("url", published=0, reachable=1)
        self.assertEqual(run.stdout.strip(), "http://192.168.49.2:30007")

    # ---- applying ----

    @unittest.skipUnless(REAL_KUBECTL, "needs kubectl for kustomize")
    def test_apply_deploys_the_build_tag_records_the_overlay_and_ends_with_the_url(self):
        with secrets_present():
            for overlay in ("base", "overlays/assignment"):
                run, calls = self.deploy("apply", overlay, "mongo-api:0.1.0-abc1234-dirty-0123abcd", forward=1)
                self.assertEqual(run.returncode, 0, run.stderr)
                self.assert_only_minikube_touched(calls)
                self.assertIn("service: http://127.0.0.1:30007", run.stdout)
                self.assertIn(f"kubectl --context minikube annotate namespace mongo-api mongo-api/overlay={overlay} --overwrite", calls)
                staged = ROOT / "target/deploy/minikube" / overlay
                rendered = subprocess.run(
                    [REAL_KUBECTL, "kustomize", str(staged)], capture_output=True, text=True, check=True
                ).stdout
                self.assertIn("image: mongo-api:0.1.0-abc1234-dirty-0123abcd", rendered)
                self.assertNotIn("image: mongo-api:0.1.0\n", rendered)
            committed = (ROOT / "k8s/base/api-deployment.yaml").read_text()
            self.assertIn("image: mongo-api:0.1.0\n", committed)

    @unittest.skipUnless(REAL_KUBECTL, "needs kubectl for kustomize")
    def test_one_mongodb_cannot_replace_the_other_in_place(self):
        with secrets_present():
            for deployed, wanted in [("base", "replicaset"), ("overlays/replicaset", "base")]:
                run, calls = self.deploy("apply", wanted, "mongo-api:0.1.0", namespace=1, deployed=deployed)
                self.assert_one_line(run)
                self.assertIn("just undeploy first", run.stderr)
                self.assertFalse([c for c in calls if " apply -k " in c or " upgrade --install " in c], calls)
            # Deployed before the overlay was recorded: told apart by what is there.
            run, _ = self.deploy("apply", "base", "mongo-api:0.1.0", namespace=1, deployed="", legacy="replicaset")
            self.assert_one_line(run)
            # Between base and assignment (the same MongoDB, patched) it is an update.
            run, _ = self.deploy("apply", "overlays/assignment", "mongo-api:0.1.0", namespace=1, deployed="base")
            self.assertEqual(run.returncode, 0, run.stderr)

    @unittest.skipUnless(REAL_KUBECTL, "needs kubectl for kustomize")
    def test_a_deployment_made_with_a_headless_mongo_service_gets_both_services_anew(self):
        steps = [
            "kubectl --context minikube -n mongo-api delete statefulset mongo --wait",
            "kubectl --context minikube -n mongo-api wait --for=delete pod/mongo-0 --timeout=120s",
            "kubectl --context minikube -n mongo-api delete service mongo",
        ]
        with secrets_present():
            run, calls = self.deploy("apply", "base", "mongo-api:0.1.0", namespace=1, deployed="base", mongoip="None")
            self.assertEqual(run.returncode, 0, run.stderr)
            applied = next(i for i, c in enumerate(calls) if " apply -k " in c)
            self.assertEqual([calls.index(step) for step in steps], sorted(calls.index(step) for step in steps), calls)
            self.assertLess(calls.index(steps[-1]), applied)
            self.assertIn("MongoDB restarts once, its data stays", run.stdout)
            # Already a ClusterIP Service (or none yet): nothing is deleted.
            for ip in ("10.96.12.34", ""):
                self.log.write_text("")
                run, calls = self.deploy("apply", "base", "mongo-api:0.1.0", namespace=1, deployed="base", mongoip=ip)
                self.assertEqual(run.returncode, 0, run.stderr)
                self.assertFalse([c for c in calls if " delete " in c], calls)

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

    # ---- another cluster, named ----

    DIGEST = "registry.example/team/mongo-api@sha256:" + "ab" * 32

    def assert_only_context(self, calls, context):
        self.assertFalse([c for c in calls if c.startswith("minikube ")], calls)
        for call in calls:
            if call.startswith("kubectl ") and " config get-contexts " not in f" {call} ":
                self.assertTrue(call.startswith(f"kubectl --context {context} "), call)
            if call.startswith("helm "):
                self.assertTrue(call.startswith(f"helm --kube-context {context} "), call)

    @unittest.skipUnless(REAL_KUBECTL, "needs kubectl for kustomize")
    def test_another_cluster_gets_the_image_by_digest_in_its_named_context_and_nothing_of_minikube(self):
        with secrets_present():
            real = (ROOT / "k8s/base/secrets.env").read_text()
            if "replace-me" in real:
                self.skipTest("k8s/base/secrets.env holds the example's placeholders")
            for overlay in ("base", "replicaset"):
                run, calls = self.deploy("remote", "prod", overlay, self.DIGEST)
                self.assertEqual(run.returncode, 0, run.stderr)
                self.assert_only_context(calls, "prod")
                self.assertIn("cannot check from here whether prod's network plugin enforces NetworkPolicy", run.stderr)
                self.assertEqual(len(run.stderr.strip().splitlines()), 1, run.stderr)
                self.assertTrue([c for c in calls if "get --raw /version" in c], "the server version is checked")
                applied = "\n".join(calls)
                self.assertIn("newName: registry.example/team/mongo-api", applied)
                self.assertIn("digest: sha256:" + "ab" * 32, applied)
                self.assertIn("NodePort 30007 on the nodes of prod", run.stdout)
                self.assertFalse([c for c in calls if " calico" in c or "metrics-server" in c or "image load" in c], calls)
                self.cluster(namespace=0, deployed="")
                self.log.write_text("")

    def test_another_cluster_is_refused_an_image_by_tag_an_unknown_context_or_an_old_server(self):
        run, calls = self.deploy("remote", "prod", "base", "registry.example/team/mongo-api:0.1.0")
        self.assert_one_line(run)
        self.assertIn("by digest", run.stderr)
        run, _ = self.deploy("remote", "staging", "base", self.DIGEST)
        self.assert_one_line(run)
        self.assertIn("no kubectl context staging", run.stderr)
        run, _ = self.deploy("remote", "minikube", "base", self.DIGEST)
        self.assert_one_line(run)
        run, calls = self.deploy("remote", "prod", "base", self.DIGEST, minor=29)
        self.assert_one_line(run)
        self.assertIn("1.30 or newer", run.stderr)
        self.assertFalse([c for c in calls if " apply -k " in c], calls)

    def test_another_cluster_is_refused_the_examples_placeholder_passwords(self):
        secrets = ROOT / "k8s/base/secrets.env"
        saved = secrets.read_text() if secrets.exists() else None
        try:
            secrets.write_text((ROOT / "k8s/base/secrets.env.example").read_text())
            run, calls = self.deploy("remote", "prod", "base", self.DIGEST)
            self.assert_one_line(run)
            self.assertIn("placeholder passwords", run.stderr)
            self.assertFalse([c for c in calls if " apply -k " in c], calls)
        finally:
            if saved is None:
                secrets.unlink()
            else:
                secrets.write_text(saved)

    def test_undeploy_in_a_named_context_touches_that_context_only(self):
        run, calls = self.deploy("undeploy", "prod", operator=1)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assert_only_context(calls, "prod")
        self.assertEqual(calls[-1], "kubectl --context prod delete namespace mongo-api --ignore-not-found")

    # ---- undeploying ----

    def test_undeploy_deletes_the_namespace_in_minikube_only(self):
        run, calls = self.deploy("undeploy")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(calls[-1], "kubectl --context minikube delete namespace mongo-api --ignore-not-found")
        # The API's pods, first and waited for, so none looks MongoDB up once its Service is gone.
        self.assertEqual(calls[0], "kubectl --context minikube -n mongo-api delete deployment mongo-api --ignore-not-found --cascade=foreground --wait")
        self.assertFalse([c for c in calls[1:] if "uninstall" in c or " delete " in c and "namespace" not in c], calls)
        self.assert_only_minikube_touched(calls)

    def test_undeploy_removes_the_replica_set_the_operator_and_its_webhook_and_leaves_its_crds(self):
        run, calls = self.deploy("undeploy", operator=1, webhook="mongo-api")
        self.assertEqual(run.returncode, 0, run.stderr)
        steps = [
            "kubectl --context minikube -n mongo-api delete deployment mongo-api --ignore-not-found --cascade=foreground --wait",
            "kubectl --context minikube -n mongo-api delete mongodbcommunity --all --ignore-not-found --wait",
            "helm --kube-context minikube uninstall mongodb-kubernetes -n mongo-api --wait",
            "kubectl --context minikube delete validatingwebhookconfiguration mdbpolicy.mongodb.com",
            "kubectl --context minikube delete namespace mongo-api --ignore-not-found",
        ]
        self.assertEqual([calls.index(step) for step in steps], sorted(calls.index(step) for step in steps), calls)
        # Deleting a CRD deletes every object of its kind in every namespace.
        self.assertFalse([c for c in calls if " delete customresourcedefinition" in c or " delete crd" in c], calls)
        self.assertIn("its CRDs stay", run.stdout)
        self.assertIn("mongodbcommunity.mongodbcommunity.mongodb.com", run.stdout)
        self.assert_only_minikube_touched(calls)

    def test_undeploy_leaves_a_webhook_another_namespaces_operator_registered(self):
        run, calls = self.deploy("undeploy", operator=1, webhook="team-b")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertFalse([c for c in calls if " delete validatingwebhookconfiguration" in c], calls)

    # ---- the replica set ----

    def test_the_replicaset_overlay_by_its_short_name_needs_four_cpus(self):
        run, _ = self.deploy("cluster", "replicaset", hostcpus=2)
        self.assert_one_line(run)
        self.assertIn("overlays/replicaset needs 4", run.stderr)

    @unittest.skipUnless(REAL_KUBECTL, "needs kubectl for kustomize")
    def test_the_replicaset_overlay_installs_the_pinned_operator_first_and_waits_for_the_set(self):
        with secrets_present():
            run, calls = self.deploy("apply", "replicaset", "mongo-api:0.1.0-abc1234")
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assert_only_minikube_touched(calls)
            version = self.CLUSTER["charts"]
            searched = next(i for i, c in enumerate(calls) if " search repo " in c)
            install = next(i for i, c in enumerate(calls) if " upgrade --install " in c)
            self.assertIn(f"mongodb-kubernetes mongodb/mongodb-kubernetes --version {version} --namespace mongo-api", calls[install])
            applied = next(i for i, c in enumerate(calls) if " apply -k " in c)
            waited = next(i for i, c in enumerate(calls) if "wait mongodbcommunity/mongo" in c)
            rolled = next(i for i, c in enumerate(calls) if "rollout status deployment/mongo-api" in c)
            self.assertLess(searched, install)
            self.assertLess(install, applied)
            self.assertLess(applied, waited)
            self.assertLess(waited, rolled)
            self.assertIn("--for=jsonpath={.status.phase}=Running", calls[waited])
            self.assertFalse([c for c in calls if "statefulset/mongo" in c], calls)

    def test_a_pinned_operator_version_the_repository_does_not_have_is_refused_in_one_line(self):
        run, calls = self.deploy("apply", "replicaset", "mongo-api:0.1.0", charts="1.8.0 1.9.0")
        self.assert_one_line(run)
        self.assertIn("has no mongodb/mongodb-kubernetes", run.stderr)
        self.assertFalse([c for c in calls if " upgrade --install " in c or " apply -k " in c], calls)

    @unittest.skipUnless(REAL_KUBECTL, "needs kubectl for kustomize")
    def test_the_api_rollout_outlasts_the_wait_for_the_replica_set(self):
        # Its pods wait for the Secret the operator writes once the set is Running.
        with secrets_present():
            rendered = subprocess.run(
                [REAL_KUBECTL, "kustomize", str(ROOT / "k8s/overlays/replicaset")], capture_output=True, text=True, check=True
            ).stdout
        deadline = int(re.search(r"progressDeadlineSeconds: (\d+)", rendered).group(1))
        wait = int(deploy_script_value(r"wait mongodbcommunity/mongo .*--timeout=(\d+)s"))
        rollout = int(deploy_script_value(r"rollout status deployment/mongo-api --timeout=(\d+)s"))
        self.assertGreater(deadline, wait + rollout)

    def test_the_replicaset_overlay_without_helm_says_so_in_one_line(self):
        (self.dir / "helm").unlink()
        self.env["PATH"] = f"{self.dir}:/usr/bin:/bin"
        run, calls = self.deploy("apply", "replicaset", "mongo-api:0.1.0")
        self.assert_one_line(run)
        self.assertIn("install helm", run.stderr)
        self.assertFalse([c for c in calls if "apply" in c], calls)


if __name__ == "__main__":
    unittest.main()
