# mongo-api: `just run` starts the service with a local MongoDB stand-in, `just test`
# runs every test, `just check` the quick ones. `just --list` shows all recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

secantus_version := "0.5.3-beta.196"
kubernetes_validate_version := "1.37.0"
# The Kubernetes versions the manifests are validated against: the oldest `just deploy`
# accepts (k8s/deploy.sh: preStop sleep needs 1.30), the one it starts, the newest schemas.
kubernetes_versions := "1.30.0 1.32.0 1.37.0"
musl_target := "x86_64-unknown-linux-musl"
arm_target := "aarch64-unknown-linux-musl"
host_arch := if arch() == "aarch64" { "arm64" } else { "amd64" }
zig_version := "0.14.1"
mongosh_version := "2.12.0"
zigbuild_version := "0.24.1"
fuzz_targets := "body_to_document query_parameters http_framing"
version := `sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1`
commit := `git rev-parse --short HEAD 2>/dev/null || echo unknown`
image := "mongo-api:" + version
namespace := "mongo-api"
# Where `just run` keeps the local database and its credentials.
data_dir := "data"
local_mongo_port := "27018"
# The project's own Python environment for every Python tool the recipes use (PEP 668
# systems such as Debian 12 refuse `pip install` into the system Python).
venv := "target/venv"

# List the recipes
default:
    @just --list

# The Rust target of an architecture (amd64 or arm64)
[private]
rust-target arch:
    @echo {{ if arch == "arm64" { arm_target } else { musl_target } }}

# Install Debian packages with apt (as root or with sudo); where there is no apt, stop with one line naming them
[private]
apt +packages:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v apt-get >/dev/null; then
        echo "needs the Debian packages {{packages}}, and this system has no apt-get: install their equivalents with its package manager, then run just again" >&2
        exit 1
    fi
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing {{packages}} (apt)"
    install() { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq {{packages}} >/dev/null; }
    # `just test` installs in several steps: package lists fetched in the last hour are
    # used as they are, and fetched again only if the install fails with them.
    # (The directory changes when an update brings new lists; they keep the mirror's times.)
    if [ -n "$(find /var/lib/apt/lists -maxdepth 0 -mmin -60 2>/dev/null)" ] && install 2>/dev/null; then
        exit 0
    fi
    $sudo apt-get update -qq
    install

# Wait up to SECONDS for COMMAND to succeed, else fail naming WHAT
[private]
[positional-arguments]
wait seconds what +command:
    #!/usr/bin/env bash
    set -uo pipefail
    seconds=$1 what=$2
    shift 2
    deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "timed out after $seconds s waiting for $what" >&2
            exit 1
        fi
        sleep 0.1
    done

# Install what building the static binary needs: a C compiler, musl-tools, the musl target
deps-build:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=()
    # Elsewhere than Linux the static binary is cross-built with zig (`just deps-cross`).
    if [ "$(uname -s)" = Linux ]; then
        command -v musl-gcc >/dev/null || missing+=(musl-tools)
        command -v cc >/dev/null || missing+=(build-essential)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        just apt "${missing[@]}" || { echo "the static build needs musl-gcc and a C compiler (Fedora: dnf install musl-gcc gcc; Arch: pacman -S musl gcc; Alpine: apk add musl-dev gcc)" >&2; exit 1; }
    fi
    rustup target list --installed | grep -qx {{musl_target}} || rustup target add {{musl_target}}

# Install the cross toolchain for arm64: the aarch64 musl target, zig and cargo-zigbuild (into target/venv)
deps-cross: venv
    #!/usr/bin/env bash
    set -euo pipefail
    rustup target list --installed | grep -qx {{arm_target}} || rustup target add {{arm_target}}
    {{venv}}/bin/cargo-zigbuild --version 2>/dev/null | grep -q "{{zigbuild_version}}" \
        || {{venv}}/bin/pip install --quiet --disable-pip-version-check "ziglang=={{zig_version}}" "cargo-zigbuild=={{zigbuild_version}}"

# Install what testing needs besides building: cmake and the MongoDB stand-in
deps: deps-build
    #!/usr/bin/env bash
    set -euo pipefail
    command -v cmake >/dev/null || just apt cmake
    if ! secantusd-rs --version 2>/dev/null | grep -q "{{secantus_version}}"; then
        echo "installing the MongoDB stand-in (SecantusDB {{secantus_version}}): cargo compiles it once, about 7 minutes on 2 cores"
        cargo install secantus-mdb --version {{secantus_version}} --locked --ignore-rust-version
    fi

