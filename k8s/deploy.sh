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
#                                  if it was installed, the operator's release and its
#                                  webhook; never its CRDs (other namespaces' MongoDBs)
#   deploy.sh url                  the service's URL (the NodePort), at once, on every driver
#   deploy.sh require TOOL...      exit 2 with one line for each tool missing (docker-engine:
#                                  Docker's engine not answering), before anything runs
#
# And, for a cluster that is not Minikube, only when named:
#   deploy.sh remote CONTEXT OVERLAY IMAGE@DIGEST
#                                  check what can be checked of the cluster of kubectl
#                                  context CONTEXT (a default StorageClass, the NodePort
#                                  free, the pull secret there, a metrics API), then apply
#                                  OVERLAY with the API's image from a registry, by digest;
#                                  nothing Minikube-only runs. STORAGE_CLASS, NODE_PORT
#                                  (a number, or auto) and PULL_SECRET adjust it
#   deploy.sh undeploy [CONTEXT]   as above, in that context (default: minikube)
#
# Every kubectl and helm call names its context (`minikube`, or the one given) and every
# minikube call the `minikube` profile, so whatever the current kubectl context is,
# nothing else is touched.
# Needs minikube and kubectl (and the Docker that built the image); the replicaset
# overlay also needs helm.
#
# The NodePort is reached on every driver without a tunnel: a new cluster is started with
# `--ports=127.0.0.1:30007:30007`, which the docker and podman drivers publish on the
# host (other drivers ignore it), so the URL is http://127.0.0.1:30007 there and
# http://$(minikube ip):30007 elsewhere. (`minikube service --url` would start a tunnel on
# a random port and block wherever the docker driver needs a port-forward: macOS,
# Windows/WSL2, Docker Desktop for Linux, rootless Docker.)
set -euo pipefail

PROFILE=${MINIKUBE_PROFILE:-minikube}
CONTEXT=$PROFILE
NAMESPACE=mongo-api
# The version Minikube is started with: the one the manifests are validated against, and
# the one the test cluster builds and runs (k8s/cluster/settings.py; its tests check both).
KUBERNETES_VERSION=v1.32.0
# The oldest the manifests work on: `preStop: sleep` is on by default from 1.30 (beta),
# refused by older API servers, and silently dropped by 1.29.
MIN_MINOR=30
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# MongoDB Controllers for Kubernetes (the operator of the replicaset overlay): its Helm
# chart, pinned to the newest version its published chart index was seen to list
# (mongodb/helm-charts, gh-pages index.yaml, July 2026); checked before installing.
OPERATOR_CHART=mongodb/mongodb-kubernetes
OPERATOR_VERSION=1.9.1
OPERATOR_REPO=https://mongodb.github.io/helm-charts
OPERATOR_RELEASE=mongodb-kubernetes
# The webhook the operator registers when it starts (not part of its Helm release).
OPERATOR_WEBHOOK=mdbpolicy.mongodb.com
# The Service's NodePort (k8s/base/api-service.yaml), and where the docker and podman
# drivers publish it on the host.
# On another cluster the user may ask for another (NODE_PORT=N just deploy-to ..., or
# NODE_PORT=auto for the cluster's choice): read before the manifests' value is set.
WANTED_NODE_PORT=${NODE_PORT:-}
NODE_PORT=30007
PUBLISHED=127.0.0.1:$NODE_PORT
# Which overlay is deployed, on the namespace: base and replicaset both make a
# StatefulSet `mongo` that the other cannot take over.
OVERLAY_ANNOTATION=mongo-api/overlay

# What each outside tool does for the recipes and where to get it, for `require`.
tool_use() {
    case "$1" in
        minikube) echo "runs the local cluster: https://minikube.sigs.k8s.io/docs/start/ (Linux: its binary, .deb or .rpm; macOS: brew install minikube; Windows: install the Linux one inside WSL2)" ;;
        kubectl) echo "talks to the cluster: https://kubernetes.io/docs/tasks/tools/ (Linux: its binary or your distribution's package; macOS: brew install kubectl; Windows: install the Linux one inside WSL2)" ;;
        docker) echo "builds and pushes the image: https://docs.docker.com/get-docker/ (Linux: Docker Engine, e.g. apt install docker.io; macOS: Docker Desktop or colima; Windows: Docker Desktop with its WSL2 backend)" ;;
        helm) echo "installs MongoDB's operator for the replicaset overlay: https://helm.sh/docs/intro/install/ (Linux: its binary or script; macOS: brew install helm; Windows: install the Linux one inside WSL2)" ;;
    esac
}

