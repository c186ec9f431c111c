#!/usr/bin/env bash
# The steps of `just deploy`, `just undeploy` and `just url`, against Minikube only.
#
#   deploy.sh cluster OVERLAY      start Minikube (pinned Kubernetes, Calico, enough CPUs for
#                                  OVERLAY) or check the running one; enable metrics-server
#   deploy.sh node-arch            the node's architecture (amd64 or arm64)
#   deploy.sh load IMAGE           load an image built on the host into the node
#   deploy.sh apply OVERLAY IMAGE  apply OVERLAY with the API's image set to IMAGE; wait
#                                  (overlays/replicaset: install MongoDB's operator first,
#                                  with Helm, and wait for the replica set to be Running)
#   deploy.sh undeploy             delete the namespace (MongoDB's volumes included) and,
#                                  if it was installed, the operator and its CRDs
#   deploy.sh url                  the service's URL (the NodePort)
#
# Every kubectl call names the `minikube` context and every minikube call the `minikube`
# profile, so whatever the current kubectl context is, nothing else is touched.
# Needs minikube and kubectl (and the Docker that built the image); the replicaset
# overlay also needs helm.
set -euo pipefail

PROFILE=${MINIKUBE_PROFILE:-minikube}
CONTEXT=$PROFILE
NAMESPACE=mongo-api
# The version Minikube is started with: the one the manifests are validated against.
KUBERNETES_VERSION=v1.32.0
# The oldest the manifests work on: `preStop: sleep` is on by default from 1.30 (beta),
# refused by older API servers, and silently dropped by 1.29.
MIN_MINOR=30
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# MongoDB Controllers for Kubernetes (the operator of the replicaset overlay): its Helm
# chart, pinned.
OPERATOR_CHART=mongodb/mongodb-kubernetes
OPERATOR_VERSION=1.11.1
OPERATOR_REPO=https://mongodb.github.io/helm-charts
OPERATOR_RELEASE=mongodb-kubernetes

kubectl() { command kubectl --context "$CONTEXT" "$@"; }
minikube() { command minikube -p "$PROFILE" "$@"; }
helm() { command helm --kube-context "$CONTEXT" "$@"; }
fail() { echo "deploy: $*" >&2; exit 1; }

# CPUs and memory (MiB) a Minikube node needs for an overlay at its HPA's maximum, with
# the control plane, Calico and metrics-server (about 1.1 CPU of requests).
needs() {
    case "$1" in
        overlays/assignment) echo "4 4096" ;;  # 5 x 200m + 200m MongoDB + 1.1 > 2 CPUs
        # 3 x (250m + 50m) members + 500m operator + 5 x 100m + 1.1; 3 x 640 MiB members
        overlays/replicaset) echo "4 6144" ;;
        *) echo "2 3072" ;;                     # 5 x 100m + 250m MongoDB + 1.1 < 2 CPUs
    esac
}

cluster() {
    local overlay=$1 cpus memory
    read -r cpus memory <<<"$(needs "$overlay")"
    if ! minikube status >/dev/null 2>&1; then
        echo "starting Minikube (Kubernetes $KUBERNETES_VERSION, Calico, $cpus CPUs, $memory MiB)"
        # Calico enforces the NetworkPolicy that keeps MongoDB private to the service.
        minikube start --kubernetes-version="$KUBERNETES_VERSION" --cni=calico \
            --cpus="$cpus" --memory="$memory"
    fi
    check_version
    check_cpus "$overlay" "$cpus"
    check_calico
    minikube addons enable metrics-server >/dev/null
}

