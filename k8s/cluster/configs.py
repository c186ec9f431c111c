"""The node's configuration files and command lines, written under the state directory.

Every path a component would otherwise take from its defaults on the host (/var/lib/...,
/etc/cni, /opt/cni) is set to one under STATE; the few that cannot be set are covered by
mounts in the node's own mount namespace (host.py).
"""

import json

import settings as s

PKI = s.STATE / "pki"
KUBECONFIGS = s.STATE / "kubeconfig"
RUN = s.STATE / "run"
CONTAINERD_SOCKET = RUN / "containerd.sock"
ETC = s.STATE / "etc"
# The node's resolv.conf: no name server, so that nothing on the node resolves a name
# outside the cluster (pods use the cluster's DNS, which forwards nothing).
RESOLV_CONF = ETC / "resolv.conf"
VOLUMES = s.STATE / "volumes"
API_SERVER = f"https://{s.NODE_IP}:{s.API_PORT}"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_json(path, value):
    # JSON is YAML: every Kubernetes configuration file reads it.
    return write(path, json.dumps(value, indent=2) + "\n")


def kubeadm_config():
    """For kubeadm's certificate, kubeconfig and CoreDNS phases (nothing else of kubeadm runs)."""
    return write(ETC / "kubeadm.yaml", "\n---\n".join(json.dumps(doc, indent=2) for doc in [
        {
            "apiVersion": "kubeadm.k8s.io/v1beta4",
            "kind": "InitConfiguration",
            "localAPIEndpoint": {"advertiseAddress": s.NODE_IP, "bindPort": s.API_PORT},
            "nodeRegistration": {"name": s.NODE_NAME},
        },
        {
            "apiVersion": "kubeadm.k8s.io/v1beta4",
            "kind": "ClusterConfiguration",
            "clusterName": s.NAME,
            # Set, so that kubeadm never asks dl.k8s.io for the latest release.
            "kubernetesVersion": s.KUBERNETES_VERSION,
            "certificatesDir": str(PKI),
            "controlPlaneEndpoint": f"{s.NODE_IP}:{s.API_PORT}",
            "networking": {"serviceSubnet": s.SERVICE_CIDR, "podSubnet": s.POD_CIDR,
                           "dnsDomain": s.CLUSTER_DOMAIN},
            "dns": {"imageRepository": s.COREDNS_IMAGE_REPOSITORY, "imageTag": s.COREDNS_TAG},
            "etcd": {"local": {"dataDir": str(s.STATE / "etcd")}},
        },
    ]) + "\n")


def containerd_config():
    root = s.STATE / "containerd"
    # Every registry name goes to the node's own registry (hosts.toml `server` replaces
    # the upstream host): an image that is neither imported nor pushed there is an error
    # naming it, never a pull from outside.
    # (containerd 1.6 refuses a hosts.toml without a [host] table, hence the same
    # address twice.)
    registry = f"http://127.0.0.1:{s.REGISTRY_PORT}"
    write(root / "certs.d" / "_default" / "hosts.toml",
          f'server = "{registry}"\n\n[host."{registry}"]\n  capabilities = ["pull", "resolve"]\n')
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return write(root / "config.toml", f"""version = 2
root = "{root / 'root'}"
# /run is the node's own tmpfs (host.py), so the shims' sockets stay off the host.
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{s.STATE / 'run' / 'containerd.sock'}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / 'opt'}"

[{cri}]
  sandbox_image = "{s.PAUSE_IMAGE}"
  # This root lacks CAP_SYS_RESOURCE: runc cannot give a container an oom_score_adj below
  # containerd's own, which the kubelet asks for Guaranteed pods.
  restrict_oom_score_adj = true
  # As containerd 2 and Docker do by default: ports below 1024 and ping without privileges
  # (CoreDNS binds :53 as a non-root user).
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{s.STATE / 'cni' / 'net.d'}"

[{cri}.registry]
  config_path = "{root / 'certs.d'}"
""")


