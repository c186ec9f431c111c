"""What the test cluster is: its versions, names, addresses and paths, in one place."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# The Kubernetes `just deploy` asks Minikube for (k8s/deploy.sh); kube/go.mod builds the
# same one, and test_settings.py fails when the three disagree.
KUBERNETES_VERSION = "v1.32.0"
# What Kubernetes 1.32 itself ships or tests with: kubeadm's CoreDNS and pause, the etcd in
# its go.mod (kube/go.mod builds that one into the node binary).
ETCD_VERSION = "3.5.16"
COREDNS_MODULE = "github.com/coredns/coredns@v1.11.3"
PAUSE_VERSION = "3.10"
# The add-ons Minikube enables for `just deploy`: metrics-server, and a provisioner behind
# a default StorageClass `standard` (Minikube's is its own hostpath provisioner, which is
# not published as a module; kind's is this one, which behaves alike: a 0777 directory
# on the node per claim).
METRICS_SERVER_MODULE = "sigs.k8s.io/metrics-server/cmd/metrics-server@v0.8.0"
LOCAL_PATH_MODULE = "github.com/rancher/local-path-provisioner@v0.0.30"
# NetworkPolicy: kube-router's firewall alone (no routing, no service proxy), as k3s runs
# it; docs/kubernetes.md says why this one (Calico cannot be built here; kube-network-
# policies needs nftables' queue, which this kernel lacks). GHSA-phqm-jgc3-qf8g, reported
# for this version, is in the service proxy, which does not run.
KUBE_ROUTER_MODULE = "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@v2.1.0"
# Helm 3, which `just deploy replicaset` installs MongoDB's operator with and `just undeploy`
# uninstalls it with: the tests use it on the node as users do on theirs.
HELM_MODULE = "helm.sh/helm/v3/cmd/helm@v3.21.4"

NAME = "mongo-api-test"
# The kubectl context the kubeconfig names, and the node's name.
CONTEXT = NAME
NODE_NAME = NAME

# Minikube's docker driver puts its node at 192.168.49.2 and uses these ranges too.
HOST_IP = "192.168.49.1"
NODE_IP = "192.168.49.2"
LINK_PREFIX = 24
POD_CIDR = "10.244.0.0/16"
NODE_POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/12"
DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
API_PORT = 6443
# The node's image registry: containerd pulls every image name from it, and the host
# pushes to it at NODE_IP:REGISTRY_PORT.
REGISTRY_PORT = 5000

# Images are named under a registry that cannot exist, so that nothing built here is ever
# taken for the published image of the same name.
IMAGE_REGISTRY = "mongo-api-test.local"

# Built binaries and images, kept between runs; and the kubeconfig users point kubectl at.
CACHE = ROOT / "target" / "cluster"
KUBECONFIG = CACHE / "kubeconfig"
LOGS = CACHE / "logs"

# The node's state: everything a running cluster writes, removed by `down`.
STATE = Path(os.environ.get("MONGO_API_CLUSTER_STATE", "/var/lib/mongo-api-test"))
# The cgroup (in every v1 hierarchy) that holds the node's daemons and its pods.
CGROUP = NAME
CGROUP_ROOT_MEMORY = Path("/sys/fs/cgroup/memory")
# Network namespace, and the host's end of the veth pair into it (named for the cluster).
NETNS = NAME
HOST_LINK = NAME


def image(name, tag):
    return f"{IMAGE_REGISTRY}/{name}:{tag}"


PAUSE_IMAGE = image("pause", PAUSE_VERSION)
COREDNS_IMAGE_REPOSITORY = IMAGE_REGISTRY
COREDNS_TAG = COREDNS_MODULE.split("@")[1]
METRICS_SERVER_IMAGE = image("metrics-server", METRICS_SERVER_MODULE.split("@")[1])
LOCAL_PATH_IMAGE = image("local-path-provisioner", LOCAL_PATH_MODULE.split("@")[1])
# Debian's busybox: the provisioner's helper pod, and the tests' shell, web server and
# DNS client.
BUSYBOX_IMAGE = image("busybox", "debian")
