"""The deployment on a cluster that is not ours alone, on the test cluster: `just undeploy`
removes only what `just deploy` made, `just deploy-to` finds out first what the cluster
lacks (each check shown by taking the thing away), passwords that no longer match
MongoDB's surviving users are refused, and a MongoDB restart is not an outage.

    python -m unittest test_shared_cluster   (from k8s/cluster, as root, with the cluster up)
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

import yaml

import addons
import settings as s
import testing
from test_deployment import NAMESPACE, PAGE, URL, api_pods, mongo_ready, one_shot, ready, service_image
from testing import SteadyLoad, eventually, get, http, just, kubectl

CRD = "mongodbcommunity.mongodbcommunity.mongodb.com"
WEBHOOK = "mdbpolicy.mongodb.com"
HELM = {"PATH": f"{s.CACHE / 'bin'}:{os.environ['PATH']}"}
def deploy(env=None, check=True):
    return just("deploy-to", s.CONTEXT, service_image(), env=env, check=check)


def serving(count=20):
    """COUNT listings in a row answered 200, each on a new connection (so through either
    API pod, and by any of its workers' clients)."""
    return all(http("GET", PAGE)[0] == 200 for _ in range(count))


def resolvers_answer(service):
    """CoreDNS's replicas asked directly, from a pod of the namespace, the service pods' first
    query for `mongo` (each keeps a cache of its own): how many replicas, how many answered
    SERVICE's address, and what they said."""
    replicas = [p["status"]["podIP"] for p in get("kube-system", "pods", "-l", "k8s-app=kube-dns")["items"]]
    name = f"mongo.{NAMESPACE}.svc.{s.CLUSTER_DOMAIN}"
    _, out = one_shot(NAMESPACE, "resolver", "; ".join(f"nslookup {name} {ip}" for ip in replicas))
    return len(replicas), out.count(f"Address: {service}"), out


def images(image):
    """A kustomization's `images` pinning the service to IMAGE (NAME@DIGEST)."""
    name, digest = image.split("@")
    return [{"name": "mongo-api", "newName": name, "digest": digest}]


def namespace_exists(name):
    return kubectl("get", "namespace", name, check=False).returncode == 0


def operator_crd():
    """A CustomResourceDefinition of the operator's kind, as its chart ships it (the fields
    are not what is tested here: who deletes it is)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD},
        "spec": {"group": "mongodbcommunity.mongodb.com", "scope": "Namespaced",
                 "names": {"kind": "MongoDBCommunity", "plural": "mongodbcommunity", "singular": "mongodbcommunity"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
    }


class UndeployOnASharedCluster(unittest.TestCase):
    def test_undeploy_leaves_another_teams_operator_objects(self):
        # Our operator: a real Helm release of that name in our namespace, holding the CRD
        # as the operator's chart does (crds/), and the webhook it registers, calling it.
        chart = Path(tempfile.mkdtemp(prefix="mongo-api-chart."))
        self.addCleanup(shutil.rmtree, chart)
        (chart / "crds").mkdir()
        (chart / "templates").mkdir()
        (chart / "Chart.yaml").write_text("apiVersion: v2\nname: mongodb-kubernetes\nversion: 1.9.1\n")
        (chart / "crds" / "crd.yaml").write_text(json.dumps(operator_crd()))
        (chart / "templates" / "operator.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: operator\ndata: {}\n")
        subprocess.run(["helm", f"--kubeconfig={s.KUBECONFIG}", "install", "mongodb-kubernetes", str(chart),
                        "-n", NAMESPACE, "--create-namespace", "--wait"], env={**os.environ, **HELM},
                       check=True, capture_output=True)
        # Another team's: a MongoDB of the same kind in their namespace.
        other = "team-b"
        kubectl("create", "namespace", other)
        self.addCleanup(kubectl, "delete", "namespace", other, "--ignore-not-found", "--wait=false")
        self.addCleanup(kubectl, "delete", "crd", CRD, "--ignore-not-found")
        testing.apply(other, {"apiVersion": "mongodbcommunity.mongodb.com/v1", "kind": "MongoDBCommunity",
                              "metadata": {"name": "their-mongo"}, "spec": {"members": 3}})
        # The operator registers its webhook itself, under one cluster-wide name: here
        # the other team's operator did, calling into their namespace.
        self.addCleanup(kubectl, "delete", "validatingwebhookconfiguration", WEBHOOK, "--ignore-not-found")
        testing.apply(None, {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK},
            "webhooks": [{"name": WEBHOOK, "admissionReviewVersions": ["v1"], "sideEffects": "None",
                          "failurePolicy": "Ignore",
                          "clientConfig": {"service": {"namespace": other, "name": "operator-webhook"}},
                          "rules": [{"apiGroups": ["mongodbcommunity.mongodb.com"], "apiVersions": ["v1"],
                                     "operations": ["CREATE"], "resources": ["mongodbcommunity"]}]}]})

        undeploy = just("undeploy", s.CONTEXT, env=HELM)
        self.assertFalse(namespace_exists(NAMESPACE) and
                         not get(None, "namespace", NAMESPACE)["metadata"].get("deletionTimestamp"))
        self.assertEqual(get(other, "mongodbcommunity", "their-mongo")["spec"], {"members": 3})
        self.assertEqual(kubectl("get", "crd", CRD, check=False).returncode, 0)
        self.assertEqual(kubectl("get", "validatingwebhookconfiguration", WEBHOOK, check=False).returncode, 0)
        self.assertIn(f"delete customresourcedefinition.apiextensions.k8s.io/{CRD}", undeploy.stdout)


class ChecksBeforeApplying(unittest.TestCase):
    """Each check of `just deploy-to`, shown by taking away what it checks for: it stops (or
    warns) in one line, and, when it stops, nothing was applied."""

    def tearDown(self):
        just("undeploy", s.CONTEXT)

    def assert_refused(self, done, text):
        self.assertNotEqual(done.returncode, 0)
        self.assertIn(text, done.stderr)
        self.assertFalse(namespace_exists(NAMESPACE), "nothing applied")

    def test_no_default_storage_class(self):
        annotation = "storageclass.kubernetes.io/is-default-class"
        kubectl("annotate", "storageclass", "standard", f"{annotation}-")
        try:
            self.assert_refused(deploy(check=False), "no default StorageClass")
            done = deploy(env={"STORAGE_CLASS": "standard"})
            self.assertIn("successfully rolled out", done.stdout)
            self.assertEqual(get(NAMESPACE, "pvc", "data-mongo-0")["spec"]["storageClassName"], "standard")
        finally:
            kubectl("annotate", "storageclass", "standard", f"{annotation}=true", "--overwrite")

    def test_the_node_port_taken(self):
        other = "team-c"
        kubectl("create", "namespace", other)
        # Gone before the next test deploys, or its Service would still hold the port.
        self.addCleanup(kubectl, "delete", "namespace", other, "--wait=true")
        testing.apply(other, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "theirs"},
                              "spec": {"type": "NodePort", "selector": {"app": "theirs"},
                                       "ports": [{"port": 80, "nodePort": 30007}]}})
        self.assert_refused(deploy(check=False), f"NodePort 30007 is taken by the Service {other}/theirs")
        done = deploy(env={"NODE_PORT": "auto"})
        port = get(NAMESPACE, "service", "mongo-api")["spec"]["ports"][0]["nodePort"]
        self.assertNotEqual(port, 30007)
        self.assertIn(f"NodePort {port} on the nodes", done.stdout)
        self.assertEqual(http("GET", f"http://{s.NODE_IP}:{port}/")[0], 200)

    def test_a_pull_secret_that_is_not_there_and_one_that_is(self):
        self.assert_refused(deploy(env={"PULL_SECRET": "registry-login"}, check=False),
                            "no Secret registry-login in namespace mongo-api")
        kubectl("create", "namespace", NAMESPACE)
        kubectl("-n", NAMESPACE, "create", "secret", "docker-registry", "registry-login",
                f"--docker-server={s.NODE_IP}:{s.REGISTRY_PORT}", "--docker-username=u", "--docker-password=p")
        deploy(env={"PULL_SECRET": "registry-login"})
        spec = get(NAMESPACE, "deployment", "mongo-api")["spec"]["template"]["spec"]
        self.assertEqual(spec["imagePullSecrets"], [{"name": "registry-login"}])

    def test_no_metrics_api_is_said_and_not_refused(self):
        service = get(None, "apiservice", "v1beta1.metrics.k8s.io")
        kubectl("delete", "apiservice", "v1beta1.metrics.k8s.io")
        try:
            done = deploy()
            self.assertIn("serves no metrics API", done.stderr)
            self.assertIn("successfully rolled out", done.stdout)
        finally:
            for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
                service["metadata"].pop(key, None)
            service.pop("status", None)
            testing.apply(None, service)
            eventually("the metrics API back", 60, lambda: kubectl("top", "nodes", check=False).returncode == 0)


class PasswordsAndSurvivingData(unittest.TestCase):
    def test_new_passwords_over_a_surviving_volume_are_refused_before_anything_changes(self):
        secrets = s.ROOT / "k8s" / "base" / "secrets.env"
        saved = secrets.read_text()
        self.addCleanup(just, "undeploy", s.CONTEXT)
        deploy()
        # A fresh clone's `just secrets`: other random passwords, the volume still there.
        self.addCleanup(secrets.write_text, saved)
        secrets.write_text(saved.replace("MONGO_APP_PASSWORD=", "MONGO_APP_PASSWORD=new-"))
        before = get(NAMESPACE, "secret", "mongo-credentials")["data"]
        done = deploy(check=False)
        self.assertNotEqual(done.returncode, 0)
        said = [line for line in done.stderr.splitlines() if "secrets.env" in line]
        self.assertEqual(len(said), 1, done.stderr)
        self.assertIn("MONGO_APP_PASSWORD is not the one MongoDB's surviving volume was set up with", said[0])
        self.assertIn("db.changeUserPassword", said[0])
        self.assertEqual(get(NAMESPACE, "secret", "mongo-credentials")["data"], before)
        self.assertTrue(all(ready(p) for p in api_pods()))


class MongoDBRestart(unittest.TestCase):
    def setUp(self):
        self.addCleanup(just, "undeploy", s.CONTEXT)
        deploy()

    def test_a_mongodb_restart_keeps_the_service_in_its_service_answering_for_itself(self):
        """What clients of the NodePort see, second by second, while mongo-0 restarts."""
        seconds = {}
        with SteadyLoad(f"{URL}/") as root, SteadyLoad(PAGE) as listing:
            started = time.monotonic()
            kubectl("-n", NAMESPACE, "delete", "pod", "mongo-0", "--wait=false")
            eventually("mongo-0 back", 180, mongo_ready, every=1)
            eventually("listings again", 60, lambda: http("GET", PAGE)[0] == 200)
            time.sleep(2)
        for second, error in listing.failures:
            seconds.setdefault(int(second), set()).add(error.split(":")[0])
        timeline = [(second, sorted(errors)) for second, errors in sorted(seconds.items())]
        print(f"\nmongo-0 deleted; GET / {root.summary()}; GET /data?limit=10 failures by second: {timeline}")
        self.assertEqual(root.failures, [], root.summary())
        # Listings are answered, by the service itself, 503 with Retry-After: never a
        # refused connection, which is what an empty Service gives.
        self.assertTrue(listing.failures, "the outage was not seen")
        self.assertTrue(all(error.startswith("status 503") for _, error in listing.failures), listing.summary())
        self.assertLess(time.monotonic() - started, 240)

    def test_with_mongodb_gone_its_name_resolves_and_the_service_serves_once_it_is_back(self):
        """A name that vanished with MongoDB would be answered "no such name" from CoreDNS's
        cache for up to 30 s after MongoDB is back: `mongo` is a ClusterIP Service's."""
        kubectl("-n", NAMESPACE, "scale", "statefulset", "mongo", "--replicas=0")
        kubectl("-n", NAMESPACE, "wait", "--for=delete", "pod/mongo-0", "--timeout=120s")
        # The service's clients look MongoDB up again and again meanwhile: each listing is a
        # try. CoreDNS's answers from before, which it keeps for DNS_CACHE_SECONDS, are gone
        # before it is asked.
        with SteadyLoad(PAGE) as listing:
            eventually("listings answered 503", 30, lambda: listing.failures)
            time.sleep(addons.DNS_CACHE_SECONDS + 1)
            replicas, answered, out = resolvers_answer(get(NAMESPACE, "service", "mongo")["spec"]["clusterIP"])
            self.assertEqual(answered, replicas, out)
            kubectl("-n", NAMESPACE, "scale", "statefulset", "mongo", "--replicas=1")
            eventually("mongo-0 back", 180, mongo_ready, every=0.5)
        back = time.monotonic()
        eventually("20 listings in a row", 60, serving, every=0.2)
        waited = time.monotonic() - back
        print(f"\nMongoDB scaled to 0 and back: 20 listings in a row {waited:.1f} s after mongo-0 was Ready; "
              f"while it was gone: {listing.summary()}")
        self.assertTrue(all(error.startswith("status 503") for _, error in listing.failures), listing.summary())
        self.assertLess(waited, 10)

    def test_undeploy_and_deploy_at_once_serve_at_once(self):
        """An undeploy under load, then a deploy at once: what CoreDNS cached while the old
        namespace went must not be what the new one's pods are told."""
        with SteadyLoad(PAGE):
            time.sleep(2)
            just("undeploy", s.CONTEXT)
        deploy()
        replicas, answered, out = resolvers_answer(get(NAMESPACE, "service", "mongo")["spec"]["clusterIP"])
        self.assertEqual(answered, replicas, out)
        statuses = [http("POST", f"{URL}/data", {"redeployed": i})[0] for i in range(20)]
        self.assertEqual(statuses, [201] * 20)
        self.assertTrue(serving())

    def test_editing_an_api_setting_rolls_the_api_and_not_mongodb(self):
        mongo_uid = get(NAMESPACE, "pod", "mongo-0")["metadata"]["uid"]
        # The base with one API setting changed, as a user would edit it.
        overlay = Path(tempfile.mkdtemp(prefix="mongo-api-edit."))
        self.addCleanup(shutil.rmtree, overlay)
        image = get(NAMESPACE, "deployment", "mongo-api")["spec"]["template"]["spec"]["containers"][0]["image"]
        (overlay / "kustomization.yaml").write_text(json.dumps({
            "resources": [os.path.relpath(s.ROOT / "k8s" / "base", overlay)],
            "configMapGenerator": [{"name": "api-config", "behavior": "merge", "literals": ["LOG_LEVEL=debug"]}],
            "images": images(image),
        }))
        rendered = kubectl("kustomize", "--load-restrictor=LoadRestrictionsNone", str(overlay)).stdout
        kubectl("apply", "-f", "-", input=rendered)
        kubectl("-n", NAMESPACE, "rollout", "status", "deployment/mongo-api", "--timeout=180s")
        references = get(NAMESPACE, "deployment", "mongo-api")["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        self.assertTrue(any("LOG_LEVEL" in get(NAMESPACE, "configmap", r["configMapRef"]["name"])["data"]
                            for r in references), "the edit reached the API's pods")
        mongo = get(NAMESPACE, "pod", "mongo-0")
        self.assertEqual(mongo["metadata"]["uid"], mongo_uid, "MongoDB was restarted")
        self.assertEqual(mongo["status"]["containerStatuses"][0]["restartCount"], 0)