def cni_config():
    """A bridge for the node's pods, as Minikube's and kind's single-node setups have."""
    return write_json(s.STATE / "cni" / "net.d" / "10-bridge.conflist", {
        "cniVersion": "1.0.0",
        "name": s.NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                # Pods route everything through the node, where kube-proxy's rules take
                # what is for a Service; the node itself has no route out.
                "isDefaultGateway": True,
                "ipMasq": False,
                # A pod reaching itself through its Service.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": s.NODE_POD_CIDR}]],
                    "dataDir": str(s.STATE / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    })


def kubelet_config():
    return write_json(ETC / "kubelet.yaml", {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(PKI / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        # Pods' cgroups under the cluster's own, so that `down` finds every one of them.
        "cgroupRoot": f"/{s.CGROUP}",
        "clusterDNS": [s.DNS_IP],
        "clusterDomain": s.CLUSTER_DOMAIN,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "resolvConf": str(RESOLV_CONF),
        "volumePluginDir": str(s.STATE / "kubelet-plugins"),
        "healthzBindAddress": "127.0.0.1",
        "readOnlyPort": 0,
        "failSwapOn": False,
        "rotateCertificates": False,
        # Writing a negative oom_score_adj needs CAP_SYS_RESOURCE, which this root lacks.
        "oomScoreAdj": 0,
        # The host's disk is not the node's to manage: evict only when it is really full,
        # and never collect the images imported at start (nothing could pull them back).
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "nodefs.inodesFree": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
    })


def kube_proxy_config():
    return write_json(ETC / "kube-proxy.yaml", {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(KUBECONFIGS / "kube-proxy.conf")},
        "hostnameOverride": s.NODE_NAME,
        "clusterCIDR": s.POD_CIDR,
        "nodePortAddresses": [f"{s.NODE_IP}/32"],
        "bindAddress": s.NODE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Zero leaves the host's conntrack settings as they are: they are machine-wide.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "oomScoreAdj": 0,
    })


def registry_config():
    return write(ETC / "registry.yml", f"""version: 0.1
log:
  # Info: each request is logged, which shows what the node pulled.
  level: info
storage:
  filesystem:
    rootdirectory: {s.STATE / 'registry'}
  delete:
    enabled: true
http:
  # Inside the node's namespace: containerd pulls from 127.0.0.1, the host pushes to the
  # node's address.
  addr: 0.0.0.0:{s.REGISTRY_PORT}
""")


def write_all():
    RESOLV_CONF.parent.mkdir(parents=True, exist_ok=True)
    RESOLV_CONF.write_text("# mongo-api-test: this node resolves no name outside the cluster\n")
    for make in (kubeadm_config, containerd_config, cni_config, kubelet_config, kube_proxy_config,
                 registry_config):
        make()
    VOLUMES.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)


def pki(name):
    return str(PKI / name)


def conf(name):
    return str(KUBECONFIGS / f"{name}.conf")


