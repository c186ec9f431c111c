"""What the node is made of on the host, made and unmade: its network namespace and veth
pair, its mount namespace, its cgroups, the machine-wide settings its daemons change, and
its processes (started into all of these, stopped by PID).

Everything the node's daemons and pods do to networking (bridges, veths, iptables rules,
routes, per-namespace sysctls) happens inside its network namespace and goes with it;
every mount they make (container roots, volumes, pod network namespaces under /run)
happens inside its mount namespace and goes with it. What remains on the host is listed
here and undone by `unmake`.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import settings as s

NS_DIR = s.STATE / "ns"
MOUNT_NS = NS_DIR / "mnt"
NETNS_PATH = Path("/run/netns") / s.NETNS
PIDS = s.STATE / "pids"
SAVED_SETTINGS = s.STATE / "host-settings.json"
CREATED_DIRS = s.STATE / "host-dirs.json"
CGROUP_ROOT = Path("/sys/fs/cgroup")

# Machine-wide settings the node's daemons write: the kubelet's kernel tunables
# (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables) and IP forwarding,
# which the CNI bridge plugin turns on wherever it runs. Saved before anything starts,
# restored by `unmake`.
HOST_SETTINGS = [
    "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.ip_forward",
]

# Paths that node daemons write and that no setting moves (the kubelet's sockets, libcni's
# cache, the kubelet's container log links and pod logs). Inside the node's mount namespace each is a bind
# mount of a directory under STATE; a mount point missing on the host is made, recorded,
# and removed again.
NODE_MOUNTS = {
    # The kubelet's root: its device-plugin and pod-resources sockets and its serving
    # certificate are under /var/lib/kubelet whatever --root-dir says.
    "/var/lib/kubelet": s.STATE / "kubelet",
    "/var/lib/cni": s.STATE / "mounts" / "var-lib-cni",
    "/var/log/pods": s.STATE / "mounts" / "var-log-pods",
    "/var/log/containers": s.STATE / "mounts" / "var-log-containers",
}
# And the node's resolv.conf (configs.py writes it) over the host's, so that no daemon of
# the node can resolve a name outside the cluster.
NODE_FILE_MOUNTS = {"/etc/resolv.conf": s.STATE / "etc" / "resolv.conf"}


def run(*argv, check=True, **kwargs):
    return subprocess.run([str(a) for a in argv], check=check, **kwargs)


def sysctl_path(name):
    return Path("/proc/sys") / name.replace(".", "/")


def save_settings():
    # A run killed before `down` left its saved values: keep those, they are the host's.
    if not SAVED_SETTINGS.exists():
        SAVED_SETTINGS.write_text(json.dumps({n: sysctl_path(n).read_text().strip() for n in HOST_SETTINGS}))


def restore_settings():
    if SAVED_SETTINGS.exists():
        for name, value in json.loads(SAVED_SETTINGS.read_text()).items():
            if sysctl_path(name).read_text().strip() != value:
                sysctl_path(name).write_text(value)


def host_routes():
    return run("ip", "-4", "-json", "route", "show", "table", "all", capture_output=True, text=True).stdout


def make_dir(path):
    """mkdir -p PATH, recording each directory made, for `unmake` to remove."""
    made = json.loads(CREATED_DIRS.read_text()) if CREATED_DIRS.exists() else []
    missing = []
    p = Path(path)
    while not p.exists():
        missing.append(str(p))
        p = p.parent
    os.makedirs(path, exist_ok=True)
    CREATED_DIRS.write_text(json.dumps(made + missing))


def make_network():
    """The node's namespace, a veth pair into it, and the host's routes to it."""
    # `ip netns` keeps handles in /run/netns, which it makes (a mount point) if missing.
    make_dir(NETNS_PATH.parent)
    run("ip", "netns", "add", s.NETNS)
    run("ip", "link", "add", s.HOST_LINK, "type", "veth", "peer", "name", "eth0", "netns", s.NETNS)
    run("ip", "addr", "add", f"{s.HOST_IP}/{s.LINK_PREFIX}", "dev", s.HOST_LINK)
    run("ip", "link", "set", s.HOST_LINK, "up")
    node = ["ip", "-n", s.NETNS]
    run(*node, "link", "set", "lo", "up")
    run(*node, "addr", "add", f"{s.NODE_IP}/{s.LINK_PREFIX}", "dev", "eth0")
    run(*node, "link", "set", "eth0", "up")
    # No default route: nothing on the node reaches past the host. Service addresses
    # need a route for the node's own connections (the kube-proxy's DNAT happens after
    # routing for those); it points at the host, which does not forward them back out
    # (and routes them to the node, below).
    run(*node, "route", "add", s.SERVICE_CIDR, "via", s.HOST_IP)
    # The host reaches ClusterIPs through the node, as Minikube's host does with
    # `minikube tunnel`. Goes away with the veth.
    run("ip", "route", "add", s.SERVICE_CIDR, "via", s.NODE_IP)


def make_mount_namespace():
    """A mount namespace for the node's daemons, kept by a bind mount of its handle."""
    NS_DIR.mkdir(parents=True, exist_ok=True)
    run("mount", "--bind", NS_DIR, NS_DIR)
    run("mount", "--make-private", NS_DIR)
    MOUNT_NS.touch()
    run("unshare", f"--mount={MOUNT_NS}", "--propagation=private", "true")
    for target, source in NODE_MOUNTS.items():
        source.mkdir(parents=True, exist_ok=True)
        make_dir(target)
    binds = "; ".join(f"mount --bind {source} {target}"
                      for target, source in {**NODE_MOUNTS, **NODE_FILE_MOUNTS}.items())
    # Shared within the node (the kubelet's volume mounts propagate into containers),
    # private from the host, since the namespace began private. /run is the node's own:
    # containerd's shim sockets and the pods' network namespaces live there.
    run("nsenter", f"--mount={MOUNT_NS}", "--", "sh", "-euc",
        f"mount --make-rshared /; mount -t tmpfs -o mode=0755 node-run /run; {binds}")


