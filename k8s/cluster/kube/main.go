// Command kube is the test cluster's node in one binary: etcd, the five Kubernetes
// components and kubeadm, each chosen by the first argument (`kube kubelet --config=...`),
// the way hyperkube and k3s package them. One binary links once; seven would link the
// same thousands of packages seven times, which on two cores is minutes of every cold
// build. Each component is the upstream command at the version pinned in go.mod, with the
// blank imports its own main package has, and sees the arguments its own binary would.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubeadm "k8s.io/kubernetes/cmd/kubeadm/app"
	kubeadmutil "k8s.io/kubernetes/cmd/kubeadm/app/util"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"

	// CronJob time zones, as kube-apiserver and kube-controller-manager embed them.
	_ "time/tzdata"
)

var components = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":                 kubelet.NewKubeletCommand,
	"kube-proxy":              proxy.NewProxyCommand,
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	// From here on the component is argv[0], as if it were its own binary.
	os.Args = os.Args[1:]
	switch name := os.Args[0]; name {
	case "etcd":
		etcdmain.Main(os.Args)
	case "kubeadm":
		kubeadmutil.CheckErr(kubeadm.Run())
	default:
		command, ok := components[name]
		if !ok {
			usage()
		}
		os.Exit(cli.Run(command()))
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kube etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|kubeadm [flags]")
	os.Exit(2)
}