# One line for each tool missing (and for a Docker client whose engine does not answer),
# then exit 2, before anything is started, built or written. `helm-for-OVERLAY` asks for
# helm only when OVERLAY is the replica set's.
require() {
    local missing=0 tool
    for tool in "$@"; do
        case "$tool" in
            helm-for-replicaset | helm-for-overlays/replicaset) tool=helm ;;
            helm-for-*) continue ;;
        esac
        if [ "$tool" = docker-engine ]; then
            if type -P docker >/dev/null && ! command docker info >/dev/null 2>&1; then
                echo "the Docker engine does not answer (docker info failed): start it (Linux: sudo systemctl start docker; macOS and Windows: start Docker Desktop), or point DOCKER_HOST at one" >&2
                missing=1
            fi
        elif ! type -P "$tool" >/dev/null; then
            echo "$tool is not installed; it $(tool_use "$tool")" >&2
            missing=1
        fi
    done
    [ "$missing" = 0 ] || exit 2
}

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

# `minikube status` exits 0 when the cluster runs and 85 when the profile does not exist;
# anything else is a profile that exists but is stopped (or half-started).
profile_state() {
    local code=0
    minikube status >/dev/null 2>&1 || code=$?
    case "$code" in
        0) echo running ;;
        85) echo missing ;;
        *) echo stopped ;;
    esac
}

cluster() {
    local overlay=$1 cpus memory
    read -r cpus memory <<<"$(needs "$overlay")"
    case "$(profile_state)" in
        missing)
            echo "starting Minikube (Kubernetes $KUBERNETES_VERSION, Calico, $cpus CPUs, $memory MiB)"
            # Calico enforces the NetworkPolicy that keeps MongoDB private to the service.
            minikube start --kubernetes-version="$KUBERNETES_VERSION" --cni=calico \
                --cpus="$cpus" --memory="$memory" --ports="$PUBLISHED:$NODE_PORT"
            ;;
        stopped)
            # As it was made: minikube refuses to downgrade a profile made with a newer
            # Kubernetes, and ignores CPUs and memory for an existing one. It is then
            # checked as a running one is.
            echo "starting the existing Minikube profile $PROFILE as it was created"
            minikube start
            ;;
    esac
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

# The driver the profile was made with (docker, podman, kvm2, hyperkit, ...).
driver() {
    minikube profile list -o json 2>/dev/null | tr -d ' \n' |
        sed -n 's/.*"Name":"'"$PROFILE"'"[^}]*"Driver":"\([a-z0-9]*\)".*/\1/p'
}

# CPUs the node may use. The docker and podman drivers give `--cpus` as a CFS quota on
# the node's container, while the node reports the host's cores as its capacity.
node_cpus() {
    local nano=0 driver
    driver=$(driver)
    case "$driver" in
        docker | podman)
            nano=$(command "$driver" inspect -f '{{.HostConfig.NanoCpus}}' "$PROFILE" 2>/dev/null || echo 0)
            ;;
    esac
    if [ "${nano:-0}" -gt 0 ]; then
        echo $((nano / 1000000000))
    else
        kubectl get nodes -o jsonpath='{.items[0].status.capacity.cpu}'
    fi
}

check_cpus() {
    local overlay=$1 wanted=$2 have
    have=$(node_cpus)
    if [ "${have:-0}" -lt "$wanted" ]; then
        fail "the running Minikube has $have CPUs; $overlay needs $wanted. Run: minikube -p $PROFILE delete && just deploy $overlay"
    fi
}