class AnOlderDeployment(unittest.TestCase):
    def test_one_made_with_a_headless_mongo_service_moves_over_with_its_data(self):
        """Deployed before `mongo` became a ClusterIP Service beside the StatefulSet's
        headless one: both fields are immutable, so `just deploy-to` makes them anew."""
        self.addCleanup(just, "undeploy", s.CONTEXT)
        overlay = Path(tempfile.mkdtemp(prefix="mongo-api-older."))
        self.addCleanup(shutil.rmtree, overlay)
        shutil.copytree(s.ROOT / "k8s" / "base", overlay / "base")
        service = next(yaml.safe_load_all((overlay / "base" / "mongo-service.yaml").read_text()))
        service["spec"]["clusterIP"] = "None"
        (overlay / "base" / "mongo-service.yaml").write_text(json.dumps(service))
        statefulset = overlay / "base" / "mongo-statefulset.yaml"
        statefulset.write_text(statefulset.read_text().replace("serviceName: mongo-headless", "serviceName: mongo"))
        image = service_image()
        (overlay / "kustomization.yaml").write_text(json.dumps({
            "resources": ["base"],
            "images": images(image),
        }))
        kubectl("apply", "-f", "-", input=kubectl("kustomize", str(overlay)).stdout)
        kubectl("-n", NAMESPACE, "rollout", "status", "statefulset/mongo", "--timeout=300s")
        kubectl("-n", NAMESPACE, "rollout", "status", "deployment/mongo-api", "--timeout=180s")
        self.assertEqual(get(NAMESPACE, "service", "mongo")["spec"]["clusterIP"], "None")
        eventually("the first document in", 60, lambda: http("POST", f"{URL}/data", {"older": 0})[0] == 201)
        for i in range(1, 10):
            self.assertEqual(http("POST", f"{URL}/data", {"older": i})[0], 201)
        claim = get(NAMESPACE, "pvc", "data-mongo-0")["spec"]["volumeName"]

        done = deploy()
        self.assertIn("MongoDB restarts once, its data stays", done.stdout)
        self.assertNotEqual(get(NAMESPACE, "service", "mongo")["spec"]["clusterIP"], "None")
        self.assertEqual(get(NAMESPACE, "statefulset", "mongo")["spec"]["serviceName"], "mongo-headless")
        self.assertEqual(get(NAMESPACE, "pvc", "data-mongo-0")["spec"]["volumeName"], claim)

        def listed():
            status, body = http("GET", f"{URL}/data")
            return status == 200 and sorted(d["older"] for d in json.loads(body) if "older" in d)

        # (The old pods' lookups while MongoDB restarted may be cached "no such name" for up
        # to 30 s: once, for this move.)
        eventually("all 10 documents listed", 60, lambda: listed() == list(range(10)))
        self.assertTrue(all(ready(p) for p in api_pods()))


if __name__ == "__main__":
    unittest.main()
