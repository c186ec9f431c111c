#!/usr/bin/env python3
"""The test cluster: a one-node Kubernetes built here, in a network namespace of its own.

    cluster.py build   build the node binary, the add-ons and their images (cached)
    cluster.py up      start the node; return once it is Ready, cluster DNS answers,
                       `kubectl top` shows figures and a default StorageClass exists;
                       print the kubeconfig's path (its context: mongo-api-test)
    cluster.py down    stop every process by PID, remove what `up` made, restore the
                       host's settings (also after a killed run)

Needs root. See docs/kubernetes.md for what this cluster is and is not.
"""

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time

import addons
import build
import configs
import host
import settings as s

KUBE = build.BIN / "kube"
# Start order; `down` stops them in reverse.
DAEMONS = ["containerd", "registry", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
           "kubelet", "kube-proxy", "kube-router"]


def kubectl(*args, config=s.KUBECONFIG, **kwargs):
    kwargs.setdefault("check", True)
    return subprocess.run(["kubectl", f"--kubeconfig={config}", *args], **kwargs)


def kubeadm(*args, **kwargs):
    return subprocess.run([str(KUBE), "kubeadm", *args], check=True, **kwargs)


def wait_until(what, seconds, check):
    """Poll CHECK (true when done) every half second for up to SECONDS, else fail naming WHAT."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.5)


def quietly(*argv):
    return subprocess.run(argv, capture_output=True).returncode == 0


def check_addresses_free():
    """Refuse to start when the host already routes an address range the cluster uses."""
    ours = [ipaddress.ip_network(n, strict=False) for n in (f"{s.HOST_IP}/{s.LINK_PREFIX}", s.SERVICE_CIDR, s.POD_CIDR)]
    for route in json.loads(host.host_routes()):
        dst = route.get("dst", "default")
        if dst == "default" or route.get("type") in ("local", "broadcast", "multicast"):
            continue
        net = ipaddress.ip_network(dst, strict=False)
        for mine in ours:
            if net.overlaps(mine):
                sys.exit(f"cluster: this host already routes {dst} (dev {route.get('dev')}), which overlaps the "
                         f"cluster's {mine}: settings.py would need other ranges")


def make_pki():
    """Certificates and kubeconfigs as kubeadm makes them for a control plane."""
    config = configs.kubeadm_config()
    kubeadm("init", "phase", "certs", "all", f"--config={config}", stdout=subprocess.DEVNULL)
    kubeadm("init", "phase", "kubeconfig", "all", f"--config={config}", f"--kubeconfig-dir={configs.KUBECONFIGS}",
            stdout=subprocess.DEVNULL)
    # kube-proxy's user is bound to system:node-proxier by Kubernetes' own RBAC; kube-router's,
    # to its ClusterRole by install_addons.
    for name, user in (("kube-proxy", "system:kube-proxy"), ("kube-router", addons.KUBE_ROUTER_USER)):
        kubeconfig = kubeadm("kubeconfig", "user", f"--config={config}", f"--client-name={user}",
                             capture_output=True, text=True).stdout
        configs.write(configs.KUBECONFIGS / f"{name}.conf", kubeconfig)


def import_images(tars):
    """The built images into the node's containerd, where the CRI finds them."""
    for tar in tars:
        host.in_node("ctr", f"--address={configs.CONTAINERD_SOCKET}", "--namespace=k8s.io", "images", "import",
                     str(tar), stdout=subprocess.DEVNULL)


def start_control_plane(daemons):
    host.start("etcd", daemons["etcd"])
    wait_until("etcd", 60, lambda: host.in_node(
        "curl", "-sf", "http://127.0.0.1:2381/health", check=False, capture_output=True).returncode == 0)
    host.start("kube-apiserver", daemons["kube-apiserver"])
    admin = configs.KUBECONFIGS / "super-admin.conf"
    wait_until("the API server", 120, lambda: quietly("kubectl", f"--kubeconfig={admin}", "get", "--raw", "/readyz"))
    for name in ("kube-controller-manager", "kube-scheduler"):
        host.start(name, daemons[name])


def write_kubeconfig():
    """kubeadm's admin.conf (the kubeadm:cluster-admins group, bound here as kubeadm init
    binds it), its context renamed to the cluster's."""
    super_admin = configs.KUBECONFIGS / "super-admin.conf"
    kubectl("create", "clusterrolebinding", "kubeadm:cluster-admins", "--clusterrole=cluster-admin",
            "--group=kubeadm:cluster-admins", config=super_admin, stdout=subprocess.DEVNULL)
    s.KUBECONFIG.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(configs.KUBECONFIGS / "admin.conf", s.KUBECONFIG)
    s.KUBECONFIG.chmod(0o600)
    kubectl("config", "rename-context", f"kubernetes-admin@{s.NAME}", s.CONTEXT, stdout=subprocess.DEVNULL)