check_calico() {
    if ! kubectl -n kube-system get daemonset calico-node >/dev/null 2>&1; then
        if [ "${ALLOW_NO_CALICO:-}" = 1 ]; then
            echo "deploy: warning: no Calico; the NetworkPolicy keeping MongoDB private is not enforced" >&2
            return
        fi
        fail "the running Minikube has no Calico, so the NetworkPolicy keeping MongoDB private would not be enforced. Run: minikube -p $PROFILE delete && just deploy (or ALLOW_NO_CALICO=1 to go on without it)"
    fi
    # minikube waits for the API server and the system pods, not for Calico: its images
    # may still be pulling, which would eat the rollouts' time below.
    kubectl -n kube-system rollout status daemonset/calico-node --timeout=300s >/dev/null
}

node_arch() {
    kubectl get nodes -o jsonpath='{.items[0].status.nodeInfo.architecture}'
}

load() {
    minikube image load "$1"
}

# A kustomization of our own, outside k8s/, that sets the API's image (NAME:TAG or
# NAME@sha256:DIGEST): the committed manifests keep their pinned tag. Prints its directory.
stage() {
    local overlay=$1 image=$2 staging reference
    staging="$ROOT/target/deploy/$CONTEXT/$overlay"
    rm -rf "$staging"
    mkdir -p "$staging"
    case "$image" in
        *@sha256:*) reference="    newName: ${image%@*}
    digest: ${image#*@}" ;;
        *) reference="    newName: ${image%:*}
    newTag: ${image##*:}" ;;
    esac
    cat >"$staging/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(echo "target/deploy/$CONTEXT/$overlay" | sed 's|[^/]*|..|g')/k8s/$overlay
images:
  - name: mongo-api
$reference
EOF
    remote_patches >>"$staging/kustomization.yaml"
    echo "$staging"
}

# What another cluster's deployment may ask of the manifests (nothing, for Minikube): the
# NodePort (NODE_PORT=N, or auto for the cluster's choice), MongoDB's StorageClass
# (STORAGE_CLASS), a pull secret for a private registry (PULL_SECRET).
remote_patches() {
    local patches=()
    case "${WANTED_NODE_PORT:-$NODE_PORT}" in
        "$NODE_PORT") ;;
        auto) patches+=("$(patch Service mongo-api '{"op": "remove", "path": "/spec/ports/0/nodePort"}')") ;;
        *) patches+=("$(patch Service mongo-api '{"op": "replace", "path": "/spec/ports/0/nodePort", "value": '"$WANTED_NODE_PORT"'}')") ;;
    esac
    if [ -n "${STORAGE_CLASS:-}" ]; then
        patches+=("$(patch StatefulSet mongo '{"op": "add", "path": "/spec/volumeClaimTemplates/0/spec/storageClassName", "value": "'"$STORAGE_CLASS"'"}')")
    fi
    if [ -n "${PULL_SECRET:-}" ]; then
        patches+=("$(patch Deployment mongo-api '{"op": "add", "path": "/spec/template/spec/imagePullSecrets", "value": [{"name": "'"$PULL_SECRET"'"}]}')")
    fi
    [ ${#patches[@]} -eq 0 ] || printf 'patches:\n%s\n' "$(printf '%s\n' "${patches[@]}")"
}

# One JSON 6902 patch of the object KIND NAME, as an entry of a kustomization's patches.
patch() {
    printf "  - target: {kind: %s, name: %s}\n    patch: '[%s]'" "$1" "$2" "$3"
}

apply() {
    local overlay=$1 image=$2
    roll_out "$overlay" "$(stage "$overlay" "$image")"
    echo "service: $(url)"
}

# Another cluster: what can be checked is checked, nothing Minikube-only runs, and the
# image comes from a registry by digest, so that what runs is exactly what was pushed.
remote() {
    local overlay=$1 image=$2
    [ "$CONTEXT" != minikube ] || fail "the minikube context is deployed with just deploy; remote is for other clusters"
    case "$image" in
        *@sha256:*) ;;
        *) fail "give the image by digest (REGISTRY/mongo-api@sha256:..., as just push prints it), not $image" ;;
    esac
    command kubectl config get-contexts "$CONTEXT" >/dev/null 2>&1 || fail "no kubectl context $CONTEXT (kubectl config get-contexts lists them)"
    check_version
    check_secrets
    check_storage_class "$overlay"
    check_node_port
    check_pull_secret
    check_metrics_api
    echo "deploy: cannot check from here whether $CONTEXT's network plugin enforces NetworkPolicy; without it MongoDB is open to every pod of the cluster" >&2
    roll_out "$overlay" "$(stage "$overlay" "$image")"
    echo "service: NodePort $(kubectl -n "$NAMESPACE" get service mongo-api -o jsonpath='{.spec.ports[0].nodePort}') on the nodes of $CONTEXT"
}

