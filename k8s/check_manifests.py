#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests for what schema validation cannot see.

Usage: check_manifests.py RENDERED.yaml --image NAME:TAG [--binary target/debug/mongo-api]

`kubernetes-validate --strict` catches misspelled fields and wrong types. It does not
check that things which refer to each other agree, nor enum values. This does:

  selectors      workload selectors match their pod labels; every Service, PDB and
                 NetworkPolicy selects some workload's pods
  references     every secretKeyRef / configMapKeyRef / envFrom / volume names an object
                 that exists, and a key it has
  hpa            the HPA targets an existing Deployment
  probes         HTTP probes go to the management listener, on a path it serves; the
                 container declares both ports the binary listens on (ports and paths as
                 the binary itself reports them for the container's environment:
                 `mongo-api --print-config`); a Prometheus scrape annotation names the
                 management port; a NetworkPolicy keeps other pods off the management
                 port (the node, where the kubelet probes from, is always let through);
                 MongoDB's mongosh startup probe asks the pod's address, not localhost
                 (where the image's init phase runs a temporary mongod without auth)
  image          the API's image is exactly what `just build-image` tags; every image
                 has an explicit tag other than latest
  resources      every container has CPU and memory requests and limits
  enums          Service type, protocols, pull policies, strategy, HPA metric and target
                 types, policy types, access modes, seccomp profiles
  ports          Service target ports exist on the selected pods; nodePorts in range
  services       a StatefulSet's serviceName is a headless Service (the pods' stable names);
                 the MongoDB host the API is given, when it is a Service, is not headless:
                 a headless name exists only while its pod is ready, and a "no such name"
                 told meanwhile stays in CoreDNS's cache for 30 s after MongoDB is back
  shutdown       the API's termination grace period covers its preStop pause plus the
                 server's own drain (SHUTDOWN_GRACE_SECS)
  security       every pod in a namespace labelled pod-security.kubernetes.io/enforce:
                 restricted meets that standard (non-root, no privilege escalation,
                 capabilities dropped, seccomp, no host namespaces, ports or paths)
  memory         the API's memory limit covers what the binary says its configuration needs:
                 REQUEST_MEMORY_MIB plus the process at rest, its connections
                 (MAX_CONNECTIONS) and a margin (docs/memory.md's formula)
  mongodb        a MongoDBCommunity resource (the replicaset overlay): an odd number of
                 members, at least 3; a pinned version; every user's passwordSecretRef
                 names a Secret and key that exist; mongod and the agent have requests
                 and limits; a PDB keeps a majority of its pods (labelled app: NAME-svc
                 by the operator). The connection-string Secret the operator writes per
                 user (NAME-DB-USER, or connectionStringSecretName) counts as existing,
                 and the user the API connects as through it has readWrite on the API's
                 database (MONGO_DB) and no other role

Prints one line per problem and exits 1 if there is any.
"""

import argparse
import os
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ENUMS = {
    "service type": {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"},
    "protocol": {"TCP", "UDP", "SCTP"},
    "imagePullPolicy": {"Always", "IfNotPresent", "Never"},
    "deployment strategy": {"RollingUpdate", "Recreate"},
    "HPA metric type": {"Resource", "Pods", "Object", "External", "ContainerResource"},
    "HPA target type": {"Utilization", "AverageValue", "Value"},
    "policyTypes": {"Ingress", "Egress"},
    "accessModes": {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"},
    "seccompProfile type": {"RuntimeDefault", "Localhost", "Unconfined"},
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class Binary:
    """What the service binary says a configuration means (`mongo-api --print-config`):
    its ports, the paths each port serves, the memory limit it needs. Asked with the plain
    environment values a container gives it, so the checks follow the code, not a copy of
    its constants."""

    def __init__(self, path: Path):
        if not Path(path).is_file():
            raise SystemExit(f"{path} not found: build the service first (cargo build -p mongo-api)")
        self.path = Path(path)
        self.answers = {}

    def config(self, env: dict) -> dict:
        key = tuple(sorted(env.items()))
        if key not in self.answers:
            run = subprocess.run(
                [str(self.path), "--print-config"], env={"PATH": os.environ.get("PATH", ""), **env},
                capture_output=True, text=True,
            )
            if run.returncode != 0:
                raise SystemExit(f"{self.path} --print-config with {env}: {run.stderr.strip()}")
            self.answers[key] = json.loads(run.stdout)
        return self.answers[key]


class Checker:
    def __init__(self, documents, image, binary):
        self.docs = [d for d in documents if d]
        self.image = image
        self.binary = binary
        self.problems = []

    def binary_config(self, container):
        """What the binary makes of the container's plain environment values."""
        env = {e.get("name"): e.get("value") for e in container.get("env") or [] if e.get("value") is not None}
        return self.binary.config(env)

    def problem(self, check, what):
        self.problems.append(f"{check}: {what}")

    def objects(self, *kinds):
        return [d for d in self.docs if d.get("kind") in kinds]

    def find(self, kind, name, namespace):
        for d in self.objects(kind):
            meta = d.get("metadata", {})
            if meta.get("name") == name and meta.get("namespace") == namespace:
                return d
        return None

    @staticmethod
    def name(doc):
        return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"

    @staticmethod
    def namespace(doc):
        return doc.get("metadata", {}).get("namespace")

    def pod_templates(self):
        for w in self.objects(*WORKLOADS):
            template = w.get("spec", {}).get("template", {})
            yield w, template.get("metadata", {}).get("labels", {}) or {}, template.get("spec", {}) or {}

    @staticmethod
    def containers(pod_spec):
        return (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or [])

    def operator_members(self):
        """The pods the MongoDB operator makes for each MongoDBCommunity: its labels for
        them, and the part of their spec the resource overrides."""
        for cr in self.objects("MongoDBCommunity"):
            template = (cr.get("spec", {}).get("statefulSet") or {}).get("spec", {}).get("template") or {}
            yield cr, {"app": f"{cr['metadata']['name']}-svc"}, template.get("spec") or {}

    def selects_pods(self, selector, namespace):
        """Workloads (or MongoDB replica sets) in `namespace` whose pod labels match a
        matchLabels selector."""
        if not selector:
            return []
        return [
            w for w, labels, _ in [*self.pod_templates(), *self.operator_members()]
            if self.namespace(w) == namespace and all(labels.get(k) == v for k, v in selector.items())
        ]

    def check_enum(self, kind, value, where):
        if value is not None and value not in ENUMS[kind]:
            self.problem("enums", f"{where}: {kind} {value!r} is not one of {sorted(ENUMS[kind])}")

    def run(self):
        self.check_selectors()
        self.check_references()
        self.check_hpa()
        self.check_probes_and_image()
        self.check_mongo_startup_probe()
        self.check_resources()
        self.check_enums()
        self.check_ports()
        self.check_services()
        self.check_shutdown()
        self.check_memory()
        self.check_pod_security()
        self.check_mongodb_community()
        return self.problems

    def check_selectors(self):
        for w, labels, _ in self.pod_templates():
            selector = w.get("spec", {}).get("selector", {}).get("matchLabels", {})
            if not selector:
                self.problem("selectors", f"{self.name(w)} has no matchLabels selector")
            for key, value in selector.items():
                if labels.get(key) != value:
                    self.problem("selectors", f"{self.name(w)} selects {key}={value} but its pods have {key}={labels.get(key)}")
        for s in self.objects("Service"):
            selector = s.get("spec", {}).get("selector")
            if not self.selects_pods(selector, self.namespace(s)):
                self.problem("selectors", f"{self.name(s)} selector {selector} matches no pods")
        for p in self.objects("PodDisruptionBudget"):
            selector = p.get("spec", {}).get("selector", {}).get("matchLabels")
            if not self.selects_pods(selector, self.namespace(p)):
                self.problem("selectors", f"{self.name(p)} selector {selector} matches no pods")
        for n in self.objects("NetworkPolicy"):
            spec = n.get("spec", {})
            selector = spec.get("podSelector", {}).get("matchLabels")
            if not self.selects_pods(selector, self.namespace(n)):
                self.problem("selectors", f"{self.name(n)} podSelector {selector} matches no pods")
            for rule in spec.get("ingress") or []:
                for peer in rule.get("from") or []:
                    peer_selector = (peer.get("podSelector") or {}).get("matchLabels")
                    if peer_selector is not None and not self.selects_pods(peer_selector, self.namespace(n)):
                        self.problem("selectors", f"{self.name(n)} allows from {peer_selector}, which matches no pods")

    def connection_string_secrets(self):
        """The Secrets the operator writes, one per user of each MongoDBCommunity:
        (namespace, name) -> (the resource, the user)."""
        secrets = {}
        for cr in self.objects("MongoDBCommunity"):
            for user in cr.get("spec", {}).get("users") or []:
                name = user.get("connectionStringSecretName") or f"{cr['metadata']['name']}-{user.get('db')}-{user.get('name')}"
                namespace = user.get("connectionStringSecretNamespace") or self.namespace(cr)
                secrets[(namespace, name)] = (cr, user)
        return secrets

    def has_key(self, kind, name, key, namespace, where):
        obj = self.find(kind, name, namespace)
        if obj is None and kind == "Secret" and (namespace, name) in self.connection_string_secrets():
            if key is not None and key not in OPERATOR_SECRET_KEYS:
                self.problem("references", f"{where}: the operator's Secret {name!r} has no key {key!r} (has {sorted(OPERATOR_SECRET_KEYS)})")
            return
        if obj is None:
            self.problem("references", f"{where}: {kind} {name!r} does not exist")
            return
        keys = set((obj.get("data") or {}).keys()) | set((obj.get("stringData") or {}).keys())
        if key is not None and key not in keys:
            self.problem("references", f"{where}: {kind} {name!r} has no key {key!r} (has {sorted(keys)})")

    def check_references(self):
        for w, _, pod in self.pod_templates():
            ns = self.namespace(w)
            for c in self.containers(pod):
                where = f"{self.name(w)} container {c.get('name')}"
                for env in c.get("env") or []:
                    source = env.get("valueFrom") or {}
                    if "secretKeyRef" in source:
                        ref = source["secretKeyRef"]
                        self.has_key("Secret", ref.get("name"), ref.get("key"), ns, f"{where} env {env.get('name')}")
                    if "configMapKeyRef" in source:
                        ref = source["configMapKeyRef"]
                        self.has_key("ConfigMap", ref.get("name"), ref.get("key"), ns, f"{where} env {env.get('name')}")
                for source in c.get("envFrom") or []:
                    if "configMapRef" in source:
                        self.has_key("ConfigMap", source["configMapRef"].get("name"), None, ns, f"{where} envFrom")
                    if "secretRef" in source:
                        self.has_key("Secret", source["secretRef"].get("name"), None, ns, f"{where} envFrom")
            for volume in pod.get("volumes") or []:
                where = f"{self.name(w)} volume {volume.get('name')}"
                if "configMap" in volume:
                    self.has_key("ConfigMap", volume["configMap"].get("name"), None, ns, where)
                if "secret" in volume:
                    self.has_key("Secret", volume["secret"].get("secretName"), None, ns, where)

    def check_hpa(self):
        for h in self.objects("HorizontalPodAutoscaler"):
            ref = h.get("spec", {}).get("scaleTargetRef", {})
            target = self.find(ref.get("kind"), ref.get("name"), self.namespace(h))
            if target is None or ref.get("kind") != "Deployment":
                self.problem("hpa", f"{self.name(h)} targets {ref.get('kind')}/{ref.get('name')}, which is not a Deployment here")
            elif ref.get("apiVersion") != target.get("apiVersion"):
                self.problem("hpa", f"{self.name(h)} targets apiVersion {ref.get('apiVersion')}, the Deployment is {target.get('apiVersion')}")

    def api_containers(self):
        repository = self.image.split(":")[0]
        for w, _, pod in self.pod_templates():
            for c in self.containers(pod):
                if (c.get("image") or "").split(":")[0] == repository:
                    yield w, c

    def check_probes_and_image(self):
        found = False
        for w, c in self.api_containers():
            found = True
            where = f"{self.name(w)} container {c.get('name')}"
            if c.get("image") != self.image:
                self.problem("image", f"{where} runs {c.get('image')!r}, but `just build-image` tags {self.image!r}")
            config = self.binary_config(c)
            listens = config["ports"]
            management_paths = set(config["paths"]["management"])
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
            for variable, number in listens.items():
                if number not in ports.values():
                    self.problem("probes", f"{where} declares ports {sorted(ports.values())}, but the binary listens on {number} ({variable})")
            management = listens["MANAGEMENT_PORT"]
            self.check_scrape_annotation(w, management, management_paths)
            self.check_management_closed(w, ports, management)
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(kind)
                if not probe:
                    continue
                http = probe.get("httpGet")
                if not http:
                    continue
                if http.get("path") not in management_paths:
                    self.problem("probes", f"{where} {kind} path {http.get('path')!r} is not served by the management listener ({sorted(management_paths)})")
                port = http.get("port")
                number = ports.get(port) if isinstance(port, str) else port
                if number is None:
                    self.problem("probes", f"{where} {kind} port {port!r} is not a declared container port")
                elif number != management:
                    self.problem("probes", f"{where} {kind} probes port {number}, the management listener is on {management}")
        if not found:
            self.problem("image", f"no container runs {self.image!r}")
        for w, _, pod in self.pod_templates():
            for c in self.containers(pod):
                image = c.get("image") or ""
                tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else None
                if tag in (None, "latest") and "@sha256:" not in image:
                    self.problem("image", f"{self.name(w)} container {c.get('name')} image {image!r} is not pinned to a tag")

    def check_mongo_startup_probe(self):
        for w, _, pod in self.pod_templates():
            for c in self.containers(pod):
                command = ((c.get("startupProbe") or {}).get("exec") or {}).get("command") or []
                if not command or "mongosh" not in command[0]:
                    continue
                pod_ip = {
                    e.get("name") for e in c.get("env") or []
                    if ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") == "status.podIP"
                }
                host = command[command.index("--host") + 1] if "--host" in command[:-1] else None
                if host is None or host.strip("$()") not in pod_ip:
                    self.problem(
                        "probes",
                        f"{self.name(w)} container {c.get('name')} startup probe asks {host or 'localhost'}, not the pod's "
                        "address ($(VAR) of an env from status.podIP): the image's init phase answers on localhost",
                    )

    def check_scrape_annotation(self, workload, management, management_paths):
        annotations = workload.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true":
            self.problem("probes", f"{self.name(workload)} pods lack prometheus.io/scrape: \"true\"")
        if annotations.get("prometheus.io/port") != str(management):
            self.problem("probes", f"{self.name(workload)} prometheus.io/port {annotations.get('prometheus.io/port')!r} is not the management port {management}")
        if annotations.get("prometheus.io/path", "/metrics") not in management_paths:
            self.problem("probes", f"{self.name(workload)} prometheus.io/path {annotations.get('prometheus.io/path')!r} is not served")

    def check_management_closed(self, workload, ports, management):
        """Other pods must not reach the management listener: a few clients that open all
        its connections and never read would make the liveness probe fail."""
        labels = workload["spec"]["template"]["metadata"].get("labels") or {}
        guarding = [
            n for n in self.objects("NetworkPolicy")
            if self.namespace(n) == self.namespace(workload)
            and "Ingress" in (n["spec"].get("policyTypes") or ["Ingress"])
            and all(labels.get(k) == v for k, v in (n["spec"].get("podSelector", {}).get("matchLabels") or {}).items())
        ]
        if not guarding:
            self.problem("probes", f"no NetworkPolicy isolates {self.name(workload)} pods: any pod can reach the management port {management}")
        for n in guarding:
            for rule in n["spec"].get("ingress") or []:
                numbers = []
                for p in rule.get("ports") or []:
                    port = p.get("port")
                    if isinstance(port, str) and port not in ports:
                        self.problem("probes", f"{self.name(n)} allows port {port!r}, which {self.name(workload)} pods do not declare")
                    numbers.append(ports.get(port) if isinstance(port, str) else port)
                if not rule.get("ports") or management in numbers:
                    self.problem("probes", f"{self.name(n)} lets other pods reach the management port {management}")

    def check_resources(self):
        for w, _, pod in [*self.pod_templates(), *self.operator_members()]:
            for c in self.containers(pod):
                resources = c.get("resources") or {}
                for section in ("requests", "limits"):
                    for resource in ("cpu", "memory"):
                        if resource not in (resources.get(section) or {}):
                            self.problem("resources", f"{self.name(w)} container {c.get('name')} has no {resource} {section[:-1]}")

    def check_enums(self):
        for s in self.objects("Service"):
            spec = s.get("spec", {})
            self.check_enum("service type", spec.get("type", "ClusterIP"), self.name(s))
            for p in spec.get("ports") or []:
                self.check_enum("protocol", p.get("protocol"), self.name(s))
        for w, _, pod in self.pod_templates():
            strategy = (w.get("spec", {}).get("strategy") or {}).get("type")
            self.check_enum("deployment strategy", strategy, self.name(w))
            seccomp = (pod.get("securityContext") or {}).get("seccompProfile") or {}
            self.check_enum("seccompProfile type", seccomp.get("type"), self.name(w))
            for c in self.containers(pod):
                self.check_enum("imagePullPolicy", c.get("imagePullPolicy"), self.name(w))
                for p in c.get("ports") or []:
                    self.check_enum("protocol", p.get("protocol"), self.name(w))
                seccomp = ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
                self.check_enum("seccompProfile type", seccomp, self.name(w))
            for claim in w.get("spec", {}).get("volumeClaimTemplates") or []:
                for mode in claim.get("spec", {}).get("accessModes") or []:
                    self.check_enum("accessModes", mode, self.name(w))
        for h in self.objects("HorizontalPodAutoscaler"):
            for m in h.get("spec", {}).get("metrics") or []:
                self.check_enum("HPA metric type", m.get("type"), self.name(h))
                target = (m.get("resource") or m.get("containerResource") or {}).get("target") or {}
                self.check_enum("HPA target type", target.get("type"), self.name(h))
        for n in self.objects("NetworkPolicy"):
            for t in n.get("spec", {}).get("policyTypes") or []:
                self.check_enum("policyTypes", t, self.name(n))

    def check_ports(self):
        for s in self.objects("Service"):
            spec = s.get("spec", {})
            workloads = self.selects_pods(spec.get("selector"), self.namespace(s))
            declared = set()
            for w in workloads:
                for c in self.containers(w["spec"]["template"]["spec"]):
                    for p in c.get("ports") or []:
                        declared.add(p.get("name"))
                        declared.add(p.get("containerPort"))
            for p in spec.get("ports") or []:
                target = p.get("targetPort", p.get("port"))
                if workloads and target not in declared:
                    self.problem("ports", f"{self.name(s)} targetPort {target!r} is not a port of its pods")
                node_port = p.get("nodePort")
                if node_port is not None and not 30000 <= node_port <= 32767:
                    self.problem("ports", f"{self.name(s)} nodePort {node_port} is outside 30000-32767")

    def check_shutdown(self):
        for w, c in self.api_containers():
            pod = w["spec"]["template"]["spec"]
            env = {e.get("name"): e.get("value") for e in c.get("env") or []}
            drain = int(env.get("SHUTDOWN_GRACE_SECS") or 10)
            pause = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if grace < pause + drain:
                self.problem("shutdown", f"{self.name(w)} terminationGracePeriodSeconds {grace} < preStop {pause} s + drain {drain} s")

    def check_memory(self):
        for w, c in self.api_containers():
            memory = self.binary_config(c)["memory"]
            limit = mebibytes(((c.get("resources") or {}).get("limits") or {}).get("memory"))
            if limit is None or limit < memory["needed_mib"]:
                self.problem(
                    "memory",
                    f"{self.name(w)} memory limit {limit} MiB < REQUEST_MEMORY_MIB {memory['request_memory_mib']} "
                    f"+ {memory['at_rest_mib']:g} at rest + {memory['max_connections']} connections x "
                    f"{memory['per_connection_kib']:g} KiB + {memory['margin_mib']:g} margin = {memory['needed_mib']:g} MiB",
                )

    def check_pod_security(self):
        restricted = {
            n.get("metadata", {}).get("name")
            for n in self.objects("Namespace")
            if (n.get("metadata", {}).get("labels") or {}).get("pod-security.kubernetes.io/enforce") == "restricted"
        }
        for w, _, pod in self.pod_templates():
            if self.namespace(w) not in restricted:
                continue
            where = self.name(w)
            pod_context = pod.get("securityContext") or {}
            for host in ("hostNetwork", "hostPID", "hostIPC"):
                if pod.get(host):
                    self.problem("security", f"{where} uses {host}")
            for volume in pod.get("volumes") or []:
                kinds = set(volume) - {"name"}
                if not kinds <= RESTRICTED_VOLUMES:
                    self.problem("security", f"{where} volume {volume.get('name')} is {sorted(kinds)}")
            for c in self.containers(pod):
                context = c.get("securityContext") or {}
                name = f"{where} container {c.get('name')}"
                non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
                user = context.get("runAsUser", pod_context.get("runAsUser"))
                if non_root is not True or user == 0:
                    self.problem("security", f"{name} may run as root")
                if context.get("allowPrivilegeEscalation") is not False:
                    self.problem("security", f"{name} does not set allowPrivilegeEscalation: false")
                if context.get("privileged"):
                    self.problem("security", f"{name} is privileged")
                capabilities = context.get("capabilities") or {}
                if "ALL" not in (capabilities.get("drop") or []):
                    self.problem("security", f"{name} does not drop ALL capabilities")
                if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
                    self.problem("security", f"{name} adds capabilities {capabilities.get('add')}")
                seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
                if seccomp not in ("RuntimeDefault", "Localhost"):
                    self.problem("security", f"{name} has no RuntimeDefault or Localhost seccomp profile")
                if any(p.get("hostPort") for p in c.get("ports") or []):
                    self.problem("security", f"{name} uses a host port")


    def check_mongodb_community(self):
        for cr, labels, pod in self.operator_members():
            where, spec, ns = self.name(cr), cr.get("spec", {}), self.namespace(cr)
            members = spec.get("members") or 0
            if members < 3 or members % 2 == 0:
                self.problem("mongodb", f"{where} has {members} members: a replica set that survives a member's loss needs an odd number, 3 or more")
            if not re.fullmatch(r"\d+\.\d+\.\d+", str(spec.get("version"))):
                self.problem("mongodb", f"{where} version {spec.get('version')!r} is not a pinned x.y.z")
            for user in spec.get("users") or []:
                ref = user.get("passwordSecretRef") or {}
                self.has_key("Secret", ref.get("name"), ref.get("key", "password"), ns, f"{where} user {user.get('name')} password")
            named = {c.get("name") for c in self.containers(pod)}
            for container in ("mongod", "mongodb-agent"):
                if container not in named:
                    self.problem("resources", f"{where} sets no resources for its {container} container")
            self.check_majority_kept(cr, labels, members)
        self.check_api_user()

    def check_majority_kept(self, cr, labels, members):
        majority = members // 2 + 1
        for p in self.objects("PodDisruptionBudget"):
            spec = p.get("spec", {})
            selector = spec.get("selector", {}).get("matchLabels") or {}
            if self.namespace(p) != self.namespace(cr) or not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            if "minAvailable" in spec and isinstance(spec["minAvailable"], int) and spec["minAvailable"] >= majority:
                return
            if "maxUnavailable" in spec and isinstance(spec["maxUnavailable"], int) and members - spec["maxUnavailable"] >= majority:
                return
            self.problem("mongodb", f"{self.name(p)} lets a drain take {self.name(cr)} below a majority ({majority} of {members})")
            return
        self.problem("mongodb", f"no PodDisruptionBudget keeps a majority of {self.name(cr)}'s members up")

    def check_api_user(self):
        """The API reaching MongoDB through an operator's connection string connects as
        that user: it must be able to write its database, and nothing more."""
        secrets = self.connection_string_secrets()
        for w, c in self.api_containers():
            env = self.environment(w, c)
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef") or {}
                found = secrets.get((self.namespace(w), ref.get("name")))
                if e.get("name") != "MONGODB_URI" or found is None:
                    continue
                cr, user = found
                # Without MONGO_DB the service uses the URI's database: the operator
                # writes the user's own (admin) there.
                database = env.get("MONGO_DB") or user.get("db")
                roles = {(r.get("name"), r.get("db")) for r in user.get("roles") or []}
                where = f"{self.name(w)} connects as {self.name(cr)} user {user.get('name')!r}"
                if ("readWrite", database) not in roles and ("dbOwner", database) not in roles:
                    self.problem("mongodb", f"{where}, which cannot write {database!r} (roles {sorted(roles)})")
                extra = roles - {("readWrite", database)}
                if extra:
                    self.problem("mongodb", f"{where}, which has more than readWrite on {database!r}: {sorted(extra)}")

    def check_services(self):
        for w in self.objects("StatefulSet"):
            name = w.get("spec", {}).get("serviceName")
            governing = self.find("Service", name, self.namespace(w))
            if governing is None or governing.get("spec", {}).get("clusterIP") != "None":
                self.problem("services", f"{self.name(w)} serviceName {name!r} is not a headless Service")
        for w in self.objects("Deployment"):
            for c in self.containers(w["spec"]["template"]["spec"]):
                host = self.environment(w, c).get("MONGO_HOST")
                service = host and self.find("Service", host, self.namespace(w))
                if service and service.get("spec", {}).get("clusterIP") == "None":
                    self.problem("services", f"{self.name(w)} connects to MongoDB by the headless Service {host!r}")

    def environment(self, workload, container):
        """A container's plain environment: its ConfigMaps' data, then its own values."""
        env = {}
        for source in container.get("envFrom") or []:
            ref = source.get("configMapRef")
            found = ref and self.find("ConfigMap", ref.get("name"), self.namespace(workload))
            env.update((found or {}).get("data") or {})
        env.update({e.get("name"): e.get("value") for e in container.get("env") or [] if "value" in e})
        return env


# The keys of the Secret the operator writes for each user (the CRD's service-binding
# annotations name them, as does its documentation).
OPERATOR_SECRET_KEYS = {"connectionString.standard", "connectionString.standardSrv", "username", "password"}

# Volume types the restricted Pod Security Standard allows.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}

def mebibytes(quantity):
    """A Kubernetes memory quantity in MiB (None if absent)."""
    if quantity is None:
        return None
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1000 / 1048576, "M": 1e6 / 1048576, "G": 1e9 / 1048576}
    for suffix, factor in units.items():
        if str(quantity).endswith(suffix):
            return float(str(quantity)[: -len(suffix)]) * factor
    return float(quantity) / 1048576


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered", type=Path)
    parser.add_argument("--image", required=True)
    parser.add_argument("--binary", type=Path, default=Path(__file__).resolve().parent.parent / "target/debug/mongo-api")
    args = parser.parse_args()
    documents = list(yaml.safe_load_all(args.rendered.read_text()))
    checker = Checker(documents, args.image, Binary(args.binary))
    problems = checker.run()
    for p in problems:
        print(f"{args.rendered}: {p}")
    if problems:
        sys.exit(1)
    print(f"{args.rendered}: {len(checker.docs)} objects, all checks passed")


if __name__ == "__main__":
    main()