check_version() {
    local minor
    minor=$(kubectl get --raw /version | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p')
    [ -n "$minor" ] || fail "cannot read the Kubernetes version of context $CONTEXT"
    if [ "$minor" -lt "$MIN_MINOR" ]; then
        fail "Minikube runs Kubernetes 1.$minor; the manifests need 1.$MIN_MINOR or newer (preStop sleep). Run: minikube -p $PROFILE delete && just deploy"
    fi
}

check_cpus() {
    local overlay=$1 wanted=$2 have
    have=$(kubectl get nodes -o jsonpath='{.items[0].status.capacity.cpu}')
    if [ "${have:-0}" -lt "$wanted" ]; then
        fail "the running Minikube has $have CPUs; $overlay needs $wanted. Run: minikube -p $PROFILE delete && just deploy $overlay"
    fi
}

check_calico() {
    if ! kubectl -n kube-system get daemonset calico-node >/dev/null 2>&1; then
        if [ "${ALLOW_NO_CALICO:-}" = 1 ]; then
            echo "deploy: warning: no Calico; the NetworkPolicy keeping MongoDB private is not enforced" >&2
        else
            fail "the running Minikube has no Calico, so the NetworkPolicy keeping MongoDB private would not be enforced. Run: minikube -p $PROFILE delete && just deploy (or ALLOW_NO_CALICO=1 to go on without it)"
        fi
    fi
}

node_arch() {
    kubectl get nodes -o jsonpath='{.items[0].status.nodeInfo.architecture}'
}

load() {
    minikube image load "$1"
}

apply() {
    local overlay=$1 image=$2 staging
    # A kustomization of our own, outside k8s/, that sets the image this build was tagged
    # with: the committed manifests keep their pinned tag.
    staging="$ROOT/target/deploy/$overlay"
    rm -rf "$staging"
    mkdir -p "$staging"
    cat >"$staging/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(echo "target/deploy/$overlay" | sed 's|[^/]*|..|g')/k8s/$overlay
images:
  - name: mongo-api
    newName: ${image%%:*}
    newTag: ${image##*:}
EOF
    if [ "$overlay" = overlays/replicaset ]; then
        operator
        kubectl apply -k "$staging"
        # The operator makes the members one by one, then the users; the API's Secret
        # (its connection string) exists only then.
        echo "waiting for the replica set (three members, one after another: minutes)"
        kubectl -n "$NAMESPACE" wait mongodbcommunity/mongo --for=jsonpath='{.status.phase}'=Running --timeout=900s
    else
        kubectl apply -k "$staging"
        kubectl -n "$NAMESPACE" rollout status statefulset/mongo --timeout=300s
    fi
    kubectl -n "$NAMESPACE" rollout status deployment/mongo-api --timeout=180s
    echo "service: $(url)"
}

# Installs (or upgrades to) the pinned operator in the namespace, watching only it.
operator() {
    type -P helm >/dev/null || fail "the replicaset overlay installs MongoDB's operator with Helm: install helm 3 (https://helm.sh/docs/intro/install/)"
    helm repo add mongodb "$OPERATOR_REPO" --force-update >/dev/null
    echo "installing MongoDB Controllers for Kubernetes $OPERATOR_VERSION (Helm chart $OPERATOR_CHART)"
    helm upgrade --install "$OPERATOR_RELEASE" "$OPERATOR_CHART" --version "$OPERATOR_VERSION" \
        --namespace "$NAMESPACE" --create-namespace --wait --timeout 5m
}

undeploy() {
    # The operator goes first, after the resource it reconciles, so nothing recreates
    # what the namespace's deletion removes.
    if kubectl get crd mongodbcommunity.mongodbcommunity.mongodb.com >/dev/null 2>&1; then
        kubectl -n "$NAMESPACE" delete mongodbcommunity --all --ignore-not-found --wait
    fi
    if type -P helm >/dev/null && helm status "$OPERATOR_RELEASE" -n "$NAMESPACE" >/dev/null 2>&1; then
        helm uninstall "$OPERATOR_RELEASE" -n "$NAMESPACE" --wait
        # Helm leaves a chart's CRDs behind on purpose; these are the operator's alone.
        kubectl get crd -o name | grep '\.mongodb\.com$' | while read -r crd; do kubectl delete "$crd"; done
    fi
    kubectl delete namespace "$NAMESPACE" --ignore-not-found
}

url() {
    minikube service -n "$NAMESPACE" mongo-api --url
}

# Overlays by their short names too: `just deploy replicaset`.
overlay_path() {
    case "$1" in
        assignment | replicaset) echo "overlays/$1" ;;
        *) echo "$1" ;;
    esac
}

command=${1:-}
shift || true
case "$command" in
    cluster) cluster "$(overlay_path "${1:-base}")" ;;
    node-arch) node_arch ;;
    load) load "$1" ;;
    apply) apply "$(overlay_path "$1")" "$2" ;;
    undeploy) undeploy ;;
    url) url ;;
    *) fail "usage: deploy.sh cluster|node-arch|load|apply|undeploy|url" ;;
esac
