"""The reference's deployment on the test cluster, through the commands a user types.

The service's image goes to the node's registry with `just push`, the deployment is
applied with `just deploy-to mongo-api-test IMAGE@DIGEST` and removed with
`just undeploy mongo-api-test`; everything in between is observed with kubectl and over
HTTP from the host. The one difference from what users run: the node's registry serves
the MongoDB stand-in's image under the manifests' `mongo:` name (mongo_image.py).

The tests of one deployment run in order (their names are numbered) against the same
namespace; each fails when the part of the deployment it names is broken.

    python -m unittest test_deployment   (from k8s/cluster, as root, with the cluster up)
"""

import json
import os
import re
import socket
import struct
import subprocess
import time
import unittest

import yaml

import mongo_image
import settings as s
import testing
from testing import RESTRICTED, SteadyLoad, eventually, get, http, just, kubectl, pod

NAMESPACE = "mongo-api"
REGISTRY = f"{s.NODE_IP}:{s.REGISTRY_PORT}"
URL = f"http://{s.NODE_IP}:30007"
# What the steady loads ask: a page of documents, so that every request reaches MongoDB
# at the same cost however many documents the tests have stored.
PAGE = f"{URL}/data?limit=10"
API = "app.kubernetes.io/name=mongo-api"


def manifests_mongo_image():
    text = (s.ROOT / "k8s" / "base" / "mongo-statefulset.yaml").read_text()
    return re.search(r"^\s+image: (\S+)$", text, re.M).group(1)


def push_service_image():
    """`just push` to the node's registry (by a private Docker engine told it speaks HTTP);
    the index's reference by digest, as the recipe prints it."""
    out = just("with-docker", REGISTRY, "just", "push", REGISTRY).stdout
    return re.search(r"^index: (\S+)$", out, re.M).group(1)


_image = None


def service_image():
    """The service's image in the node's registry, by digest: pushed once for every test
    of the module (TEST_SERVICE_IMAGE: one already there, to skip the push), and the
    MongoDB stand-in's image there under the manifests' name."""
    global _image
    if _image is None:
        mongo_image.build_image()
        mongo_image.push(manifests_mongo_image())
        _image = os.environ.get("TEST_SERVICE_IMAGE") or push_service_image()
    return _image


def api_pods():
    """The service's pods, less those terminating."""
    return [p for p in get(NAMESPACE, "pods", "-l", API)["items"] if not p["metadata"].get("deletionTimestamp")]


def ready(p):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))


def mongo_ready():
    """Whether mongo-0 is Ready; False while it does not exist (between a deletion and the
    StatefulSet making it again, or scaled to 0)."""
    found = kubectl("-n", NAMESPACE, "get", "pod", "mongo-0", "-o", "json", check=False)
    return found.returncode == 0 and ready(json.loads(found.stdout))


def restarts_and_reasons():
    """Every container restart in the namespace, with why the last one ended."""
    found = {}
    for p in get(NAMESPACE, "pods")["items"]:
        for c in p["status"].get("containerStatuses", []):
            found[p["metadata"]["name"]] = (c["restartCount"], c.get("lastState", {}).get("terminated", {}).get("reason"))
    return found


MiB = 1 << 20


def mongo_connections():
    """TCP connections established to MongoDB's port, counted inside its pod."""
    out = kubectl("-n", NAMESPACE, "exec", "mongo-0", "--", "sh", "-c",
                  "netstat -tn | grep -c ':27017 .*ESTABLISHED'").stdout
    return int(out)


def mongo_memory_limit(overlay):
    """The MongoDB container's memory limit in OVERLAY, in bytes."""
    rendered = yaml.safe_load_all(kubectl("kustomize", str(s.ROOT / "k8s" / overlay)).stdout)
    statefulset = next(d for d in rendered if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "mongo")
    limit = statefulset["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", limit).groups()
    return int(number) * (MiB if unit == "Mi" else 1024 * MiB)


def container_cgroups():
    """The memory cgroup of each service container, on the node's hierarchy."""
    found = {}
    for p in api_pods():
        container = p["status"]["containerStatuses"][0]["containerID"].split("//")[1]
        found[p["metadata"]["name"]] = next(
            (s.CGROUP_ROOT_MEMORY / s.CGROUP).rglob(container))
    return found