def install_addons():
    kubeadm("init", "phase", "addon", "coredns", f"--config={configs.ETC / 'kubeadm.yaml'}",
            f"--kubeconfig={s.KUBECONFIG}", stdout=subprocess.DEVNULL)
    corefile = configs.write(s.STATE / "addons" / "Corefile", addons.COREFILE)
    cm = kubectl("-n", "kube-system", "create", "configmap", "coredns", f"--from-file=Corefile={corefile}",
                 "--dry-run=client", "-o", "yaml", capture_output=True, text=True).stdout
    kubectl("replace", "-f", "-", input=cm, text=True, stdout=subprocess.DEVNULL)
    for name, manifests in [*addons.render(kubectl), ("kube-router", addons.kube_router_rbac())]:
        kubectl("apply", "--server-side", "-f", "-", input=manifests, text=True, stdout=subprocess.DEVNULL)


def dns_answers():
    """Cluster DNS, asked from the host through the node: kubernetes.default's address."""
    out = subprocess.run(["busybox", "nslookup", f"kubernetes.default.svc.{s.CLUSTER_DOMAIN}", s.DNS_IP],
                         capture_output=True, text=True, timeout=10).stdout
    return "10.96.0.1" in out


def top_shows_figures():
    out = kubectl("top", "pods", "-A", "--no-headers", check=False, capture_output=True, text=True)
    return out.returncode == 0 and "m " in out.stdout


def wait_ready(daemons):
    wait_until("the node to register", 120, lambda: quietly(
        "kubectl", f"--kubeconfig={s.KUBECONFIG}", "get", "node", s.NODE_NAME))
    # It looks its node up once, when it starts, and stops if it is not there yet.
    host.start("kube-router", daemons["kube-router"])
    kubectl("wait", "--for=condition=Ready", f"node/{s.NODE_NAME}", "--timeout=120s", stdout=subprocess.DEVNULL)
    for namespace, deployment in (("kube-system", "coredns"), ("kube-system", "metrics-server"),
                                  ("local-path-storage", "local-path-provisioner")):
        kubectl("-n", namespace, "rollout", "status", f"deployment/{deployment}", "--timeout=180s",
                stdout=subprocess.DEVNULL)
    wait_until("cluster DNS to answer", 60, dns_answers)
    wait_until("kubectl top to show figures", 180, top_shows_figures)
    # Nothing restarts a daemon here (no systemd): one that stopped is a failed start.
    stopped = [name for name in DAEMONS if not host.running(name)]
    if stopped:
        raise RuntimeError(f"stopped while the node started: {', '.join(stopped)} (see {s.LOGS})")


def up():
    tars = build.build()
    if s.STATE.exists():
        print("cluster: removing what an earlier run left", flush=True)
        down()
    check_addresses_free()
    s.STATE.mkdir(parents=True)
    shutil.rmtree(s.LOGS, ignore_errors=True)
    host.save_settings()
    started = time.monotonic()
    try:
        configs.write_all()
        host.make_network()
        host.make_mount_namespace()
        host.make_cgroups()
        make_pki()
        daemons = configs.daemons(KUBE)
        host.start("containerd", daemons["containerd"])
        host.start("registry", daemons["registry"])
        wait_until("containerd", 30, configs.CONTAINERD_SOCKET.exists)
        import_images(tars)
        start_control_plane(daemons)
        write_kubeconfig()
        install_addons()
        host.start("kubelet", daemons["kubelet"])
        host.start("kube-proxy", daemons["kube-proxy"])
        wait_ready(daemons)
    except BaseException:
        print(f"cluster: up failed; the daemons' logs are in {s.LOGS}", file=sys.stderr)
        down()
        raise
    print(f"cluster {s.CONTEXT} is up in {time.monotonic() - started:.0f} s: Kubernetes {s.KUBERNETES_VERSION}, "
          f"node {s.NODE_IP}, registry {s.NODE_IP}:{s.REGISTRY_PORT}")
    print(s.KUBECONFIG)


def down():
    host.unmake(list(reversed(DAEMONS)))
    shutil.rmtree(s.STATE, ignore_errors=True)
    s.KUBECONFIG.unlink(missing_ok=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "up", "down"])
    command = parser.parse_args().command
    if command != "build" and os.geteuid() != 0:
        sys.exit(f"cluster: {command} needs root (network and mount namespaces, cgroups, host settings)")
    if command == "build":
        build.build()
    elif command == "up":
        up()
    else:
        down()


if __name__ == "__main__":
    main()