# Build the service (debug)
build:
    cargo build

# Build the static release binary for ARCH (amd64 or arm64; default this machine's), as the image holds it
build-static arch=host_arch: deps-build
    #!/usr/bin/env bash
    set -euo pipefail
    target=$(just rust-target {{arch}})
    if [ "$target" = {{musl_target}} ] && [ "$(uname -sm)" = "Linux x86_64" ]; then
        cargo build --release --target $target -p mongo-api
    else
        # Another architecture or system: zig is the C cross compiler (for ring).
        just deps-cross
        PATH="$PWD/{{venv}}/bin:$PATH" cargo zigbuild --release --target $target -p mongo-api
    fi
    ls -l target/$target/release/mongo-api

# The tag that identifies this build: VERSION-COMMIT, plus -dirty-DIGEST when the tree has changes
image-tag arch=host_arch:
    #!/usr/bin/env bash
    set -euo pipefail
    tag={{version}}-{{commit}}
    if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
        tag=$tag-dirty-$(sha256sum target/$(just rust-target {{arch}})/release/mongo-api | cut -c1-8)
    fi
    echo $tag

# Build the FROM-scratch image for ARCH, tagged mongo-api:VERSION and mongo-api:TAG (needs a running Docker)
build-image arch=host_arch: (require "docker" "docker-engine")
    #!/usr/bin/env bash
    set -euo pipefail
    just build-static {{arch}}
    tag=$(just image-tag {{arch}})
    # Every build is mongo-api:TAG-ARCH; only this machine's architecture also takes the
    # names the manifests and `docker run` use, so an arm64 build never replaces them.
    names=(-t mongo-api:$tag-{{arch}})
    [ {{arch}} != {{host_arch}} ] || names+=(-t {{image}} -t mongo-api:$tag)
    # The context is the binary alone (8 MB sent, not the repository); no cache, since
    # Docker's classic builder would reuse a step it built for the other architecture.
    context=target/image-context/{{arch}}
    rm -rf $context && mkdir -p $context
    cp target/$(just rust-target {{arch}})/release/mongo-api $context/
    docker build --quiet --no-cache -f Dockerfile.scratch --platform linux/{{arch}} \
        --build-arg VERSION={{version}} --build-arg REVISION={{commit}} "${names[@]}" $context
    docker image ls mongo-api --format '{{"{{"}}.Repository{{"}}"}}:{{"{{"}}.Tag{{"}}"}}  {{"{{"}}.Size{{"}}"}}'

# Push the amd64 and arm64 images and one multi-arch index to REGISTRY (ghcr.io/you, docker.io/you; log in first)
push registry: (require "docker" "docker-engine")
    #!/usr/bin/env bash
    set -euo pipefail
    repo={{registry}}/mongo-api
    # A clean tree is pushed as VERSION-COMMIT and VERSION; a dirty one only under its own
    # VERSION-COMMIT-dirty-DIGEST, which can never overwrite a release tag.
    just build-static amd64
    tag=$(just image-tag amd64)
    tags=($tag)
    case "$tag" in *-dirty-*) echo "the tree has changes: pushing $repo:$tag only, never :{{version}}" ;; *) tags+=({{version}}) ;; esac
    # A registry on this machine, or one the engine was told speaks plain HTTP
    # (dockerd --insecure-registry, as for the test cluster's), takes the manifest over HTTP.
    insecure=(); case "{{registry}}" in 127.0.0.1:* | localhost:*) insecure=(--insecure) ;; esac
    secure=$(docker info --format '{{"{{"}}(index .RegistryConfig.IndexConfigs "{{registry}}").Secure{{"}}"}}' 2>/dev/null || true)
    [ "$secure" != false ] || insecure=(--insecure)
    for arch in amd64 arm64; do
        just build-image $arch
        docker tag mongo-api:$(just image-tag $arch)-$arch $repo:$tag-$arch
        docker push --quiet $repo:$tag-$arch
    done
    for t in "${tags[@]}"; do
        # The index lists both images; `docker manifest` reads each one's platform.
        docker manifest rm $repo:$t >/dev/null 2>&1 || true
        docker manifest create "${insecure[@]}" $repo:$t $repo:$tag-amd64 $repo:$tag-arm64 >/dev/null
        digest=$(docker manifest push "${insecure[@]}" --purge $repo:$t)
        echo "pushed $repo:$t"
    done
    echo "index: $repo@$digest"
    echo "deploy it to another cluster with: just deploy-to CONTEXT $repo@$digest"

