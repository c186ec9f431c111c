#!/bin/sh
# The test cluster's MongoDB image: the official mongo image's entrypoint contract
# (docker-library/mongo, docker-entrypoint.sh), as far as k8s/ relies on it, over the
# SecantusDB stand-in, since no mongod can be had here. What it keeps:
#
# - `mongod ARGS` (or ARGS alone, when the first begins with `-`) starts the server; any
#   other command runs as given.
# - With MONGO_INITDB_ROOT_USERNAME and _PASSWORD set (both, or neither), or scripts in
#   /docker-entrypoint-initdb.d, and a data directory without MongoDB's files: a temporary
#   server on 127.0.0.1 only, without authentication; the root user created in `admin`
#   with role root; each *.sh sourced and each *.js run with `mongosh` against that server
#   (database MONGO_INITDB_DATABASE, default `test`); the temporary server stopped.
# - Then the real server on every address, with authentication when a root user was
#   asked for, the MONGO_INITDB_* variables unset.
#
# The only mongod argument the manifests pass, --wiredTigerCacheSizeGB, sizes the stand-in's
# cache; any other is refused, so that a manifest relying on one shows here.
set -eu

if [ "${1#-}" != "$1" ]; then
    set -- mongod "$@"
fi
if [ "$1" != mongod ]; then
    exec "$@"
fi
shift

cache=256M
while [ $# -gt 0 ]; do
    case "$1" in
        --wiredTigerCacheSizeGB) cache="$(awk "BEGIN { print int($2 * 1024) }")M"; shift 2 ;;
        --wiredTigerCacheSizeGB=*) cache="$(awk "BEGIN { print int(${1#*=} * 1024) }")M"; shift ;;
        *) echo "$0: the MongoDB stand-in does not take the mongod argument $1" >&2; exit 2 ;;
    esac
done

db=/data/db
# --sync-on-commit: journaled writes reach the disk before they are acknowledged, as
# mongod does for j: true (the stand-in otherwise acknowledges them first).
set -- secantusd-rs --port 27017 --storage-path "$db" --standalone --sync-on-commit --log-file-max 16MB \
    --cache-size "$cache"

root_user=
if [ -n "${MONGO_INITDB_ROOT_USERNAME:-}" ] && [ -n "${MONGO_INITDB_ROOT_PASSWORD:-}" ]; then
    root_user=1
elif [ -n "${MONGO_INITDB_ROOT_USERNAME:-}" ] || [ -n "${MONGO_INITDB_ROOT_PASSWORD:-}" ]; then
    echo "error: missing 'MONGO_INITDB_ROOT_USERNAME' or 'MONGO_INITDB_ROOT_PASSWORD'" >&2
    echo "       both must be specified for a user to be created" >&2
    exit 1
fi

initdb=$root_user
for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in *.sh | *.js) initdb=1 ;; esac
done
# As the image decides a volume is already initialised: MongoDB's files are there.
if [ -e "$db/WiredTiger" ]; then
    initdb=
fi

if [ -n "$initdb" ]; then
    "$@" --host 127.0.0.1 &
    temporary=$!
    mongo="mongosh --host 127.0.0.1 --port 27017 --quiet"
    tries=30
    until $mongo admin --eval 'quit(0)' >/dev/null 2>&1; do
        if ! kill -0 "$temporary" 2>/dev/null; then
            echo "error: mongod does not appear to have stayed running -- perhaps it had an error?" >&2
            exit 1
        fi
        tries=$((tries - 1))
        if [ "$tries" -le 0 ]; then
            echo "error: mongod does not appear to have accepted connections quickly enough" >&2
            exit 1
        fi
        sleep 1
    done
    if [ -n "$root_user" ]; then
        $mongo admin --eval 'db.createUser({user: process.env.MONGO_INITDB_ROOT_USERNAME,
            pwd: process.env.MONGO_INITDB_ROOT_PASSWORD, roles: [{role: "root", db: "admin"}]})' >/dev/null
    fi
    export MONGO_INITDB_DATABASE="${MONGO_INITDB_DATABASE:-test}"
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "$0: running $f"; . "$f" ;;
            *.js) echo "$0: running $f"; $mongo "$MONGO_INITDB_DATABASE" "$f" ;;
            *) echo "$0: ignoring $f" ;;
        esac
    done
    kill "$temporary"
    wait "$temporary" || true
    echo "MongoDB init process complete; ready for start up."
fi

unset MONGO_INITDB_ROOT_USERNAME MONGO_INITDB_ROOT_PASSWORD MONGO_INITDB_DATABASE
if [ -n "$root_user" ]; then
    exec "$@" --host 0.0.0.0 --auth
fi
exec "$@" --host 0.0.0.0