# MongoDB's claim names no class, so the cluster's default takes it: without one it stays
# Pending and the rollout times out. STORAGE_CLASS names one instead. (The operator's
# replica set claims its volumes itself.)
check_storage_class() {
    [ "$1" != overlays/replicaset ] || return 0
    if [ -n "${STORAGE_CLASS:-}" ]; then
        kubectl get storageclass "$STORAGE_CLASS" >/dev/null 2>&1 ||
            fail "$CONTEXT has no StorageClass $STORAGE_CLASS (kubectl --context $CONTEXT get storageclass lists them)"
        return
    fi
    kubectl get storageclass -o jsonpath='{.items[*].metadata.annotations.storageclass\.kubernetes\.io/is-default-class}' |
        grep -qw true ||
        fail "$CONTEXT has no default StorageClass, so MongoDB's volume claim would stay Pending: name one with STORAGE_CLASS=NAME (kubectl --context $CONTEXT get storageclass lists them)"
}

# A NodePort is the whole cluster's: another Service holding it would fail the apply
# halfway. NODE_PORT=N asks for another, NODE_PORT=auto lets the cluster choose.
check_node_port() {
    local port=${WANTED_NODE_PORT:-$NODE_PORT} holder
    [ "$port" != auto ] || return 0
    holder=$(kubectl get services -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name} {.spec.ports[*].nodePort}{"\n"}{end}' |
        awk -v port="$port" -v ours="$NAMESPACE/mongo-api" '$1 != ours { for (i = 2; i <= NF; i++) if ($i == port) { print $1; exit } }')
    [ -z "$holder" ] ||
        fail "NodePort $port is taken by the Service $holder on $CONTEXT: set NODE_PORT to a free one (30000-32767), or NODE_PORT=auto to let the cluster choose"
}

# A first push to most registries is private: PULL_SECRET names the namespace's Secret
# (of type kubernetes.io/dockerconfigjson) that the Deployment pulls with.
check_pull_secret() {
    [ -n "${PULL_SECRET:-}" ] || return 0
    kubectl -n "$NAMESPACE" get secret "$PULL_SECRET" >/dev/null 2>&1 ||
        fail "no Secret $PULL_SECRET in namespace $NAMESPACE on $CONTEXT; make it first: kubectl --context $CONTEXT create namespace $NAMESPACE; kubectl --context $CONTEXT -n $NAMESPACE create secret docker-registry $PULL_SECRET --docker-server=REGISTRY --docker-username=USER --docker-password=TOKEN"
}

# Without a metrics API the HPA shows <unknown> and never scales: said, not refused.
check_metrics_api() {
    local available
    available=$(kubectl get apiservice v1beta1.metrics.k8s.io -o jsonpath='{.status.conditions[?(@.type=="Available")].status}' 2>/dev/null || true)
    [ "$available" = True ] ||
        echo "deploy: warning: $CONTEXT serves no metrics API (metrics.k8s.io), so the HPA will show <unknown> and never scale; install metrics-server" >&2
}

# MongoDB's users are made once, when its volume is first initialised. secrets.env
# holding other passwords than the Secret that volume was set up with (a fresh clone's
# `just secrets`) would lock the service out, silently: stop instead.
check_secrets_match() {
    kubectl -n "$NAMESPACE" get pvc data-mongo-0 >/dev/null 2>&1 || return 0
    local key value current
    while IFS='=' read -r key value; do
        case "$key" in '' | '#'*) continue ;; esac
        current=$(kubectl -n "$NAMESPACE" get secret mongo-credentials -o "jsonpath={.data.$key}" 2>/dev/null | base64 -d)
        if [ -n "$current" ] && [ "$current" != "$value" ]; then
            fail "k8s/base/secrets.env's $key is not the one MongoDB's surviving volume was set up with, which MongoDB would refuse: put that one back (kubectl --context $CONTEXT -n $NAMESPACE get secret mongo-credentials -o jsonpath={.data.$key} | base64 -d), or change it in MongoDB first (db.changeUserPassword) and then in secrets.env; just undeploy starts over without the data"
        fi
    done <"$ROOT/k8s/base/secrets.env"
}

