# mongo-api: `just run` starts the service with a local MongoDB stand-in, `just test`
# runs every test. `just --list` shows all recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

secantus_version := "0.5.3-beta.196"
musl_target := "x86_64-unknown-linux-musl"
# Where `just run` keeps the local database and its credentials.
data_dir := "data"
local_mongo_port := "27018"

# List the recipes
default:
    @just --list

# Install what building and testing need: C tools, the musl target, the MongoDB stand-in
deps:
    #!/usr/bin/env bash
    set -euo pipefail
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    command -v musl-gcc >/dev/null || missing+=(musl-tools)
    command -v cc >/dev/null || missing+=(build-essential)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    rustup target list --installed | grep -qx {{musl_target}} || rustup target add {{musl_target}}
    if ! secantusd-rs --version 2>/dev/null | grep -q "{{secantus_version}}"; then
        echo "installing the MongoDB stand-in (SecantusDB {{secantus_version}}; compiles once, about 4 minutes on 2 cores)"
        cargo install secantus-mdb --version {{secantus_version}} --locked --ignore-rust-version --quiet
    fi

# Build the service (debug)
build:
    cargo build

# Run the service on :5000 against a local MongoDB stand-in it starts (data kept in ./data)
run: deps
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{data_dir}}/mongo
    chmod 700 {{data_dir}}
    cargo build --release --workspace --quiet
    secantusd-rs --host 127.0.0.1 --port {{local_mongo_port}} --storage-path {{data_dir}}/mongo \
        --auth --sync-on-commit --log-file-max 16MB --cache-size 256M >{{data_dir}}/mongo.log 2>&1 &
    db_pid=$!
    trap 'kill $db_pid 2>/dev/null; wait $db_pid 2>/dev/null || true' EXIT
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/{{local_mongo_port}}) 2>/dev/null && break; sleep 0.1; done
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

# Run every test: formatting, lints, unit and integration tests against a real MongoDB-speaking server
test: deps
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace
