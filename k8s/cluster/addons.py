"""The cluster's add-ons, from their upstream manifests at the pinned versions: CoreDNS as
kubeadm installs it, metrics-server and the local-path provisioner from their modules'
own manifests, each adjusted here only where this cluster differs (image names, the node's
paths, no DNS forwarding, the StorageClass named as Minikube's).
"""

import json
import shutil

import build
import configs
import settings as s

# How long CoreDNS answers from its cache, a name that no longer exists included (kubeadm's,
# and so Minikube's, value).
DNS_CACHE_SECONDS = 30

# CoreDNS as kubeadm configures it, less `forward . /etc/resolv.conf` (and `loop`, which
# only detects forwarding loops): names outside the cluster are answered SERVFAIL here,
# never sent anywhere.
COREFILE = f"""\
.:53 {{
    errors
    health {{
       lameduck 5s
    }}
    ready
    kubernetes {s.CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl {DNS_CACHE_SECONDS}
    }}
    prometheus :9153
    cache {DNS_CACHE_SECONDS}
    reload
    loadbalance
}}
"""

HELPER_POD = f"""\
apiVersion: v1
kind: Pod
metadata:
  name: helper-pod
spec:
  priorityClassName: system-node-critical
  tolerations:
    - key: node.kubernetes.io/disk-pressure
      operator: Exists
      effect: NoSchedule
  containers:
  - name: helper-pod
    image: {s.BUSYBOX_IMAGE}
    imagePullPolicy: IfNotPresent
"""


def kustomization(directory, value):
    (directory / "kustomization.yaml").write_text(json.dumps(value, indent=2) + "\n")


def metrics_server(directory):
    upstream = build.module_dir(s.METRICS_SERVER_MODULE.replace("/cmd/metrics-server", ""))
    shutil.copytree(f"{upstream}/manifests/base", directory / "upstream")
    name, tag = s.METRICS_SERVER_IMAGE.rsplit(":", 1)
    kustomization(directory, {
        "resources": ["upstream"],
        "images": [{"name": "gcr.io/k8s-staging-metrics-server/metrics-server", "newName": name,
                    "newTag": tag}],
        # The kubelet's serving certificate is self-signed, as on Minikube, whose addon
        # passes the same flag.
        "patches": [{"target": {"kind": "Deployment", "name": "metrics-server"}, "patch": json.dumps([
            {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--kubelet-insecure-tls"},
        ])}],
    })


def local_path(directory):
    upstream = build.module_dir(s.LOCAL_PATH_MODULE)
    (directory / "upstream").mkdir()
    shutil.copy(f"{upstream}/deploy/local-path-storage.yaml", directory / "upstream")
    shutil.copy(f"{upstream}/deploy/kustomization.yaml", directory / "upstream")
    name, tag = s.LOCAL_PATH_IMAGE.rsplit(":", 1)
    config = {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [str(configs.VOLUMES)]}]}
    kustomization(directory, {
        "resources": ["upstream"],
        "images": [{"name": "rancher/local-path-provisioner", "newName": name, "newTag": tag}],
        "patches": [
            {"target": {"kind": "ConfigMap", "name": "local-path-config"}, "patch": json.dumps([
                {"op": "replace", "path": "/data/config.json", "value": json.dumps(config)},
                {"op": "replace", "path": "/data/helperPod.yaml", "value": HELPER_POD},
            ])},
            # Minikube's default class is `standard`; the manifests name none, so they get
            # whichever is the default.
            {"target": {"kind": "StorageClass", "name": "local-path"}, "patch": json.dumps([
                {"op": "replace", "path": "/metadata/name", "value": "standard"},
                {"op": "add", "path": "/metadata/annotations",
                 "value": {"storageclass.kubernetes.io/is-default-class": "true"}},
            ])},
        ],
    })


def render(kubectl):
    """Each add-on's manifests, rendered with kustomize: [(name, YAML)]."""
    rendered = []
    root = s.STATE / "addons"
    for name, make in (("metrics-server", metrics_server), ("local-path-provisioner", local_path)):
        directory = root / name
        directory.mkdir(parents=True)
        make(directory)
        rendered.append((name, kubectl("kustomize", str(directory), capture_output=True, text=True).stdout))
    return rendered


KUBE_ROUTER_USER = "kube-router"


def kube_router_rbac():
    """kube-router's ClusterRole from its module's manifest, bound to the user of its
    client certificate (it runs on the node, as kube-proxy does, not as a pod)."""
    upstream = build.module_dir(s.KUBE_ROUTER_MODULE.replace("/cmd/kube-router", ""))
    with open(f"{upstream}/daemonset/generic-kuberouter.yaml") as f:
        role = next(doc for doc in f.read().split("\n---") if "\nkind: ClusterRole\n" in f"\n{doc.strip()}\n")
    binding = json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "kube-router"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kube-router"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBE_ROUTER_USER}],
    })
    return f"{role}\n---\n{binding}\n"