# The passwords must be real: the example file's placeholders would become MongoDB's.
check_secrets() {
    local file="$ROOT/k8s/base/secrets.env"
    [ -f "$file" ] || fail "no $file: run just secrets (random passwords) or write it from secrets.env.example"
    if grep -q "=replace-me" "$file"; then
        fail "$file still holds the example's placeholder passwords; set real ones (just secrets writes random ones to a new file)"
    fi
}

roll_out() {
    local overlay=$1 staging=$2
    check_overlay "$overlay"
    check_secrets_match
    if [ "$overlay" = overlays/replicaset ]; then
        operator
        kubectl apply -k "$staging"
        # The operator makes the members one by one, then the users; the API's Secret
        # (its connection string) exists only then.
        echo "waiting for the replica set (three members, one after another: minutes)"
        kubectl -n "$NAMESPACE" wait mongodbcommunity/mongo --for=jsonpath='{.status.phase}'=Running --timeout=900s
    else
        migrate_headless_mongo
        kubectl apply -k "$staging"
        kubectl -n "$NAMESPACE" rollout status statefulset/mongo --timeout=300s
    fi
    kubectl annotate namespace "$NAMESPACE" "$OVERLAY_ANNOTATION=$overlay" --overwrite >/dev/null
    kubectl -n "$NAMESPACE" rollout status deployment/mongo-api --timeout=180s
}

# A deployment made while `mongo` was the StatefulSet's headless Service: a Service's
# clusterIP and a StatefulSet's serviceName cannot be changed, so both are made anew.
# MongoDB restarts once, on the same claim.
migrate_headless_mongo() {
    [ "$(kubectl -n "$NAMESPACE" get service mongo -o jsonpath='{.spec.clusterIP}' 2>/dev/null)" = None ] || return 0
    echo "deploy: MongoDB's Service becomes a ClusterIP one: MongoDB restarts once, its data stays"
    kubectl -n "$NAMESPACE" delete statefulset mongo --wait
    kubectl -n "$NAMESPACE" wait --for=delete pod/mongo-0 --timeout=120s
    kubectl -n "$NAMESPACE" delete service mongo
}

# The overlay deployed now, if any: as recorded on the namespace, else (a deployment made
# before it was recorded) from what is there.
deployed_overlay() {
    local recorded
    kubectl get namespace "$NAMESPACE" >/dev/null 2>&1 || return 0
    recorded=$(kubectl get namespace "$NAMESPACE" -o jsonpath="{.metadata.annotations.${OVERLAY_ANNOTATION//./\\.}}" 2>/dev/null || true)
    if [ -n "$recorded" ]; then
        echo "$recorded"
    elif kubectl -n "$NAMESPACE" get mongodbcommunity mongo >/dev/null 2>&1; then
        echo overlays/replicaset
    elif kubectl -n "$NAMESPACE" get statefulset mongo >/dev/null 2>&1; then
        echo base
    fi
}

# The replica set's MongoDB and the base's cannot replace one another in place (the
# operator cannot take over the base's StatefulSet, and apply does not prune): refuse.
check_overlay() {
    local wanted=$1 current
    current=$(deployed_overlay)
    [ -n "$current" ] || return 0
    if [ "$current" != "$wanted" ] && { [ "$current" = overlays/replicaset ] || [ "$wanted" = overlays/replicaset ]; }; then
        fail "$current is deployed; $wanted cannot replace it in place. Run just undeploy first (it deletes MongoDB's data)"
    fi
}

