#!/usr/bin/env python3
"""What of the host a cluster could change, recorded before `up` and compared after `down`.

    host_check.py snapshot FILE   record it
    host_check.py compare FILE    exit 1, listing each difference, if the host is not as recorded

Kernel settings (every sysctl but counters), mounts, network links, addresses, routes and
namespaces, iptables and nftables rules, the top cgroups of every hierarchy, the default
paths of containerd, the kubelet and CNI, and processes in the cluster's cgroups.
"""

import json
import subprocess
import sys
from pathlib import Path

import host
import settings as s

# Counters and per-boot values that change on their own.
VOLATILE_SYSCTLS = (
    "fs.dentry-state", "fs.file-nr", "fs.inode-nr", "fs.inode-state", "fs.quota.", "kernel.random.",
    "kernel.ns_last_pid", "kernel.pty.nr", "net.netfilter.nf_conntrack_count", "kernel.tainted",
    "fs.aio-nr", "kernel.sched_", "vm.stat_", "net.ipv4.tcp_fastopen_key", "fs.binfmt_misc.",
    "kernel.core_pipe_limit", "user.", "fs.pipe-user-pages", "kernel.perf_event_max_sample_rate",
)
DEFAULT_PATHS = [
    "/var/lib/cni", "/var/log/pods", "/var/log/containers", "/etc/cni", "/opt/cni", "/var/lib/kubelet",
    "/var/lib/containerd", "/run/containerd", "/etc/kubernetes", "/tmp/hostpath_pv", "/run/netns",
    "/usr/libexec/kubernetes", "/var/lib/etcd", "/var/run/kubernetes", str(s.STATE),
]


def out(*argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout


def sysctls():
    values = {}
    for line in out("sysctl", "-a", "--ignore").splitlines():
        name, _, value = line.partition(" = ")
        if not name.startswith(VOLATILE_SYSCTLS):
            values[name] = value
    return values


def mounts():
    return sorted({line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()})


def links():
    return sorted(link["ifname"] for link in json.loads(out("ip", "-j", "link", "show")))


def rules():
    # Without the counters, which traffic moves.
    save = [line for line in out("iptables-save").splitlines() if not line.startswith("#")]
    return [line.split(" [")[0] if line.startswith(":") else line for line in save]


def top_cgroups():
    return sorted(f"{h.name}/{d.name}" for h in host.hierarchies() for d in h.iterdir() if d.is_dir())


def cluster_processes():
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and host.ours(int(proc.name)):
            found.append(proc.name)
    return found


def snapshot():
    return {
        "sysctls": sysctls(),
        "mounts": mounts(),
        "links": links(),
        "addresses": out("ip", "-br", "addr").split("\n"),
        "routes": out("ip", "route", "show", "table", "all").split("\n"),
        "netns": out("ip", "netns", "list").split("\n"),
        "iptables": rules(),
        "nftables": out("nft", "list", "ruleset").split("\n") if subprocess.run(
            ["which", "nft"], capture_output=True).returncode == 0 else [],
        "cgroups": top_cgroups(),
        "paths": {p: Path(p).exists() for p in DEFAULT_PATHS},
        "cluster processes": cluster_processes(),
    }


def differences(before, after):
    found = []
    for key in before:
        old, new = before[key], after[key]
        if isinstance(old, dict):
            for name in sorted(set(old) | set(new)):
                if old.get(name) != new.get(name):
                    found.append(f"{key}: {name}: {old.get(name)!r} -> {new.get(name)!r}")
        elif old != new:
            added = [x for x in new if x not in old]
            removed = [x for x in old if x not in new]
            found.append(f"{key}: added {added}, removed {removed}")
    return found


def main():
    command, file = sys.argv[1], Path(sys.argv[2])
    if command == "snapshot":
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(snapshot(), indent=1))
        return
    found = differences(json.loads(file.read_text()), snapshot())
    for line in found:
        print(f"host changed: {line}")
    if found:
        sys.exit(1)
    print("the host is as it was before the cluster")


if __name__ == "__main__":
    main()