def daemons(kube):
    """The node's processes in start order: name -> command line."""
    etcd_tls = [f"--cert-file={pki('etcd/server.crt')}", f"--key-file={pki('etcd/server.key')}",
                f"--trusted-ca-file={pki('etcd/ca.crt')}", "--client-cert-auth",
                f"--peer-cert-file={pki('etcd/peer.crt')}", f"--peer-key-file={pki('etcd/peer.key')}",
                f"--peer-trusted-ca-file={pki('etcd/ca.crt')}", "--peer-client-cert-auth"]
    component_auth = lambda name: [f"--kubeconfig={conf(name)}", f"--authentication-kubeconfig={conf(name)}",
                                   f"--authorization-kubeconfig={conf(name)}", "--bind-address=127.0.0.1",
                                   "--leader-elect=false"]
    return {
        "containerd": ["containerd", f"--config={s.STATE / 'containerd' / 'config.toml'}"],
        "registry": ["docker-registry", "serve", str(ETC / "registry.yml")],
        "etcd": [kube, "etcd", f"--name={s.NODE_NAME}", f"--data-dir={s.STATE / 'etcd'}",
                 "--listen-client-urls=https://127.0.0.1:2379", "--advertise-client-urls=https://127.0.0.1:2379",
                 "--listen-peer-urls=https://127.0.0.1:2380",
                 "--initial-advertise-peer-urls=https://127.0.0.1:2380",
                 f"--initial-cluster={s.NODE_NAME}=https://127.0.0.1:2380",
                 "--listen-metrics-urls=http://127.0.0.1:2381", *etcd_tls],
        "kube-apiserver": [
            kube, "kube-apiserver", f"--advertise-address={s.NODE_IP}", f"--secure-port={s.API_PORT}",
            "--allow-privileged=true", "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction", "--enable-bootstrap-token-auth=true",
            f"--client-ca-file={pki('ca.crt')}",
            f"--tls-cert-file={pki('apiserver.crt')}", f"--tls-private-key-file={pki('apiserver.key')}",
            "--etcd-servers=https://127.0.0.1:2379", f"--etcd-cafile={pki('etcd/ca.crt')}",
            f"--etcd-certfile={pki('apiserver-etcd-client.crt')}",
            f"--etcd-keyfile={pki('apiserver-etcd-client.key')}",
            f"--kubelet-client-certificate={pki('apiserver-kubelet-client.crt')}",
            f"--kubelet-client-key={pki('apiserver-kubelet-client.key')}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            # The aggregation layer, for metrics-server's API.
            f"--proxy-client-cert-file={pki('front-proxy-client.crt')}",
            f"--proxy-client-key-file={pki('front-proxy-client.key')}",
            f"--requestheader-client-ca-file={pki('front-proxy-ca.crt')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--requestheader-group-headers=X-Remote-Group", "--requestheader-username-headers=X-Remote-User",
            f"--service-account-issuer=https://kubernetes.default.svc.{s.CLUSTER_DOMAIN}",
            f"--service-account-key-file={pki('sa.pub')}", f"--service-account-signing-key-file={pki('sa.key')}",
            f"--service-cluster-ip-range={s.SERVICE_CIDR}",
        ],
        "kube-controller-manager": [
            kube, "kube-controller-manager", *component_auth("controller-manager"),
            "--allocate-node-cidrs=true", f"--cluster-cidr={s.POD_CIDR}",
            f"--service-cluster-ip-range={s.SERVICE_CIDR}", f"--cluster-name={s.NAME}",
            f"--client-ca-file={pki('ca.crt')}", f"--root-ca-file={pki('ca.crt')}",
            f"--requestheader-client-ca-file={pki('front-proxy-ca.crt')}",
            f"--cluster-signing-cert-file={pki('ca.crt')}", f"--cluster-signing-key-file={pki('ca.key')}",
            f"--service-account-private-key-file={pki('sa.key')}", "--use-service-account-credentials=true",
            "--controllers=*,bootstrapsigner,tokencleaner",
            f"--flex-volume-plugin-dir={s.STATE / 'kubelet-plugins'}",
        ],
        "kube-scheduler": [kube, "kube-scheduler", *component_auth("scheduler")],
        # Its root is the default /var/lib/kubelet, which the node's mount namespace binds
        # to STATE/kubelet (host.py).
        "kubelet": [kube, "kubelet", f"--config={ETC / 'kubelet.yaml'}", f"--kubeconfig={conf('kubelet')}",
                    f"--node-ip={s.NODE_IP}",
                    f"--hostname-override={s.NODE_NAME}"],
        "kube-proxy": [kube, "kube-proxy", f"--config={ETC / 'kube-proxy.yaml'}"],
        "kube-router": [kube.parent / "kube-router", "--run-firewall=true", "--run-router=false",
                        "--run-service-proxy=false", f"--kubeconfig={conf('kube-router')}",
                        f"--hostname-override={s.NODE_NAME}", "--health-port=20244"],
    }
