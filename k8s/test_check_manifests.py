"""Shows that each check of check_manifests.py fails on a broken copy of the manifests.

Run: python3 -m unittest k8s/test_check_manifests.py (needs kubectl for kustomize).
"""

import copy
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import yaml

from check_manifests import Binary, Checker

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "mongo-api:0.1.0"


def render(overlay):
    """Renders an overlay from a copy of k8s/ with throwaway credentials."""
    with tempfile.TemporaryDirectory() as tmp:
        k8s = Path(tmp) / "k8s"
        shutil.copytree(ROOT / "k8s", k8s)
        (k8s / "base/secrets.env").write_text(
            "MONGO_ROOT_USER=root\nMONGO_ROOT_PASSWORD=a\nMONGO_APP_USER=app\nMONGO_APP_PASSWORD=b\n"
        )
        out = subprocess.run(
            ["kubectl", "kustomize", str(k8s / overlay)], check=True, capture_output=True, text=True
        ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


BINARY = Binary(ROOT / "target/debug/mongo-api")


def check(docs, image=IMAGE):
    return Checker(docs, image, BINARY).run()


def one(docs, kind, name=None):
    return next(d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"].startswith(name)))


def api_container(docs):
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


class RealManifests(unittest.TestCase):
    def test_every_overlay_passes(self):
        for overlay in ("base", "overlays/assignment", "overlays/replicaset"):
            with self.subTest(overlay=overlay):
                self.assertEqual(check(render(overlay)), [])

    def test_the_assignment_overlay_has_the_original_resources(self):
        docs = render("overlays/assignment")
        wanted = {"requests": {"cpu": "200m", "memory": "250Mi"}, "limits": {"cpu": "500m", "memory": "500Mi"}}
        for kind in ("Deployment", "StatefulSet"):
            for c in one(docs, kind)["spec"]["template"]["spec"]["containers"]:
                self.assertEqual(c["resources"], wanted, kind)


class Breaking(unittest.TestCase):
    """Each test breaks one thing in `docs` and expects the matching check to say so."""

    docs = []

    def broken(self, change, expected):
        docs = copy.deepcopy(self.docs)
        change(docs)
        problems = check(docs)
        self.assertTrue(any(expected in p for p in problems), f"expected {expected!r} in {problems}")


class BrokenCopies(Breaking):
    @classmethod
    def setUpClass(cls):
        cls.docs = render("base")

    def test_workload_selector_not_matching_its_pods(self):
        def change(docs):
            one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] = "other"
        self.broken(change, "selectors: Deployment/mongo-api selects")

    def test_the_statefulsets_service_not_headless(self):
        self.broken(lambda d: one(d, "Service", "mongo-headless")["spec"].pop("clusterIP"),
                    "services: StatefulSet/mongo serviceName 'mongo-headless' is not a headless Service")

    def test_the_api_connecting_to_mongodb_by_a_headless_name(self):
        self.broken(lambda d: next(s for s in d if s["kind"] == "Service" and s["metadata"]["name"] == "mongo")["spec"]
                    .update({"clusterIP": "None"}),
                    "services: Deployment/mongo-api connects to MongoDB by the headless Service 'mongo'")

    def test_service_selecting_nothing(self):
        self.broken(lambda d: one(d, "Service", "mongo-api")["spec"]["selector"].update({"tier": "x"}), "selectors: Service/mongo-api")

    def test_pdb_selecting_nothing(self):
        self.broken(lambda d: one(d, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].update({"x": "y"}), "selectors: PodDisruptionBudget")

    def test_network_policy_peer_selecting_nothing(self):
        def change(docs):
            one(docs, "NetworkPolicy", "mongo-")["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] = {"app.kubernetes.io/name": "api"}
        self.broken(change, "allows from")

    def test_secret_key_that_does_not_exist(self):
        def change(docs):
            env = next(e for e in api_container(docs)["env"] if e["name"] == "MONGO_PASSWORD")
            env["valueFrom"]["secretKeyRef"]["key"] = "PASSWORD"
        self.broken(change, "has no key 'PASSWORD'")

    def test_secret_that_does_not_exist(self):
        def change(docs):
            env = next(e for e in api_container(docs)["env"] if e["name"] == "MONGO_USER")
            env["valueFrom"]["secretKeyRef"]["name"] = "mongo-secret"
        self.broken(change, "Secret 'mongo-secret' does not exist")

    def test_config_map_key_that_does_not_exist(self):
        def change(docs):
            env = next(e for e in one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "MONGO_APP_DB")
            env["valueFrom"]["configMapKeyRef"]["key"] = "DB"
        self.broken(change, "has no key 'DB'")

    def test_env_from_config_map_that_does_not_exist(self):
        self.broken(lambda d: api_container(d)["envFrom"][0]["configMapRef"].update({"name": "config"}), "ConfigMap 'config' does not exist")

    def test_hpa_target_that_does_not_exist(self):
        self.broken(lambda d: one(d, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update({"name": "api"}), "hpa:")

    def test_probe_path_the_binary_does_not_serve(self):
        self.broken(lambda d: api_container(d)["readinessProbe"]["httpGet"].update({"path": "/ready"}), "path '/ready' is not served")

    def test_probe_port_not_declared(self):
        self.broken(lambda d: api_container(d)["livenessProbe"]["httpGet"].update({"port": "web"}), "port 'web' is not a declared")

    def test_container_port_not_what_the_binary_listens_on(self):
        self.broken(lambda d: api_container(d)["ports"][0].update({"containerPort": 8080}), "the binary listens on 5000")

    def test_mongo_startup_probe_asking_localhost(self):
        def change(docs):
            mongo = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
            mongo["startupProbe"]["exec"]["command"] = ["mongosh", "--quiet", "--norc", "--eval", "db.adminCommand('ping').ok"]
        self.broken(change, "startup probe asks localhost, not the pod's address")

        def unbound(docs):
            mongo = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
            mongo["env"] = [e for e in mongo["env"] if e["name"] != "POD_IP"]
        self.broken(unbound, "startup probe asks $(POD_IP), not the pod's address")

    def test_memory_limit_below_the_budget_and_connections(self):
        self.broken(lambda d: api_container(d)["resources"]["limits"].update({"memory": "48Mi"}), "memory limit 48.0 MiB < REQUEST_MEMORY_MIB 48")

    def test_request_memory_raised_without_the_limit(self):
        def change(d):
            for e in api_container(d)["env"]:
                if e["name"] == "REQUEST_MEMORY_MIB":
                    e["value"] = "96"
        self.broken(change, "REQUEST_MEMORY_MIB 96")

    def test_a_pod_breaking_the_restricted_standard(self):
        self.broken(
            lambda d: api_container(d)["securityContext"].update({"allowPrivilegeEscalation": True}),
            "does not set allowPrivilegeEscalation: false",
        )

    def test_mongo_on_a_host_path(self):
        def change(d):
            pod = one(d, "StatefulSet")["spec"]["template"]["spec"]
            pod["volumes"].append({"name": "host", "hostPath": {"path": "/data"}})
        self.broken(change, "volume host is ['hostPath']")

    def test_probe_on_the_api_port(self):
        self.broken(lambda d: api_container(d)["livenessProbe"]["httpGet"].update({"port": "http"}), "the management listener is on 8081")

    def test_probe_path_the_management_listener_does_not_serve(self):
        self.broken(lambda d: api_container(d)["livenessProbe"]["httpGet"].update({"path": "/"}), "path '/' is not served by the management listener")

    def test_management_port_not_declared(self):
        self.broken(lambda d: api_container(d)["ports"].pop(1), "listens on 8081 (MANAGEMENT_PORT)")

    def test_management_port_open_to_other_pods(self):
        def change(docs):
            del one(docs, "NetworkPolicy", "api-")["spec"]["ingress"][0]["ports"]
        self.broken(change, "lets other pods reach the management port")

    def test_management_port_allowed_by_name(self):
        def change(docs):
            one(docs, "NetworkPolicy", "api-")["spec"]["ingress"][0]["ports"].append({"port": "management"})
        self.broken(change, "lets other pods reach the management port")

    def test_no_policy_isolating_the_api(self):
        def change(docs):
            docs.remove(one(docs, "NetworkPolicy", "api-"))
        self.broken(change, "no NetworkPolicy isolates")

    def test_policy_port_the_pods_do_not_declare(self):
        def change(docs):
            one(docs, "NetworkPolicy", "api-")["spec"]["ingress"][0]["ports"][0]["port"] = "htp"
        self.broken(change, "which Deployment/mongo-api pods do not declare")

    def test_scrape_annotation_on_the_wrong_port(self):
        def change(d):
            one(d, "Deployment")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = "5000"
        self.broken(change, "prometheus.io/port '5000' is not the management port 8081")

    def test_image_other_than_the_one_built(self):
        self.broken(lambda d: api_container(d).update({"image": "mongo-api:0.1.1"}), "`just build-image` tags")

    def test_unpinned_image(self):
        def change(docs):
            one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["image"] = "mongo"
        self.broken(change, "is not pinned")

    def test_missing_limits(self):
        self.broken(lambda d: api_container(d)["resources"].pop("limits"), "has no cpu limit")

    def test_missing_memory_request(self):
        def change(docs):
            one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"].pop("memory")
        self.broken(change, "has no memory request")

    def test_misspelled_service_type(self):
        self.broken(lambda d: one(d, "Service", "mongo-api")["spec"].update({"type": "NodePrt"}), "service type 'NodePrt'")

    def test_bad_protocol(self):
        self.broken(lambda d: one(d, "Service", "mongo")["spec"]["ports"][0].update({"protocol": "tcp"}), "protocol 'tcp'")

    def test_bad_pull_policy(self):
        self.broken(lambda d: api_container(d).update({"imagePullPolicy": "Sometimes"}), "imagePullPolicy 'Sometimes'")

    def test_bad_hpa_target_type(self):
        def change(docs):
            one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["resource"]["target"]["type"] = "Percent"
        self.broken(change, "HPA target type 'Percent'")

    def test_bad_seccomp_profile(self):
        def change(docs):
            one(docs, "Deployment")["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"] = "Default"
        self.broken(change, "seccompProfile type 'Default'")

    def test_bad_access_mode(self):
        def change(docs):
            one(docs, "StatefulSet")["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] = ["ReadWriteOne"]
        self.broken(change, "accessModes 'ReadWriteOne'")

    def test_service_target_port_missing(self):
        self.broken(lambda d: one(d, "Service", "mongo-api")["spec"]["ports"][0].update({"targetPort": "web"}), "targetPort 'web'")

    def test_node_port_out_of_range(self):
        self.broken(lambda d: one(d, "Service", "mongo-api")["spec"]["ports"][0].update({"nodePort": 3007}), "nodePort 3007")

    def test_grace_period_shorter_than_the_drain(self):
        self.broken(lambda d: one(d, "Deployment")["spec"]["template"]["spec"].update({"terminationGracePeriodSeconds": 10}), "shutdown:")



class BrokenReplicaSet(Breaking):
    """The same for the MongoDBCommunity resource of the replicaset overlay."""

    @classmethod
    def setUpClass(cls):
        cls.docs = render("overlays/replicaset")

    @staticmethod
    def user(docs, name):
        return next(u for u in one(docs, "MongoDBCommunity")["spec"]["users"] if u["name"] == name)

    @staticmethod
    def uri(docs):
        return next(e for e in api_container(docs)["env"] if e["name"] == "MONGODB_URI")["valueFrom"]["secretKeyRef"]

    def test_resource_outside_the_namespace_of_its_secrets(self):
        self.broken(lambda d: one(d, "MongoDBCommunity")["metadata"].pop("namespace"), "Secret 'mongo-credentials' does not exist")

    def test_password_key_that_does_not_exist(self):
        self.broken(lambda d: self.user(d, "app")["passwordSecretRef"].update({"key": "password"}), "has no key 'password'")

    def test_connection_string_secret_of_no_user(self):
        self.broken(lambda d: self.uri(d).update({"name": "mongo-app-admin"}), "Secret 'mongo-app-admin' does not exist")

    def test_connection_string_key_the_operator_does_not_write(self):
        self.broken(lambda d: self.uri(d).update({"key": "connectionString"}), "has no key 'connectionString'")

    def test_api_user_that_cannot_write_its_database(self):
        self.broken(lambda d: self.user(d, "app").update({"roles": [{"name": "readWrite", "db": "app_db"}]}), "cannot write 'flask_db'")

    def test_api_user_with_more_than_it_needs(self):
        self.broken(lambda d: self.user(d, "app")["roles"].append({"name": "root", "db": "admin"}), "more than readWrite")

    def test_api_without_mongo_db_uses_the_users_database(self):
        self.broken(lambda d: one(d, "ConfigMap", "database")["data"].pop("MONGO_DB"), "cannot write 'admin'")

    def test_even_number_of_members(self):
        self.broken(lambda d: one(d, "MongoDBCommunity")["spec"].update({"members": 2}), "mongodb: MongoDBCommunity/mongo has 2 members")

    def test_unpinned_version(self):
        self.broken(lambda d: one(d, "MongoDBCommunity")["spec"].update({"version": "8.0"}), "is not a pinned")

    def test_pdb_that_allows_losing_the_majority(self):
        self.broken(lambda d: one(d, "PodDisruptionBudget", "mongo")["spec"].update({"minAvailable": 1}), "below a majority")

    def test_member_container_without_resources(self):
        def change(docs):
            containers = one(docs, "MongoDBCommunity")["spec"]["statefulSet"]["spec"]["template"]["spec"]["containers"]
            containers[:] = [c for c in containers if c["name"] != "mongodb-agent"]
        self.broken(change, "no resources for its mongodb-agent")

    def test_member_without_a_memory_limit(self):
        def change(docs):
            containers = one(docs, "MongoDBCommunity")["spec"]["statefulSet"]["spec"]["template"]["spec"]["containers"]
            del containers[0]["resources"]["limits"]["memory"]
        self.broken(change, "container mongod has no memory limit")

    def test_network_policy_not_selecting_the_members(self):
        self.broken(lambda d: one(d, "NetworkPolicy", "mongo-")["spec"]["podSelector"].update({"matchLabels": {"app": "mongo"}}), "matches no pods")


if __name__ == "__main__":
    unittest.main()