# Stop at once, exit 2, with one line for each outside tool missing (docker-engine: Docker's engine not answering)
[private]
[no-exit-message]
require +tools:
    @k8s/deploy.sh require {{tools}}

# Write random MongoDB credentials for the manifests to k8s/base/secrets.env, once (not in git)
secrets:
    #!/usr/bin/env bash
    set -euo pipefail
    file=k8s/base/secrets.env
    [ -f $file ] && exit 0
    secret() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }
    umask 077
    printf 'MONGO_ROOT_USER=root\nMONGO_ROOT_PASSWORD=%s\nMONGO_APP_USER=app\nMONGO_APP_PASSWORD=%s\n' "$(secret)" "$(secret)" >$file
    echo "wrote $file"

# Deploy OVERLAY (base, assignment, replicaset) to Minikube (started if needed): MongoDB, the service (NodePort 30007), the HPA
deploy overlay="base": (require "minikube" "kubectl" "docker" "docker-engine" ("helm-for-" + overlay)) secrets
    #!/usr/bin/env bash
    set -euo pipefail
    k8s/deploy.sh cluster {{overlay}}
    arch=$(k8s/deploy.sh node-arch)
    just build-image $arch
    image=mongo-api:$(just image-tag $arch)-$arch
    k8s/deploy.sh load $image
    k8s/deploy.sh apply {{overlay}} $image

# Deploy OVERLAY to the cluster of kubectl context CONTEXT (never the current one implicitly), the image by digest (just push prints it)
deploy-to context image overlay="base": (require "kubectl" ("helm-for-" + overlay)) secrets
    k8s/deploy.sh remote {{context}} {{overlay}} {{image}}

# Remove the deployment (the whole namespace, MongoDB's data included, and the operator if installed) from CONTEXT (default: Minikube)
undeploy context="minikube": (require "kubectl")
    k8s/deploy.sh undeploy {{context}}

# Print the service's URL on Minikube (the NodePort), on every driver
url: (require "minikube")
    @k8s/deploy.sh url

# Show the HPA at work on Minikube: documents via the API, a load over its target, replicas and CPU until it scales back
hpa-demo *args: (require "minikube" "kubectl")
    cargo build --release -p bench
    ./target/release/bench hpa-demo --url "$(k8s/deploy.sh url)" {{args}}

# Follow the service's logs on Minikube (every pod)
logs: (require "kubectl")
    kubectl --context minikube -n {{namespace}} logs -l app.kubernetes.io/name=mongo-api --prefix --tail=50 -f

# Render every overlay, validate it against the Kubernetes schemas, and check what schemas miss
check-k8s: deps-k8s secrets
    #!/usr/bin/env bash
    set -euo pipefail
    # The checks read the service's ports, paths and memory formula from the binary itself.
    cargo build --quiet -p mongo-api
    mkdir -p target/k8s
    for overlay in base overlays/assignment overlays/replicaset; do
        out=target/k8s/$(basename $overlay).yaml
        kubectl kustomize k8s/$overlay >$out
        # The oldest Kubernetes `just deploy` accepts, the one it starts, the newest schemas
        # (it has no schema for MongoDBCommunity, and says so; check_manifests.py checks that).
        for version in {{kubernetes_versions}}; do
            {{venv}}/bin/kubernetes-validate --kubernetes-version $version --strict --quiet $out
        done
        {{venv}}/bin/python k8s/check_manifests.py $out --image {{image}} --binary target/debug/mongo-api
    done
    (cd k8s && ../{{venv}}/bin/python -m unittest --quiet test_check_manifests test_deploy test_tools)
    (cd k8s/cluster && ../../{{venv}}/bin/python -m unittest --quiet test_settings)