def hierarchies():
    """The cgroup v1 hierarchies mounted on this machine (cpu, memory, pids, ...)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] == "cgroup":
            found.append(Path(fields[4]))
    return found


def make_cgroups():
    """/mongo-api-test in every hierarchy (the kubelet's cgroup root) and, under it,
    node/ for the daemons."""
    for h in hierarchies():
        for group in (h / s.CGROUP, h / s.CGROUP / "node"):
            group.mkdir(exist_ok=True)
            if (group / "cpuset.cpus").exists():
                # A new cpuset group starts with no CPUs or memory nodes: take its parent's.
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (group / f).write_text((group.parent / f).read_text())


def join_node_cgroups():
    """Runs in the child before exec: the daemon and everything it starts (containerd's
    shims included) are in the cluster's cgroups, where `unmake` finds them."""
    for h in hierarchies():
        (h / s.CGROUP / "node" / "cgroup.procs").write_text(str(os.getpid()))


def start(name, argv):
    """Start a daemon in the node's namespaces and cgroups; its PID goes to PIDS/NAME."""
    PIDS.mkdir(parents=True, exist_ok=True)
    s.LOGS.mkdir(parents=True, exist_ok=True)
    log = open(s.LOGS / f"{name}.log", "ab")
    proc = subprocess.Popen(
        ["nsenter", f"--net={NETNS_PATH}", f"--mount={MOUNT_NS}", "--", *map(str, argv)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=join_node_cgroups)
    log.close()
    (PIDS / name).write_text(str(proc.pid))
    return proc


def in_node(*argv, **kwargs):
    """Run a command in the node's namespaces (tests and image imports)."""
    return run("nsenter", f"--net={NETNS_PATH}", f"--mount={MOUNT_NS}", "--", *argv, **kwargs)


def ours(pid):
    """Whether PID is a process in the cluster's cgroups (a PID file can outlive its
    process, and the number be reused by another)."""
    try:
        # A zombie has ended; its parent (init, once `up` has exited) reaps it.
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return any(path == f"/{s.CGROUP}" or path.startswith(f"/{s.CGROUP}/")
               for path in (line.split(":", 2)[2] for line in lines))


def running(name):
    """The PID of the daemon NAME if it runs."""
    try:
        pid = int((PIDS / name).read_text())
    except FileNotFoundError:
        return None
    return pid if ours(pid) else None


def stop_daemons(names, grace=10):
    """SIGTERM each daemon that runs (in NAMES' order), then SIGKILL what is left after GRACE s."""
    pids = [pid for pid in map(running, names) if pid]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pid in pids:
        while ours(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if ours(pid):
            os.kill(pid, signal.SIGKILL)


def cgroup_tasks(group):
    tasks = set()
    for path in group.rglob("cgroup.procs"):
        tasks.update(int(t) for t in path.read_text().split())
    return tasks


def kill_cgroup_tree():
    """Every process left in the cluster's cgroups (shims, containers): frozen, so none can
    fork meanwhile, killed by PID, thawed to die."""
    groups = {h.name: h / s.CGROUP for h in hierarchies()}
    tree, freezer = groups.get("pids"), groups.get("freezer")
    if tree is None or not tree.exists():
        return
    deadline = time.monotonic() + 30
    while tasks := cgroup_tasks(tree):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes left in the cluster's cgroups after 30 s: {sorted(tasks)}")
        if freezer is not None:
            (freezer / "freezer.state").write_text("FROZEN")
        for pid in tasks:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if freezer is not None:
            (freezer / "freezer.state").write_text("THAWED")
        time.sleep(0.2)


def remove_cgroups():
    for h in hierarchies():
        group = h / s.CGROUP
        if group.exists():
            # Deepest first: a cgroup with children cannot be removed.
            for d in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                            reverse=True):
                d.rmdir()
            group.rmdir()


def mounts_under(path):
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(path) or point.startswith(f"{path}/"):
            found.append(point)
    return found


def remove_mount_namespace():
    # The namespace ends when its last process has and its handle is unmounted; every
    # mount inside it (overlays, volumes, tmpfs) ends with it.
    for point in sorted(mounts_under(s.STATE), key=len, reverse=True):
        run("umount", "-l", point)


def remove_made_dirs():
    """The directories make_dir made, deepest first, if nothing else has come to use them."""
    if not CREATED_DIRS.exists():
        return
    for path in sorted(json.loads(CREATED_DIRS.read_text()), key=len, reverse=True):
        if os.path.isdir(path) and not os.listdir(path):
            while (points := mounts_under(path)) and set(points) == {path}:
                run("umount", path)
            os.rmdir(path)


def remove_network():
    # Deleting the namespace deletes its end of the veth pair, so the host's end and the
    # host's route through it go too; every rule and route of the node goes with it.
    if NETNS_PATH.exists():
        run("ip", "netns", "delete", s.NETNS)
    if run("ip", "link", "show", s.HOST_LINK, check=False, capture_output=True).returncode == 0:
        run("ip", "link", "delete", s.HOST_LINK)


def unmake(daemons):
    """Undo all of the above, whatever state a run left: by PID, then by cgroup."""
    stop_daemons(daemons)
    kill_cgroup_tree()
    remove_cgroups()
    remove_mount_namespace()
    remove_network()
    remove_made_dirs()
    restore_settings()