# Installs (or upgrades to) the pinned operator in the namespace, watching only it.
operator() {
    type -P helm >/dev/null || fail "the replicaset overlay installs MongoDB's operator with Helm: install helm 3 (https://helm.sh/docs/intro/install/)"
    helm repo add mongodb "$OPERATOR_REPO" --force-update >/dev/null
    if ! helm search repo "$OPERATOR_CHART" --version "$OPERATOR_VERSION" -o json | grep -q "\"version\":\"$OPERATOR_VERSION\""; then
        fail "the chart repository $OPERATOR_REPO has no $OPERATOR_CHART $OPERATOR_VERSION; set OPERATOR_VERSION in k8s/deploy.sh to one of: helm search repo $OPERATOR_CHART --versions"
    fi
    echo "installing MongoDB Controllers for Kubernetes $OPERATOR_VERSION (Helm chart $OPERATOR_CHART)"
    helm upgrade --install "$OPERATOR_RELEASE" "$OPERATOR_CHART" --version "$OPERATOR_VERSION" \
        --namespace "$NAMESPACE" --create-namespace --wait --timeout 5m
}

undeploy() {
    # The API's pods go first, while MongoDB and its Service are still there: a pod that
    # looked `mongo` up after the Service went would leave "no such name" in cluster DNS's
    # cache, for a deploy within the next 30 s to meet.
    kubectl -n "$NAMESPACE" delete deployment mongo-api --ignore-not-found --cascade=foreground --wait
    # The operator goes next, after the resource it reconciles, so nothing recreates
    # what the namespace's deletion removes.
    if kubectl get crd mongodbcommunity.mongodbcommunity.mongodb.com >/dev/null 2>&1; then
        kubectl -n "$NAMESPACE" delete mongodbcommunity --all --ignore-not-found --wait
    fi
    if type -P helm >/dev/null && helm status "$OPERATOR_RELEASE" -n "$NAMESPACE" >/dev/null 2>&1; then
        helm uninstall "$OPERATOR_RELEASE" -n "$NAMESPACE" --wait
        # Registered by the operator itself when it started, so not Helm's to remove; ours
        # only if it calls the operator in our namespace (another team's operator would
        # have registered it calling theirs).
        if [ "$(kubectl get validatingwebhookconfiguration "$OPERATOR_WEBHOOK" -o jsonpath='{.webhooks[0].clientConfig.service.namespace}' 2>/dev/null)" = "$NAMESPACE" ]; then
            kubectl delete validatingwebhookconfiguration "$OPERATOR_WEBHOOK"
        fi
        # Its CRDs stay, as Helm leaves a chart's CRDs: deleting one deletes every object
        # of its kind in every namespace, other teams' MongoDBs included.
        local crds
        crds=$(kubectl get crd -o name | grep '\.mongodb\.com$' | tr '\n' ' ')
        [ -z "$crds" ] || echo "deploy: MongoDB's operator is uninstalled; its CRDs stay, since other namespaces may hold MongoDBs of theirs. When none does: kubectl --context $CONTEXT delete $crds"
    fi
    kubectl delete namespace "$NAMESPACE" --ignore-not-found
}

# The URL, printed at once whatever the driver.
url() {
    local driver address
    driver=$(driver)
    case "$driver" in
        docker | podman)
            if command "$driver" port "$PROFILE" "$NODE_PORT/tcp" 2>/dev/null | grep -q "^$PUBLISHED$"; then
                echo "http://$PUBLISHED"
                return
            fi
            ;;
    esac
    address=$(minikube ip)
    if [ "$driver" = docker ] || [ "$driver" = podman ]; then
        # Not published: a cluster made before `just deploy` published the port. Its own
        # address answers only where the driver needs no port-forward (Linux, rootful).
        if type -P curl >/dev/null && ! curl -s -o /dev/null -m 3 "http://$address:$NODE_PORT/"; then
            fail "port $NODE_PORT is not published by this Minikube ($driver driver) and http://$address:$NODE_PORT does not answer from here. Recreate it (minikube -p $PROFILE delete && just deploy) or run: kubectl --context $CONTEXT -n $NAMESPACE port-forward service/mongo-api 5000:5000"
        fi
    fi
    echo "http://$address:$NODE_PORT"
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
    remote)
        [ $# -eq 3 ] || fail "usage: deploy.sh remote CONTEXT OVERLAY IMAGE@DIGEST"
        CONTEXT=$1
        remote "$(overlay_path "$2")" "$3"
        ;;
    undeploy)
        CONTEXT=${1:-$CONTEXT}
        undeploy
        ;;
    url) url ;;
    require) require "$@" ;;
    *) fail "usage: deploy.sh cluster|node-arch|load|apply|remote|undeploy|url|require" ;;
esac