# A private Docker engine for COMMAND, stopped (and its files removed) after it; with REGISTRY, allowed to push there over HTTP
[private]
[positional-arguments]
with-docker registry +command:
    #!/usr/bin/env bash
    set -euo pipefail
    registry=$1; shift
    if [ -n "${DOCKER_HOST:-}" ] || docker info >/dev/null 2>&1; then
        exec "$@"
    fi
    dir=$(mktemp -d /tmp/mongo-api-docker.XXXXXX)
    flags=(); [ "$registry" = - ] || flags=(--insecure-registry "$registry")
    # No bridge, no iptables and no IP forwarding: builds and runs use the host's network,
    # and dockerd would otherwise turn on net.ipv4.ip_forward for the whole machine.
    dockerd --iptables=false --ip6tables=false --ip-forward=false --bridge=none --data-root $dir/data --exec-root $dir/exec \
        -H unix://$dir/docker.sock --pidfile $dir/docker.pid "${flags[@]}" >$dir/dockerd.log 2>&1 &
    dockerd_pid=$!
    # dockerd leaves its network namespace mounted under exec-root, and may leave the
    # data root mounted; its containerd can still be writing there for a moment.
    # Nothing in it may fail: under `set -e` a failing command would end the trap early
    # and replace the recipe's exit status with its own.
    stop() {
        set +e
        kill $dockerd_pid
        wait $dockerd_pid
        umount -l $dir/exec/netns/default $dir/data
        rm -rf $dir || { sleep 2; rm -rf $dir; }
    } 2>/dev/null
    trap stop EXIT
    export DOCKER_HOST=unix://$dir/docker.sock
    just wait 30 "the private Docker engine" docker info
    "$@"

# Start a private Docker engine, build the image, run it as the Deployment would, stop it all
test-image: deps-docker check-k8s
    just with-docker - bash -c 'just build-image && {{venv}}/bin/python k8s/image_check.py target/k8s/base.yaml --image {{image}}'

# Push to a registry on this machine: one index for amd64 and arm64, checked with skopeo; the amd64 image pulled back by digest and run as the Deployment would
test-push: deps-docker deps-registry check-k8s
    just with-docker - {{venv}}/bin/python k8s/registry_check.py --rendered target/k8s/base.yaml

# Run MongoDB's init script with the real mongosh as the StatefulSet would; check the app user's rights
test-mongo-init: deps deps-mongosh check-k8s
    cargo build -p mongo-api -p bench
    {{venv}}/bin/python k8s/mongo_init_check.py target/k8s/base.yaml \
        --mongosh target/mongosh/node_modules/.bin/mongosh --service target/debug/mongo-api

# Build the arm64 static binary and check it serves the API under qemu-user (as on Apple Silicon Minikube)
test-arm64: deps deps-cross
    #!/usr/bin/env bash
    set -euo pipefail
    command -v qemu-aarch64-static >/dev/null || just apt qemu-user-static
    just build-static arm64
    cargo build -p bench
    {{venv}}/bin/python k8s/arm64_check.py --binary target/{{arm_target}}/release/mongo-api

# Install mongosh (npm, into target/mongosh) for the MongoDB init check
deps-mongosh:
    @[ -x target/mongosh/node_modules/.bin/mongosh ] || { echo "installing mongosh 2 (npm, about 150 MB)"; \
        npm install --prefix target/mongosh --no-audit --no-fund --loglevel=error "mongosh@{{mongosh_version}}"; }

# Install what the manifest checks need: kubectl (with kustomize), kubernetes-validate
deps-k8s: venv
    #!/usr/bin/env bash
    set -euo pipefail
    command -v kubectl >/dev/null || just apt kubectl \
        || { echo "kubectl is needed (1.27 or newer, for kustomize 5); install it from https://kubernetes.io/docs/tasks/tools/"; exit 1; }
    {{venv}}/bin/kubernetes-validate --version 2>/dev/null | grep -qx "{{kubernetes_validate_version}}" \
        || {{venv}}/bin/pip install --quiet --disable-pip-version-check "kubernetes-validate=={{kubernetes_validate_version}}"

