"""The image the test cluster runs where users run the official `mongo` image: the
MongoDB stand-in (SecantusDB) and the real `mongosh` (npm) behind the mongo image's
entrypoint contract (mongo/docker-entrypoint.sh says which parts), FROM scratch: the two
programs, Node.js, the libraries they load (as `ldd` finds them on this Debian machine),
busybox for the shell, and the mongodb user (999) owning /data/db.

It is the one difference between what the tests deploy and what users deploy: the node's
registry serves it under the name the manifests give (`mongo:8.0.16` is
docker.io/library/mongo:8.0.16, and containerd asks the node's registry for every name).
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import build
import settings as s

SOURCE = s.HERE / "mongo"
MONGOSH = s.ROOT / "target" / "mongosh" / "node_modules"
TAR = build.IMAGES / "mongo-standin.tar"
NAME = s.image("mongo-standin", "latest")


def elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def libraries(programs):
    """Every shared library PROGRAMS load, and the dynamic loader, by path."""
    found = set()
    for program in programs:
        out = subprocess.run(["ldd", str(program)], capture_output=True, text=True).stdout
        found.update(re.findall(r"(/\S+) \(0x", out))
    return sorted(found)


def rootfs(root):
    standin = shutil.which("secantusd-rs")
    node = shutil.which("node")
    if standin is None or node is None or not (MONGOSH / "mongosh").is_dir():
        sys.exit("cluster: the MongoDB image needs secantusd-rs, node and target/mongosh (just deps deps-mongosh)")
    bin_dir = root / "usr" / "local" / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(standin, bin_dir / "secantusd-rs")
    shutil.copy2(SOURCE / "docker-entrypoint.sh", bin_dir / "docker-entrypoint.sh")
    (bin_dir / "docker-entrypoint.sh").chmod(0o755)
    (root / "usr" / "bin").mkdir(parents=True)
    shutil.copy2(node, root / "usr" / "bin" / "node")
    shutil.copytree(MONGOSH, root / "opt" / "mongosh" / "node_modules", symlinks=True)
    (bin_dir / "mongosh").symlink_to("/opt/mongosh/node_modules/mongosh/bin/mongosh.js")
    busybox, applets = build.busybox_files()
    (root / "bin").mkdir()
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in applets:
        if applet != "busybox" and not (root / "bin" / applet).exists():
            (root / "bin" / applet).symlink_to("busybox")
    # mongosh.js starts with `#!/usr/bin/env node`.
    (root / "usr" / "bin" / "env").symlink_to("/bin/busybox")
    programs = [standin, node] + [p for p in (root / "opt").rglob("*.node") if elf(p)]
    for lib in libraries(programs):
        target = root / lib.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(lib).resolve(), target)
    etc = root / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nmongodb:x:999:999::/data/db:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nmongodb:x:999:\n")
    for d in ("tmp", "docker-entrypoint-initdb.d", "root"):
        (root / d).mkdir()
    (root / "tmp").chmod(0o1777)


DOCKERFILE = """\
FROM scratch
COPY rootfs/ /
COPY --chown=999:999 data/ /data/
ENV PATH=/usr/local/bin:/usr/bin:/bin
VOLUME /data/db /data/configdb
EXPOSE 27017
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["mongod"]
"""


def build_image():
    """The image as IMAGES/mongo-standin.tar, rebuilt when an input changed."""
    inputs = [shutil.which("secantusd-rs"), shutil.which("node"), SOURCE / "docker-entrypoint.sh",
              MONGOSH / "mongosh" / "package.json"]
    stamp = build.digest(DOCKERFILE, *[Path(p).read_bytes() for p in inputs if p])
    if build.fresh(TAR, stamp):
        return TAR
    context = build.IMAGES / "mongo-context"
    shutil.rmtree(context, ignore_errors=True)
    rootfs(context / "rootfs")
    for d in ("db", "configdb"):
        (context / "data" / d).mkdir(parents=True)
    (context / "Dockerfile").write_text(DOCKERFILE)
    print("building the MongoDB stand-in's image", flush=True)
    build.docker_build(NAME, context)
    subprocess.run(["docker", "save", "-o", str(TAR), NAME], check=True)
    shutil.rmtree(context)
    build.mark(TAR, stamp)
    return TAR


def push(reference):
    """Put the image in the node's registry as REFERENCE (the manifests' `mongo:…`)."""
    name, tag = reference.rsplit(":", 1)
    if "/" not in name:
        name = f"library/{name}"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"docker-archive:{TAR}",
                    f"docker://{s.NODE_IP}:{s.REGISTRY_PORT}/{name}:{tag}"], check=True)


if __name__ == "__main__":
    print(build_image())
