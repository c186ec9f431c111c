"""Kubernetes doing what Kubernetes promises, on the test cluster (`cluster.py up` first).

Each test works in a namespace of its own, deleted after it, and fails when the part of
the cluster it names is broken: scheduling and readiness, Services from the host, cluster
DNS, storage, metrics, memory limits, Pod Security admission, NetworkPolicy, and image
pulls that stay on the node.

    KUBECONFIG=target/cluster/kubeconfig python -m unittest test_cluster   (from k8s/cluster, as root)
"""

import ipaddress
import json
import unittest
import uuid

import host
import settings as s
import testing
from testing import RESTRICTED, eventually, http_get, kubectl, pod


class ClusterTest(unittest.TestCase):
    def setUp(self):
        self.ns = f"cluster-test-{uuid.uuid4().hex[:8]}"
        kubectl("create", "namespace", self.ns)
        self.addCleanup(kubectl, "delete", "namespace", self.ns, "--wait=false")

    def apply(self, *objects):
        testing.apply(self.ns, *objects)

    def get(self, *args):
        return testing.get(self.ns, *args)

    def exec(self, pod_name, command, check=True):
        return kubectl("-n", self.ns, "exec", pod_name, "--", "sh", "-c", command, check=check)

    def wait_ready(self, pod_name):
        testing.wait_ready(self.ns, pod_name)

    def web(self, replicas=2):
        """A Deployment of busybox web servers answering their pod's name, and a NodePort
        Service for it."""
        labels = {"app": "web"}
        self.apply(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
             "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                      "template": {"metadata": {"labels": labels}, "spec": pod(
                          "web", "mkdir -p /tmp/www && hostname >/tmp/www/index.html && "
                                 "exec httpd -f -p 8080 -h /tmp/www", RESTRICTED,
                          container={"readinessProbe": {"httpGet": {"path": "/", "port": 8080},
                                                        "periodSeconds": 1}})["spec"]}}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
             "spec": {"type": "NodePort", "selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}},
        )
        kubectl("-n", self.ns, "rollout", "status", "deployment/web", "--timeout=120s")
        return self.get("service", "web")

    def test_a_deployments_pods_are_scheduled_on_the_node_and_ready(self):
        self.web(replicas=2)
        pods = self.get("pods", "-l", "app=web")["items"]
        self.assertEqual(len(pods), 2)
        for p in pods:
            self.assertEqual(p["spec"]["nodeName"], s.NODE_NAME)
            self.assertIn(ipaddress.ip_address(p["status"]["podIP"]), ipaddress.ip_network(s.NODE_POD_CIDR))
            ready = {c["type"]: c["status"] for c in p["status"]["conditions"]}["Ready"]
            self.assertEqual(ready, "True")

    def test_a_services_cluster_ip_and_node_port_reach_its_pods_from_the_host(self):
        service = self.web(replicas=2)
        names = {p["metadata"]["name"] for p in self.get("pods", "-l", "app=web")["items"]}
        cluster_ip = service["spec"]["clusterIP"]
        self.assertIn(ipaddress.ip_address(cluster_ip), ipaddress.ip_network(s.SERVICE_CIDR))
        # kube-proxy spreads connections at random: both pods answer within a few dozen.
        seen = eventually("both pods answering through the ClusterIP", 30, lambda: (
            answers := {http_get(f"http://{cluster_ip}/") for _ in range(40)}) == names and answers)
        self.assertEqual(seen, names)
        node_port = service["spec"]["ports"][0]["nodePort"]
        self.assertIn(http_get(f"http://{s.NODE_IP}:{node_port}/"), names)

    def test_a_pod_resolves_services_by_full_and_short_name_and_no_outside_name(self):
        service = self.web(replicas=1)
        self.apply(pod("client", "exec sleep 3600", RESTRICTED))
        self.wait_ready("client")
        cluster_ip = service["spec"]["clusterIP"]
        full = self.exec("client", f"nslookup web.{self.ns}.svc.{s.CLUSTER_DOMAIN}").stdout
        self.assertIn(cluster_ip, full)
        # The short name through the pod's search path, its own namespace first, as the
        # service finds `mongo`. (busybox's nslookup asks every search domain and fails
        # if any one has no answer, so its status says nothing here.)
        short = self.exec("client", "nslookup web", check=False).stdout
        self.assertIn(f"Name:\tweb.{self.ns}.svc.{s.CLUSTER_DOMAIN}\nAddress: {cluster_ip}", short)
        self.assertIn(self.exec("client", f"wget -qO- http://{cluster_ip}/").stdout.strip(),
                      {p["metadata"]["name"] for p in self.get("pods", "-l", "app=web")["items"]})
        # CoreDNS forwards nothing: an outside name does not resolve.
        outside = self.exec("client", "nslookup example.com", check=False)
        self.assertNotEqual(outside.returncode, 0, outside.stdout)
        self.assertNotIn("Name:\texample.com", outside.stdout)

    def test_a_claim_binds_and_its_data_survives_deleting_the_pod(self):
        token = uuid.uuid4().hex
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}}
        volume = dict(volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                      mounts=[{"name": "data", "mountPath": "/data"}])
        # Written by a non-root user, as MongoDB's image writes its volume.
        self.apply(claim, pod("writer", f"echo {token} >/data/token && exec sleep 3600", RESTRICTED, **volume))
        self.wait_ready("writer")
        self.assertEqual(self.get("pvc", "data")["status"]["phase"], "Bound")
        kubectl("-n", self.ns, "delete", "pod", "writer", "--wait=true")
        self.apply(pod("reader", "cat /data/token && exec sleep 3600", RESTRICTED, **volume))
        self.wait_ready("reader")
        self.assertEqual(kubectl("-n", self.ns, "logs", "reader").stdout.strip(), token)

    def test_kubectl_top_reports_a_busy_pods_cpu(self):
        self.apply(pod("busy", "while :; do :; done", RESTRICTED,
                       container={"resources": {"limits": {"cpu": "500m"}}}))
        self.wait_ready("busy")

        def millicores():
            top = kubectl("-n", self.ns, "top", "pod", "busy", "--no-headers", check=False).stdout.split()
            return len(top) > 1 and top[1].endswith("m") and int(top[1][:-1]) >= 200

        eventually("kubectl top to show the busy pod's CPU at 200m or more", 120, millicores)

    def test_a_container_over_its_memory_limit_is_oom_killed_and_restarted(self):
        # dd's 64 MiB buffer, filled from /dev/zero, against a 24 MiB limit; dd is the
        # container's process, so its death is the container's.
        self.apply(pod("hog", "exec dd if=/dev/zero of=/dev/null bs=64M count=1", RESTRICTED,
                       container={"resources": {"limits": {"memory": "24Mi"}}}))

        def oom_killed():
            status = self.get("pod", "hog")["status"].get("containerStatuses", [{}])[0]
            last = status.get("lastState", {}).get("terminated", {})
            return status.get("restartCount", 0) >= 1 and last.get("reason") == "OOMKilled" and status

        status = eventually("the container OOMKilled and restarted", 90, oom_killed)
        self.assertEqual(status["lastState"]["terminated"]["exitCode"], 137)

    def test_pod_security_restricted_refuses_a_privileged_pod_and_admits_a_compliant_one(self):
        kubectl("label", "namespace", self.ns, "pod-security.kubernetes.io/enforce=restricted")
        refused = kubectl("-n", self.ns, "apply", "-f", "-", check=False, input=json.dumps(
            pod("privileged", "exec sleep 3600", {"privileged": True})))
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn('violates PodSecurity "restricted:latest"', refused.stderr)
        self.assertIn("privileged", refused.stderr)
        self.apply(pod("compliant", "exec sleep 3600", RESTRICTED))
        self.wait_ready("compliant")

    def test_an_image_nobody_loaded_is_an_error_naming_it_and_asked_only_of_the_nodes_registry(self):
        image = f"docker.io/library/nginx:not-loaded-{uuid.uuid4().hex[:8]}"
        self.apply({**pod("missing", "true"), "spec": {"containers": [{"name": "missing", "image": image}]}})

        def pull_error():
            waiting = self.get("pod", "missing")["status"].get("containerStatuses", [{}])[0] \
                .get("state", {}).get("waiting", {})
            return waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff") and waiting.get("message")

        message = eventually("the pull to fail", 60, pull_error)
        self.assertIn(image, message)
        self.assertIn("not found", message)
        tag = image.rsplit(":", 1)[1]
        log = (s.LOGS / "registry.log").read_text()
        self.assertIn(f"/v2/library/nginx/manifests/{tag}", log)

    def test_network_policy_admits_only_the_pods_and_port_it_names(self):
        other_ns = f"{self.ns}-other"
        kubectl("create", "namespace", other_ns)
        self.addCleanup(kubectl, "delete", "namespace", other_ns, "--wait=false")
        server = pod("server", "mkdir -p /tmp/www && hostname >/tmp/www/index.html && "
                               "httpd -p 8081 -h /tmp/www && exec httpd -f -p 8080 -h /tmp/www", RESTRICTED,
                     labels={"app": "server"})
        client = pod("client", "exec sleep 3600", RESTRICTED, labels={"role": "client"})
        self.apply(server, client, pod("stranger", "exec sleep 3600", RESTRICTED))
        kubectl("-n", other_ns, "apply", "-f", "-", input=json.dumps(client))
        for name in ("server", "client", "stranger"):
            self.wait_ready(name)
        kubectl("-n", other_ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s")
        ip = self.get("pod", "server")["status"]["podIP"]

        def reaches(namespace, name, port):
            # (Debian's static busybox wget crashes on -T; `timeout` bounds it instead.)
            return kubectl("-n", namespace, "exec", name, "--", "timeout", "3", "wget", "-qO-",
                           f"http://{ip}:{port}/", check=False).returncode == 0

        paths = [(self.ns, "client", 8080), (self.ns, "client", 8081), (self.ns, "stranger", 8080),
                 (other_ns, "client", 8080)]
        # Open before the policy, so that what it closes is its doing.
        self.assertEqual([reaches(*p) for p in paths], [True] * 4)
        self.apply({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "server"},
                    "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                             "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                          "ports": [{"port": 8080, "protocol": "TCP"}]}]}})
        eventually("the policy enforced", 30, lambda: [reaches(*p) for p in paths] == [True, False, False, False])

    def test_the_node_has_no_route_out(self):
        routes = host.in_node("ip", "-j", "route", "show", capture_output=True, text=True).stdout
        self.assertNotIn("default", [r["dst"] for r in json.loads(routes)])
        resolv = host.in_node("cat", "/etc/resolv.conf", capture_output=True, text=True).stdout
        self.assertNotIn("nameserver", resolv)


if __name__ == "__main__":
    unittest.main()