# Install what the test cluster needs: Go (1.23 or newer, from the machine), and from Debian containerd, runc, the CNI plugins, iptables, ipset, busybox, a registry, Docker
deps-cluster: deps-docker deps-k8s
    #!/usr/bin/env bash
    set -euo pipefail
    command -v go >/dev/null || { echo "the test cluster is built with Go 1.23 or newer: https://go.dev/doc/install" >&2; exit 1; }
    missing=()
    # tool:package (Debian)
    for pair in containerd:containerd runc:runc iptables:iptables ipset:ipset ip:iproute2 nsenter:util-linux \
        curl:curl docker-registry:docker-registry; do
        command -v ${pair%%:*} >/dev/null || missing+=(${pair#*:})
    done
    [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
    dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
    [ ${#missing[@]} -eq 0 ] || just apt "${missing[@]}"

# Build the test cluster (Kubernetes, etcd, CoreDNS, metrics-server, a provisioner, kube-router, images) into target/cluster; cached after the first build (about 16 minutes on 2 cores)
cluster-build: deps-cluster
    just with-docker - {{venv}}/bin/python k8s/cluster/cluster.py build

# Start the test cluster (root): one Kubernetes node in a network namespace of its own; prints its kubeconfig (context mongo-api-test)
cluster-up: cluster-build
    {{venv}}/bin/python k8s/cluster/cluster.py up

# Stop the test cluster: every process by PID, every namespace, mount, cgroup and route it made; the host's settings restored
cluster-down:
    {{venv}}/bin/python k8s/cluster/cluster.py down

# The test cluster's life, checked: up (killed, then again), its tests and the deployment's, down, the host as it was, up and down again
test-cluster: cluster-build deps deps-mongosh deps-registry
    just with-docker - {{venv}}/bin/python k8s/cluster/mongo_image.py
    cd k8s/cluster && ../../{{venv}}/bin/python lifecycle_check.py test_deployment test_shared_cluster

# Fuzz each target for SECONDS (libFuzzer); new inputs go to target/fuzz-corpus, crashes to target/fuzz-artifacts, not git
fuzz seconds="60": deps-fuzz
    #!/usr/bin/env bash
    set -euo pipefail
    # cargo-fuzz passes nightly-only flags (-Zsanitizer); the only toolchain we have is
    # stable, and RUSTC_BOOTSTRAP lets it accept them.
    export RUSTC_BOOTSTRAP=1
    echo "building the fuzz targets (instrumented; the first build takes about 2 minutes)"
    cargo fuzz build --release
    # The targets run side by side (libFuzzer uses one core each), each in its own log.
    pids=()
    trap 'kill ${pids[@]} 2>/dev/null || true' EXIT
    for target in {{fuzz_targets}}; do
        # The committed corpus seeds the run; what the run finds goes to the first
        # directory, outside git (`just fuzz-merge` folds it into the committed corpus).
        mkdir -p target/fuzz-corpus/$target target/fuzz-artifacts/$target
        cargo fuzz run --release $target target/fuzz-corpus/$target fuzz/corpus/$target -- \
            -max_total_time={{seconds}} -rss_limit_mb=2048 -max_len=65536 \
            -artifact_prefix=target/fuzz-artifacts/$target/ >target/fuzz-artifacts/$target.log 2>&1 &
        pids+=($!)
    done
    failed=0
    set -- {{fuzz_targets}}
    for pid in "${pids[@]}"; do
        target=$1; shift
        log=target/fuzz-artifacts/$target.log
        # libFuzzer exits non-zero on a crash, a leak, a timeout or running out of memory.
        if wait $pid; then
            echo "$target: $(grep -E '^Done' $log)"
        else
            tail -40 $log
            echo "$target failed: see $log and target/fuzz-artifacts/$target"
            failed=1
        fi
    done
    # Every one has been waited for: nothing left for the trap to stop.
    pids=()
    exit $failed

# Fold what `just fuzz` found into the committed corpus, keeping only inputs that add coverage
fuzz-merge: deps-fuzz
    #!/usr/bin/env bash
    set -euo pipefail
    export RUSTC_BOOTSTRAP=1
    for target in {{fuzz_targets}}; do
        mkdir -p target/fuzz-corpus/$target
        cargo fuzz run --release $target fuzz/corpus/$target target/fuzz-corpus/$target -- -merge=1 >target/fuzz-merge-$target.log 2>&1
        grep -E '^MERGE-OUTER: [0-9]+ new files' target/fuzz-merge-$target.log
    done

# Attack the live service with schemathesis, generating requests from its own OpenAPI document
test-openapi: deps-schemathesis
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -p mongo-api -p bench
    dir=$(mktemp -d /tmp/mongo-api-openapi.XXXXXX)
    pids=()
    trap 'kill ${pids[@]} 2>/dev/null; wait; rm -rf $dir' EXIT
    secantusd-rs --host 127.0.0.1 --port 0 --storage-path $dir/db --auth --sync-on-commit \
        --log-file-max 16MB --cache-size 128M >$dir/db.log 2>&1 &
    pids+=($!)
    just wait 30 "the MongoDB stand-in" grep -q "listening on" $dir/db.log
    db_port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' $dir/db.log)
    NEW_USER_PASSWORD=schemathesis ./target/debug/bench create-user --port $db_port --user st >/dev/null
    MONGO_HOST=127.0.0.1 MONGO_PORT=$db_port MONGO_USER=st MONGO_PASSWORD=schemathesis MONGO_DB=st \
        BIND_ADDR=127.0.0.1 PORT=0 ./target/debug/mongo-api >$dir/service.log 2>&1 &
    pids+=($!)
    just wait 30 "the service" grep -q '"message":"listening"' $dir/service.log
    address=$(sed -n 's/.*"address":"\([^"]*\)".*/\1/p' $dir/service.log | head -1)
    # Every check but positive_data_acceptance: "any JSON object" cannot say in JSON Schema
    # that integers must fit in 64 bits or that keys must not repeat, nor can a string
    # schema say "a cursor this API issued", so some schema-valid inputs are rightly 400.
    # Run from the temporary directory: schemathesis keeps a cache (.schemathesis/) in
    # its working directory, which must not land in the work tree.
    (cd $dir && "$OLDPWD/{{venv}}/bin/schemathesis" run http://$address/openapi.json --checks all --exclude-checks positive_data_acceptance \
        --max-examples 200 --seed 1 --workers 2 --no-color)
    if grep -q '"panic"' $dir/service.log; then echo "the service panicked"; exit 1; fi

# Install schemathesis (into the project's Python environment)
deps-schemathesis: venv
    @{{venv}}/bin/schemathesis --version 2>/dev/null | grep -q "4.32.5" \
        || {{venv}}/bin/pip install --quiet --disable-pip-version-check "schemathesis==4.32.5"

# Create the project's Python environment, target/venv (installs Debian's python3-venv if needed)
venv:
    #!/usr/bin/env bash
    set -euo pipefail
    [ -x {{venv}}/bin/pip ] && exit 0
    rm -rf {{venv}}
    if ! python3 -m venv {{venv}} >/dev/null 2>&1; then
        # Debian and Ubuntu ship the venv module's pip bootstrap separately.
        rm -rf {{venv}}
        just apt python3-venv
        python3 -m venv {{venv}}
    fi
    {{venv}}/bin/pip install --quiet --disable-pip-version-check --upgrade pip

# Install cargo-fuzz
deps-fuzz:
    @cargo fuzz --version 2>/dev/null | grep -q "0.13.2" || { echo "installing cargo-fuzz (compiles once, about 1 minute)"; cargo install cargo-fuzz --version 0.13.2 --locked; }

# Install a Docker engine for the image tests (Debian's docker.io)
deps-docker:
    @command -v dockerd >/dev/null && command -v docker >/dev/null || just apt docker.io

# Install a registry and skopeo for the push test (Debian's docker-registry, the CNCF distribution registry)
deps-registry:
    @command -v docker-registry >/dev/null && command -v skopeo >/dev/null || just apt docker-registry skopeo

# Stop at once, exit 2, with one line naming the setting that moves a port another process holds
[private]
[no-exit-message]
free-ports:
    #!/usr/bin/env bash
    for pair in "${PORT:-5000}:PORT" "${MANAGEMENT_PORT:-8081}:MANAGEMENT_PORT"; do
        port=${pair%%:*} setting=${pair#*:}
        if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
            note=""; [ "$port" != 5000 ] || note=" (on macOS the AirPlay Receiver holds 5000)"
            echo "port $port is held by another process$note: set $setting to a free one, e.g. $setting=$((port + 1)) just run" >&2
            exit 2
        fi
    done

# Run the service on :5000 against a local MongoDB stand-in it starts (data kept in ./data)
run: free-ports deps
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{data_dir}}/mongo
    chmod 700 {{data_dir}}
    echo "building the service and its helper (release; the first build takes about 5 minutes)"
    cargo build --release --workspace
    secantusd-rs --host 127.0.0.1 --port {{local_mongo_port}} --storage-path {{data_dir}}/mongo \
        --auth --sync-on-commit --log-file-max 16MB --cache-size 256M >{{data_dir}}/mongo.log 2>&1 &
    db_pid=$!
    trap 'kill $db_pid 2>/dev/null; wait $db_pid 2>/dev/null || true' EXIT
    just wait 30 "the MongoDB stand-in on port {{local_mongo_port}}" bash -c "echo >/dev/tcp/127.0.0.1/{{local_mongo_port}}"
    if [ ! -f {{data_dir}}/credentials ]; then
        secret() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }
        admin_pw=$(secret); app_pw=$(secret)
        NEW_USER_PASSWORD=$admin_pw ./target/release/bench create-user --port {{local_mongo_port}} --user admin --role root
        ADMIN_USER=admin ADMIN_PASSWORD=$admin_pw NEW_USER_PASSWORD=$app_pw \
            ./target/release/bench create-user --port {{local_mongo_port}} --user app --role readWrite@flask_db
        umask 077
        printf 'ADMIN_PASSWORD=%s\nMONGO_PASSWORD=%s\n' "$admin_pw" "$app_pw" >{{data_dir}}/credentials
    fi
    set -a; source {{data_dir}}/credentials; set +a
    echo "MongoDB stand-in on 127.0.0.1:{{local_mongo_port}} (data in {{data_dir}}/mongo); service on http://localhost:${PORT:-5000}"
    MONGO_HOST=127.0.0.1 MONGO_PORT={{local_mongo_port}} MONGO_USER=app MONGO_DB=flask_db \
        ./target/release/mongo-api

# The quick checks, in a few minutes: formatting, lints, unit tests
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace --lib --bins
    cargo test -p tiny_http -p budget

# Run every test: lints, unit and integration tests (real MongoDB-speaking server), manifests, image, registry
test: deps
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    just build-static
    # The memory and capacity tests measure the product: the static release binary. One test
    # at a time: tests bound latencies (a probe within 100 ms, a write within MongoDB's
    # deadline) and measure memory, and on two cores a neighbour's load would decide them.
    # The memory tests write what they measured to target/memory-results: copied to
    # docs/results/memory, `bench tables` shows it in docs/memory.md.
    MONGO_API_RELEASE_BIN="$PWD/target/{{musl_target}}/release/mongo-api" MEMORY_RESULTS="$PWD/target/memory-results" \
        cargo test --workspace -- --test-threads 1
    # Again through replica-set URIs (the stand-in is a one-member set), as on the operator's
    # set: the API, and what the driver does differently for a set (outages, a database that
    # stops answering, a step-down). The rest never reaches MongoDB's topology.
    TEST_MONGO_REPLICA_SET=secantus cargo test --test service -- --test-threads 1 api:: \
        reliability::mongodb_outage reliability::a_mongodb_that_stops reliability::a_primary_step_down
    just test-openapi
    just fuzz 30
    just test-image
    just test-mongo-init
    just test-arm64
    just test-push
    just test-cluster

# Benchmark: no arguments, the whole local comparison (about 15 min once built); with arguments, one `bench run`
bench *args: build-static
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p bench
    if [ -n "{{args}}" ]; then
        exec ./target/release/bench run {{args}}
    fi
    # The Flask reference gets its own environment: its pinned packages are the
    # reference's, not the project's tools'.
    [ -x target/bench-venv/bin/pip ] || { rm -rf target/bench-venv; just venv; python3 -m venv target/bench-venv; }
    target/bench-venv/bin/pip install --quiet --disable-pip-version-check -r bench/flask_ref/requirements.txt
    command -v wrk >/dev/null || just apt wrk
    echo "building the axum peer (bench/peers/axum; the first build takes about 4 minutes)"
    (cd bench/peers/axum && cargo build --release)
    image=()
    if docker image inspect {{image}} >/dev/null 2>&1; then image=(--image {{image}}); fi
    ./target/release/bench suite --python target/bench-venv/bin/python "${image[@]}"
