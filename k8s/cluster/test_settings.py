"""The test cluster runs the Kubernetes users get: the versions pinned in three places agree.

    python -m unittest test_settings   (from k8s/cluster; no cluster needed)
"""

import re
import unittest

import settings as s


def go_mod():
    return (s.HERE / "kube" / "go.mod").read_text()


class VersionsAgree(unittest.TestCase):
    def test_the_cluster_runs_the_kubernetes_just_deploy_asks_minikube_for(self):
        deploy = (s.ROOT / "k8s" / "deploy.sh").read_text()
        self.assertEqual(re.search(r"^KUBERNETES_VERSION=(\S+)$", deploy, re.M).group(1), s.KUBERNETES_VERSION)

    def test_the_node_binary_builds_that_kubernetes_and_every_staging_module_at_its_release(self):
        mod = go_mod()
        self.assertEqual(re.search(r"^\tk8s.io/kubernetes (\S+)$", mod, re.M).group(1), s.KUBERNETES_VERSION)
        staging = re.findall(r"^\s+(k8s.io/\S+) => \1 (\S+)$", mod, re.M)
        self.assertGreater(len(staging), 20)
        release = "v0." + s.KUBERNETES_VERSION.split(".", 1)[1]
        self.assertEqual({version for _, version in staging}, {release})

    def test_etcd_is_the_one_kubernetes_resolves_to(self):
        self.assertRegex(go_mod(), rf"\n\tgo.etcd.io/etcd/server/v3 v{re.escape(s.ETCD_VERSION)}\b")


if __name__ == "__main__":
    unittest.main()