def reset_peaks():
    for group in container_cgroups().values():
        (group / "memory.max_usage_in_bytes").write_text("0")


def service_peaks():
    return {name: int((group / "memory.max_usage_in_bytes").read_text())
            for name, group in container_cgroups().items()}


def connect_many(count, first_bytes):
    """COUNT connections to the NodePort, each sending FIRST_BYTES, kept open."""
    held = []
    for _ in range(count):
        sock = socket.create_connection((s.NODE_IP, 30007), timeout=10)
        try:
            sock.sendall(first_bytes)
        except OSError:
            pass  # refused meanwhile: one fewer
        held.append(sock)
    return held


def idle_connections(count):
    held = connect_many(count, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(1)
    return held


def partial_heads(count, size):
    head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Fill: "
    held = connect_many(count, head + b"a" * (size - len(head)))
    time.sleep(1)
    return held


def array_bodies(count):
    """COUNT uploads of the body that grows most into BSON (an array of zeros, 1 MiB),
    all sent at once and answered (stored or refused 503)."""
    zeros = (MiB - 16) // 2
    body = b'{"a":[' + b"0," * (zeros - 1) + b"0]}"
    head = (f"POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    held = connect_many(count, head + body)
    for sock in held:
        sock.settimeout(30)
        sock.recv(64)
    return held


def back_to_two_replicas():
    """The HPA's minimum back at 2, reached in seconds: its scale-down window (2 minutes,
    then a pod a minute) shortened meanwhile, then restored."""
    behavior = get(NAMESPACE, "hpa", "mongo-api")["spec"]["behavior"]
    quick = {"scaleDown": {"stabilizationWindowSeconds": 0,
                           "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}
    kubectl("-n", NAMESPACE, "patch", "hpa", "mongo-api", "--type=merge", "-p",
            json.dumps({"spec": {"minReplicas": 2, "behavior": quick}}))
    eventually("two service pods", 120, lambda: len(api_pods()) == 2, every=2)
    kubectl("-n", NAMESPACE, "patch", "hpa", "mongo-api", "--type=merge", "-p",
            json.dumps({"spec": {"behavior": behavior}}))


def one_shot(namespace, name, command, labels=None):
    """Run COMMAND in a new busybox pod of NAMESPACE; its exit status and output."""
    testing.apply(namespace, pod(name, "exec sleep 600", RESTRICTED, labels=labels))
    try:
        testing.wait_ready(namespace, name)
        out = kubectl("-n", namespace, "exec", name, "--", "sh", "-c", command, check=False)
        return out.returncode, out.stdout + out.stderr
    finally:
        kubectl("-n", namespace, "delete", "pod", name, "--wait=false")


class BaseDeployment(unittest.TestCase):
    """k8s/base, deployed with `just deploy-to`."""

    @classmethod
    def setUpClass(cls):
        cls.image = service_image()
        just("secrets")
        cls.deploy = just("deploy-to", s.CONTEXT, cls.image)

    @classmethod
    def tearDownClass(cls):
        just("undeploy", s.CONTEXT)

    def test_01_every_pod_is_ready_and_admitted_by_pod_security_restricted(self):
        self.assertIn("successfully rolled out", self.deploy.stdout)
        pods = get(NAMESPACE, "pods")["items"]
        self.assertEqual(sorted(p["metadata"]["labels"]["app.kubernetes.io/name"] for p in pods),
                         ["mongo", "mongo-api", "mongo-api"])
        self.assertTrue(all(ready(p) for p in pods), [p["metadata"]["name"] for p in pods if not ready(p)])
        labels = get(None, "namespace", NAMESPACE)["metadata"]["labels"]
        self.assertEqual(labels["pod-security.kubernetes.io/enforce"], "restricted")
        refused = kubectl("-n", NAMESPACE, "apply", "-f", "-", check=False, input=json.dumps(
            pod("privileged", "exec sleep 600", {"privileged": True})))
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn('violates PodSecurity "restricted:latest"', refused.stderr)

    def test_02_the_references_scenario_through_the_node_port(self):
        status, body = http("GET", f"{URL}/")
        self.assertEqual(status, 200)
        self.assertRegex(body, r"^Welcome to the Flask app! The current time is: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
        document = {"scenario": "reference", "n": 2}
        status, body = http("POST", f"{URL}/data", document)
        self.assertEqual((status, json.loads(body)), (201, {"status": "Data inserted"}))
        status, body = http("GET", f"{URL}/data")
        self.assertEqual(status, 200)
        self.assertIn(document, json.loads(body))

    def test_03_the_service_finds_mongodb_by_the_service_name_through_cluster_dns(self):
        config = next(cm["data"] for cm in get(NAMESPACE, "configmaps")["items"] if "MONGO_HOST" in cm.get("data", {}))
        self.assertEqual(config["MONGO_HOST"], "mongo")
        service_ip = get(NAMESPACE, "service", "mongo")["spec"]["clusterIP"]
        mongo_ip = get(NAMESPACE, "pod", "mongo-0")["status"]["podIP"]
        # From a pod of the namespace, as the service's pods ask: `mongo` is the Service's
        # address, and the pod keeps its own stable name under the headless Service.
        code, out = one_shot(NAMESPACE, "resolver", f"nslookup mongo.{NAMESPACE}.svc.{s.CLUSTER_DOMAIN}; "
                             f"nslookup mongo-0.mongo-headless.{NAMESPACE}.svc.{s.CLUSTER_DOMAIN}")
        self.assertIn(f"Address: {service_ip}", out)
        self.assertIn(f"Address: {mongo_ip}", out)
        # And the service, which knows MongoDB by that name only, is Ready: its readiness
        # is a ping of MongoDB with its credentials.
        self.assertTrue(all(ready(p) for p in api_pods()))

    def test_04_mongodbs_data_survives_its_pod_being_deleted(self):
        documents = [{"survivor": i} for i in range(20)]
        for d in documents:
            self.assertEqual(http("POST", f"{URL}/data", d)[0], 201)
        claim = get(NAMESPACE, "pvc", "data-mongo-0")["spec"]["volumeName"]
        kubectl("-n", NAMESPACE, "delete", "pod", "mongo-0", "--wait=true")
        eventually("mongo-0 back", 180, mongo_ready, every=2)
        self.assertEqual(get(NAMESPACE, "pvc", "data-mongo-0")["spec"]["volumeName"], claim)
        def survivors():
            # (In an order of MongoDB's choosing: natural order is not kept across a
            # restart.) Each service pod finds MongoDB again on its own: until then it
            # answers 503 itself.
            status, body = http("GET", f"{URL}/data")
            return status == 200 and sorted(d["survivor"] for d in json.loads(body) if "survivor" in d)

        eventually("all 20 documents listed again", 60, lambda: survivors() == list(range(20)))

    def test_05_network_policy_keeps_mongodb_and_the_management_port_from_other_pods(self):
        other = "mongo-api-netpol-test"
        kubectl("create", "namespace", other)
        self.addCleanup(kubectl, "delete", "namespace", other, "--wait=false")
        testing.apply(other, pod("stranger", "exec sleep 600", RESTRICTED))
        testing.wait_ready(other, "stranger")
        mongo_ip = get(NAMESPACE, "pod", "mongo-0")["status"]["podIP"]
        api_ip = api_pods()[0]["status"]["podIP"]
        # MongoDB closes a connection that sends it garbage, so nc ends at once when it
        # got through; a refused or dropped one fails (or meets `timeout`).
        probes = (f"echo x | timeout 3 nc {mongo_ip} 27017 >/dev/null; echo mongo=$?; "
                  f"timeout 3 wget -qO- http://{api_ip}:8081/healthz >/dev/null; echo management=$?; "
                  f"timeout 3 wget -qO- http://{api_ip}:5000/ >/dev/null; echo api=$?")

        def reachable():
            out = kubectl("-n", other, "exec", "stranger", "--", "sh", "-c", probes).stdout
            return {name: code == "0" for name, code in re.findall(r"^(\w+)=(\d+)$", out, re.M)}

        self.assertEqual(reachable(), {"mongo": False, "management": False, "api": True})
        self.assertTrue(all(ready(p) for p in api_pods()), "the service reaches MongoDB")
        # Without the policies the same probes get through: what closed them was the
        # policies, not the probes.
        policies = get(NAMESPACE, "networkpolicies")["items"]
        self.assertEqual(len(policies), 2)
        kubectl("-n", NAMESPACE, "delete", "networkpolicies", "--all")
        try:
            eventually("every port open without the policies", 30,
                       lambda: reachable() == {"mongo": True, "management": True, "api": True})
        finally:
            for policy in policies:
                for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
                    policy["metadata"].pop(key, None)
            testing.apply(NAMESPACE, *policies)
        eventually("the policies enforced again", 30,
                   lambda: reachable() == {"mongo": False, "management": False, "api": True})

    def test_06_deleting_a_service_pod_under_load_loses_no_request(self):
        victim = api_pods()[0]["metadata"]["name"]
        with SteadyLoad(PAGE) as load:
            kubectl("-n", NAMESPACE, "delete", "pod", victim, "--wait=true")
            eventually("two service pods ready again", 120, lambda: sum(ready(p) for p in api_pods()) == 2)
        self.assertEqual(load.failures, [], load.summary())
        self.assertGreater(load.ok, 100, load.summary())

    def test_07_a_rolling_update_and_a_drain_under_load_lose_no_request(self):
        # A new image reference (the amd64 image by its own digest, not the index's)
        # rolled out by the user's command.
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{self.image}"],
                             capture_output=True, text=True, check=True).stdout
        amd64 = next(m["digest"] for m in json.loads(raw)["manifests"] if m["platform"]["architecture"] == "amd64")
        new_image = f"{self.image.split('@')[0]}@{amd64}"
        with SteadyLoad(PAGE) as load:
            just("deploy-to", s.CONTEXT, new_image)
            images = {p["spec"]["containers"][0]["image"] for p in api_pods()}
            drain = kubectl("drain", s.NODE_NAME, f"--pod-selector={API}", "--timeout=40s",
                            "--ignore-daemonsets", "--delete-emptydir-data", check=False)
            ready_during_drain = sum(ready(p) for p in api_pods())
            kubectl("uncordon", s.NODE_NAME)
            eventually("two service pods ready after the drain", 120, lambda: sum(ready(p) for p in api_pods()) == 2)
        self.assertEqual(images, {new_image})
        # One node: the PodDisruptionBudget (minAvailable 1) lets the drain evict one
        # pod, which cannot come back on the cordoned node, and refuses the other.
        self.assertNotEqual(drain.returncode, 0, drain.stdout)
        self.assertIn("disruption budget", drain.stderr + drain.stdout)
        self.assertGreaterEqual(ready_during_drain, 1)
        self.assertEqual(load.failures, [], load.summary())

    def test_08_with_a_wrong_password_in_the_secret_the_service_is_not_ready_and_says_why(self):
        secret = get(NAMESPACE, "secret", "mongo-credentials")
        kubectl("-n", NAMESPACE, "patch", "secret", "mongo-credentials", "--type=merge",
                "-p", json.dumps({"stringData": {"MONGO_APP_PASSWORD": "not-the-password"}}))
        old = {p["metadata"]["name"] for p in api_pods()}
        try:
            kubectl("-n", NAMESPACE, "rollout", "restart", "deployment/mongo-api")
            new = eventually("a pod with the new password running", 60, lambda: [
                p for p in api_pods() if p["metadata"]["name"] not in old and p["status"].get("phase") == "Running"])
            name, ip = new[0]["metadata"]["name"], new[0]["status"]["podIP"]
            # Long enough for several readiness periods (5 s) and MongoDB's timeout (2 s).
            with SteadyLoad(PAGE) as load:
                eventually("the new pod to say why", 30, lambda: "uthentication" in kubectl(
                    "-n", NAMESPACE, "logs", name).stdout)
                logs = kubectl("-n", NAMESPACE, "logs", name).stdout
                pod_now = get(NAMESPACE, "pod", name)
                code, answer = one_shot(NAMESPACE, "asker",
                                        f"wget -S -qO- http://{ip}:5000/data 2>&1; echo; wget -qO- http://{ip}:5000/")
            self.assertFalse(ready(pod_now), "a pod that cannot log in to MongoDB is not Ready")
            # The rollout waits for it (maxUnavailable 0): the old pods serve meanwhile.
            self.assertEqual({p["metadata"]["name"] for p in api_pods() if ready(p)}, old)
            self.assertEqual(load.failures, [], load.summary())
            auth_lines = [line for line in logs.splitlines() if "uthentication" in line]
            self.assertTrue(auth_lines, logs)
            self.assertNotIn("not-the-password", logs)
            # What it answers itself: 503 for the data it cannot reach, its own page.
            self.assertIn("HTTP/1.1 503", answer)
            self.assertIn("Welcome to the Flask app!", answer)
        finally:
            kubectl("-n", NAMESPACE, "patch", "secret", "mongo-credentials", "--type=merge",
                    "-p", json.dumps({"data": secret["data"]}))
            kubectl("-n", NAMESPACE, "rollout", "restart", "deployment/mongo-api")
            kubectl("-n", NAMESPACE, "rollout", "status", "deployment/mongo-api", "--timeout=180s")

    def test_09_five_service_pods_under_load_hold_connections_mongodb_has_memory_for(self):
        kubectl("-n", NAMESPACE, "patch", "hpa", "mongo-api", "--type=merge", "-p", '{"spec":{"minReplicas":5}}')
        try:
            eventually("five service pods ready", 180, lambda: sum(ready(p) for p in api_pods()) == 5, every=2)
            with SteadyLoad(PAGE, clients=8, pause=0) as load:
                eventually(lambda: f"500 requests answered ({load.summary()})", 60, lambda: load.ok > 500)
                connections = mongo_connections()
            self.assertEqual(load.failures, [], load.summary())
        finally:
            back_to_two_replicas()
        # mongod runs a thread per connection and budgets up to about 1 MiB for each;
        # beside the WiredTiger cache the StatefulSet sets (0.25 GB), they must fit in its
        # memory limit, in each overlay.
        limits = {overlay: mongo_memory_limit(overlay) for overlay in ("base", "overlays/assignment")}
        print(f"\nMongoDB connections with 5 service pods under load: {connections}; memory limits {limits}")
        for overlay, limit in limits.items():
            self.assertLessEqual(256 * MiB + connections * MiB, limit, overlay)

    def test_10_service_pods_under_the_memory_floods_are_not_oom_killed(self):
        # The Deployment's own two replicas take the floods between them.
        self.assertEqual(len(api_pods()), 2)
        peaks = {}
        floods = [("10,000 idle keep-alive connections", lambda: idle_connections(10_000)),
                  ("19,000 connections holding 7 KiB of a head", lambda: partial_heads(19_000, 7 * 1024)),
                  ("64 concurrent 1 MiB array bodies", lambda: array_bodies(64))]
        for name, flood in floods:
            reset_peaks()
            held = flood()
            status, _ = http("GET", f"{URL}/")
            for sock in held:
                # Reset, not closed: 29,000 connections ending in TIME_WAIT would hold this
                # host's ephemeral ports toward the NodePort for a minute.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            peaks[name] = service_peaks()
            self.assertEqual(status, 200, f"a newcomer during {name}")
        print(f"\nservice pods' memory cgroup peaks, MiB (limit 120): "
              f"{ {name: sorted(round(p / MiB, 1) for p in by_pod.values()) for name, by_pod in peaks.items()} }")
        # No container of the namespace restarted, for memory or anything else.
        self.assertEqual({name: r for name, r in restarts_and_reasons().items() if r != (0, None)}, {})
        for name, by_pod in peaks.items():
            self.assertTrue(all(peak < 120 * MiB for peak in by_pod.values()), name)

    def test_11_undeploy_removes_the_namespace_and_mongodbs_volume(self):
        volume = get(NAMESPACE, "pvc", "data-mongo-0")["spec"]["volumeName"]
        spec = get(None, "pv", volume)["spec"]
        path = (spec.get("hostPath") or spec["local"])["path"]
        self.assertTrue(os.path.isdir(path))
        just("undeploy", s.CONTEXT)
        self.assertNotEqual(kubectl("get", "namespace", NAMESPACE, check=False).returncode, 0)
        # The claim's volume goes with it (the class reclaims by deleting), and its
        # directory on the node with the volume.
        eventually("the volume deleted", 60, lambda: kubectl("get", "pv", volume, check=False).returncode != 0)
        eventually("its directory removed", 60, lambda: not os.path.exists(path))


class MinikubePath(unittest.TestCase):
    """`just deploy`, `just url`, `just logs`, `just hpa-demo` and `just undeploy`, with only
    the `minikube` command stood in for (k8s/cluster/minikube, first on PATH) and kubectl's
    context `minikube` naming the test cluster: every kubectl call the recipes make is
    answered by the real API server. Calico is Minikube's NetworkPolicy enforcer, which the
    recipe looks for; here kube-router enforces it, so the recipe is told to go on
    without (ALLOW_NO_CALICO)."""

    @classmethod
    def setUpClass(cls):
        kubeconfig = s.CACHE / "minikube.kubeconfig"
        config = yaml.safe_load(s.KUBECONFIG.read_text())
        config["contexts"][0]["name"] = config["current-context"] = "minikube"
        kubeconfig.write_text(json.dumps(config))
        kubeconfig.chmod(0o600)
        cls.env = {"PATH": f"{s.HERE}:{os.environ['PATH']}", "KUBECONFIG": f"{kubeconfig}", "ALLOW_NO_CALICO": "1"}
        mongo_image.build_image()
        mongo_image.push(manifests_mongo_image())
        cls.deploy = just("with-docker", "-", "just", "deploy", env=cls.env)

    @classmethod
    def tearDownClass(cls):
        just("undeploy", env=cls.env)

    def test_1_deploy_loads_the_image_into_the_node_and_rolls_out(self):
        self.assertIn("successfully rolled out", self.deploy.stdout)
        image = api_pods()[0]["spec"]["containers"][0]["image"]
        self.assertRegex(image, r"^mongo-api:0\.1\.0-\w+")
        # Loaded, not pulled: the node's registry was never asked for it.
        self.assertNotIn("/v2/library/mongo-api/", (s.LOGS / "registry.log").read_text())

    def test_2_url_prints_the_node_port_at_once_and_it_answers(self):
        url = just("url", env=self.env).stdout.strip()
        self.assertEqual(url, URL)
        self.assertEqual(http("GET", f"{url}/")[0], 200)

    def test_3_logs_follows_every_pods_json_lines(self):
        http("GET", f"{URL}/")
        logs = subprocess.run(["timeout", "10", "just", "logs"], cwd=s.ROOT, capture_output=True, text=True,
                              env=dict(os.environ, **self.env))
        lines = [line for line in logs.stdout.splitlines() if line.startswith("[pod/mongo-api-")]
        self.assertTrue(lines, logs.stdout + logs.stderr)
        self.assertEqual(len({line.split()[0] for line in lines}), 2, "both pods' lines")
        self.assertTrue(all(json.loads(line.split(" ", 1)[1]) for line in lines))

    def test_4_hpa_demo_scales_out_under_its_load_and_back_when_it_ends(self):
        # Only here: the scale-down's stabilisation window (2 minutes, then a pod a
        # minute) shortened to 15 s, so that the return to 2 replicas takes seconds.
        kubectl("-n", NAMESPACE, "patch", "hpa", "mongo-api", "--type=merge", "-p", json.dumps({"spec": {"behavior": {
            "scaleDown": {"stabilizationWindowSeconds": 15,
                          "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}}}))
        # The reference's screenshots are of `kubectl get hpa -w` and `kubectl get pods -w`
        # beside the load: recorded here, beside the demo's own timeline.
        out_dir = s.ROOT / "target" / "hpa-demo"
        out_dir.mkdir(parents=True, exist_ok=True)
        watches = []
        for kind in ("hpa", "pods"):
            with open(out_dir / f"{kind}-watch.txt", "w") as record:
                watches.append(subprocess.Popen(
                    ["kubectl", f"--kubeconfig={s.KUBECONFIG}", "-n", NAMESPACE, "get", kind, "-w"],
                    stdout=record, stderr=subprocess.STDOUT))
        try:
            demo = just("hpa-demo", "--minutes", "2", "--cooldown-minutes", "4", env=self.env)
        finally:
            for watch in watches:
                watch.terminate()
                watch.wait()
        out = demo.stdout
        (out_dir / "output.txt").write_text(out)
        print(f"\n{out}")
        timeline = [(int(t), int(replicas)) for t, replicas in
                    re.findall(r"^\s*(\d+)s\s+(\d+)\s+\d+\s+\S+/70%", out, re.M)]
        self.assertGreater(max(r for _, r in timeline), 2, "scaled out")
        self.assertEqual(timeline[-1][1], 2, "back to 2 replicas")
        shares = [int(n) for n in re.findall(r"^  mongo-api-\S+\s+(\d+)\s+[\d.]+%$", out, re.M)]
        self.assertGreater(len(shares), 2, "more pods than the first two answered")
        self.assertTrue(all(n > 0 for n in shares), shares)
        statuses = re.search(r"statuses \{(.*)\}", out).group(1)
        self.assertRegex(statuses, r'^"200": \d+$', "every request of the load answered 200")


class AssignmentOverlay(unittest.TestCase):
    """k8s/overlays/assignment (the reference's requests and limits), with `just deploy-to`."""

    def test_rolls_out_with_the_references_resources_and_serves_the_scenario(self):
        self.addCleanup(just, "undeploy", s.CONTEXT)
        deploy = just("deploy-to", s.CONTEXT, service_image(), "assignment")
        self.assertIn("successfully rolled out", deploy.stdout)
        for p in get(NAMESPACE, "pods")["items"]:
            resources = p["spec"]["containers"][0]["resources"]
            self.assertEqual(resources, {"requests": {"cpu": "200m", "memory": "250Mi"},
                                         "limits": {"cpu": "500m", "memory": "500Mi"}}, p["metadata"]["name"])
        self.assertEqual(http("POST", f"{URL}/data", {"overlay": "assignment"})[0], 201)
        self.assertIn({"overlay": "assignment"}, json.loads(http("GET", f"{URL}/data")[1]))


class ServerSideDryRun(unittest.TestCase):
    """Every overlay as the API server would take it (`kubectl apply --dry-run=server`):
    admission (Pod Security included), defaulting and validation of every field."""

    def setUp(self):
        self.addCleanup(kubectl, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true")

    def dry_run(self, overlay):
        documents = list(yaml.safe_load_all(kubectl("kustomize", str(s.ROOT / "k8s" / overlay)).stdout))
        # The namespace for real (a dry run creates nothing, and the rest needs it).
        namespace = [d for d in documents if d["kind"] == "Namespace"]
        testing.apply(None, *namespace)
        rest = [d for d in documents if d["kind"] != "Namespace"]
        return rest, [kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(d), check=False)
                      for d in rest]

    def test_the_base_and_assignment_overlays_are_accepted_whole(self):
        for overlay in ("base", "overlays/assignment"):
            _, results = self.dry_run(overlay)
            failed = [r.stderr for r in results if r.returncode != 0]
            self.assertEqual(failed, [], overlay)
            kubectl("delete", "namespace", NAMESPACE, "--wait=true")

    def test_the_replica_set_overlay_is_accepted_but_for_the_operators_resource(self):
        # Without the operator's CRD (its chart cannot be fetched here) the API server
        # knows no MongoDBCommunity; everything else is checked as for the other overlays.
        documents, results = self.dry_run("overlays/replicaset")
        for document, result in zip(documents, results):
            if document["kind"] == "MongoDBCommunity":
                self.assertIn("no matches for kind", result.stderr)
            else:
                self.assertEqual(result.returncode, 0, result.stderr)


if __name__ == "__main__":
    unittest.main()
