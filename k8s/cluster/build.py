"""Build what the test cluster runs, at pinned versions, into target/cluster.

The node binary (etcd, Kubernetes, kubeadm) from kube/go.mod; the add-ons from the Go
module proxy; the pause container from the Kubernetes module's own source; busybox from
Debian. Each image is one FROM-scratch layer built by Docker and saved as a tar that
`up` imports into the node's containerd. A binary or image is rebuilt only when what it
is made from changed (a stamp of its inputs sits beside it).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import settings as s

BIN = s.CACHE / "bin"
IMAGES = s.CACHE / "images"


def go_env():
    env = dict(os.environ, CGO_ENABLED="0", GOBIN=str(BIN))
    # Kubernetes and its add-ons build with the Go on the machine; a go.mod asking for a
    # newer one must fail here rather than fetch a toolchain.
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def digest(*parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def fresh(path, stamp):
    """Whether PATH exists and was made from inputs whose digest is STAMP."""
    marker = path.with_name(path.name + ".stamp")
    return path.exists() and marker.exists() and marker.read_text() == stamp


def mark(path, stamp):
    path.with_name(path.name + ".stamp").write_text(stamp)


def go_version():
    return subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()


def module_dir(module_at_version):
    """The module cache directory of MODULE@VERSION (downloaded if needed)."""
    out = subprocess.run(["go", "mod", "download", "-json", module_at_version], capture_output=True,
                         text=True, env=go_env(), check=True).stdout
    return json.loads(out)["Dir"]


def build_kube():
    """The node binary, with Kubernetes' version stamped as its own release build does."""
    source = s.HERE / "kube"
    major, minor = s.KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    ldflags = " ".join([
        "-s -w",
        f"-X {pkg}.gitVersion={s.KUBERNETES_VERSION}",
        f"-X {pkg}.gitMajor={major}",
        f"-X {pkg}.gitMinor={minor}",
        f"-X {pkg}.gitTreeState=clean",
    ])
    out = BIN / "kube"
    stamp = digest(go_version(), ldflags, *[(source / f).read_bytes() for f in ("go.mod", "go.sum", "main.go")])
    if fresh(out, stamp):
        return
    print(f"building Kubernetes {s.KUBERNETES_VERSION} and etcd {s.ETCD_VERSION} (one binary; "
          "a cold build takes about 7 minutes on 2 cores)", flush=True)
    subprocess.run(["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(out), "."],
                   cwd=source, env=go_env(), check=True)
    mark(out, stamp)


def build_module(module_at_version):
    """A command of a published module, `go install`ed at its pinned version."""
    name = module_at_version.split("@")[0].rsplit("/", 1)[1]
    out = BIN / name
    stamp = digest(go_version(), module_at_version)
    if fresh(out, stamp):
        return out
    print(f"building {module_at_version}", flush=True)
    subprocess.run(["go", "install", "-trimpath", "-ldflags", "-s -w", module_at_version],
                   env=go_env(), check=True)
    mark(out, stamp)
    return out


def build_pause():
    """Kubernetes' pause program, from the source in its module, static as upstream builds it."""
    source = os.path.join(module_dir(f"k8s.io/kubernetes@{s.KUBERNETES_VERSION}"), "build", "pause", "linux", "pause.c")
    out = BIN / "pause"
    stamp = digest(Path(source).read_bytes(), s.PAUSE_VERSION)
    if not fresh(out, stamp):
        subprocess.run(["cc", "-Os", "-Wall", "-Werror", "-static", f'-DVERSION=v{s.PAUSE_VERSION}',
                        "-o", str(out), source], check=True)
        subprocess.run(["strip", str(out)], check=True)
        mark(out, stamp)
    return out


def busybox_files():
    """Debian's static busybox, with a link per applet (sh, httpd, nslookup, dd, ...)."""
    busybox = shutil.which("busybox")
    if busybox is None or "statically linked" not in subprocess.run(
            ["file", "-L", busybox], capture_output=True, text=True).stdout:
        sys.exit("cluster: the busybox image needs Debian's busybox-static (just cluster-build installs it)")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    return busybox, applets


# Each image: its name and tag, the files it holds (path in the image -> file here), the
# user it runs as, its entrypoint and default arguments.
def image_specs():
    busybox, applets = busybox_files()
    return [
        (s.PAUSE_IMAGE, {"pause": build_pause()}, "65535:65535", ["/pause"], []),
        (f"{s.COREDNS_IMAGE_REPOSITORY}/coredns:{s.COREDNS_TAG}",
         {"coredns": build_module(s.COREDNS_MODULE)}, "65532:65532", ["/coredns"], []),
        (s.METRICS_SERVER_IMAGE, {"metrics-server": build_module(s.METRICS_SERVER_MODULE)},
         "65532:65532", ["/metrics-server"], []),
        # Its manifest starts it by name, from PATH.
        (s.LOCAL_PATH_IMAGE, {"usr/bin/local-path-provisioner": build_module(s.LOCAL_PATH_MODULE)},
         "65532:65532", ["/usr/bin/local-path-provisioner"], []),
        (s.BUSYBOX_IMAGE, {"bin/busybox": busybox, **{f"bin/{a}": "busybox" for a in applets if a != "busybox"}},
         "0:0", [], ["sh"]),
    ]


def build_image(name, files, user, entrypoint, cmd):
    """One FROM-scratch image saved as IMAGES/<name>.tar; FILES values are paths here, or
    the target of a symbolic link (a name without a slash)."""
    tar = IMAGES / (name.split("/", 1)[1].replace("/", "_").replace(":", "_") + ".tar")
    dockerfile = "\n".join([
        "FROM scratch",
        "COPY . /",
        f"USER {user}",
        "ENV PATH=/usr/local/bin:/usr/bin:/bin",
        f"ENTRYPOINT {json.dumps(entrypoint)}" if entrypoint else "",
        f"CMD {json.dumps(cmd)}" if cmd else "",
    ]) + "\n"
    parts = [dockerfile]
    for path, source in sorted(files.items()):
        parts += [path, source if "/" not in str(source) else Path(source).read_bytes()]
    stamp = digest(*parts)
    if fresh(tar, stamp):
        return tar
    context = IMAGES / "context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for path, source in files.items():
        target = context / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if "/" in str(source):
            shutil.copy2(source, target)
        else:
            target.symlink_to(source)
    (context / "Dockerfile").write_text(dockerfile)
    print(f"building the image {name}", flush=True)
    docker_build(name, context)
    subprocess.run(["docker", "save", "-o", str(tar), name], check=True)
    shutil.rmtree(context)
    mark(tar, stamp)
    return tar


def docker_build(name, context):
    """`docker build` of CONTEXT (its Dockerfile) as NAME."""
    if "DOCKER_HOST" not in os.environ and subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        sys.exit("cluster: building the images needs a Docker engine (just cluster-build starts a private one)")
    # The classic builder: FROM scratch and COPY need nothing more (and it says so only
    # when asked for it by name).
    built = subprocess.run(["docker", "build", "--quiet", "--no-cache", "-t", name, str(context)],
                           capture_output=True, text=True, env=dict(os.environ, DOCKER_BUILDKIT="0"))
    if built.returncode != 0:
        sys.exit(f"cluster: docker build of {name} failed:\n{built.stderr}")


def build():
    BIN.mkdir(parents=True, exist_ok=True)
    IMAGES.mkdir(parents=True, exist_ok=True)
    build_kube()
    build_module(s.KUBE_ROUTER_MODULE)
    build_module(s.HELM_MODULE)
    return [build_image(*spec) for spec in image_specs()]

