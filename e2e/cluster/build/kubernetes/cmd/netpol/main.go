// Command netpol enforces Kubernetes NetworkPolicies (ingress and egress) for the pods of one node
// whose pod network is a Linux bridge with bridge netfilter on: it watches pods, namespaces and
// policies and keeps iptables filter chains, jumped to first from FORWARD, in step with them.
// Traffic from the node's own address and packets of established connections pass; a packet a
// policy does not allow is rejected (the sender sees "connection refused").
//
// Usage:
//
//	netpol --kubeconfig FILE --node-name NAME --node-ip ADDRESS [--resync 60s]
//	netpol --cleanup    removes the FORWARD jump and every chain it made
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the identity that lists and watches pods, namespaces and NetworkPolicies")
	nodeName := flag.String("node-name", "", "the node whose pods are isolated")
	nodeIP := flag.String("node-ip", "", "the node's address on the pod network; traffic from it is always allowed")
	resync := flag.Duration("resync", time.Minute, "how often the rules are rewritten even without a change")
	cleanup := flag.Bool("cleanup", false, "remove the rules and exit")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	if *cleanup {
		if err := removeAll(); err != nil {
			log.Fatalf("cleanup: %v", err)
		}
		return
	}
	if *kubeconfig == "" || *nodeName == "" || *nodeIP == "" {
		fmt.Fprintln(os.Stderr, "netpol: --kubeconfig, --node-name and --node-ip are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *kubeconfig, *nodeName, *nodeIP, *resync); err != nil {
		log.Fatalf("netpol: %v", err)
	}
}

func run(ctx context.Context, kubeconfig, nodeName, nodeIP string, resync time.Duration) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	pods := factory.Core().V1().Pods()
	namespaces := factory.Core().V1().Namespaces()
	policies := factory.Networking().V1().NetworkPolicies()

	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	}
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), namespaces.Informer(), policies.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync", typ)
		}
	}
	log.Printf("watching pods, namespaces and NetworkPolicies for node %s (%s)", nodeName, nodeIP)

	ticker := time.NewTicker(resync)
	defer ticker.Stop()
	last := ""
	for {
		var s snapshot
		var errs []error
		var e error
		s.pods, e = pods.Lister().List(labels.Everything())
		errs = append(errs, e)
		s.namespaces, e = namespaces.Lister().List(labels.Everything())
		errs = append(errs, e)
		s.policies, e = policies.Lister().List(labels.Everything())
		errs = append(errs, e)
		for _, e := range errs {
			if e != nil {
				return e
			}
		}
		rs := render(s, nodeName, nodeIP)
		text, err := apply(rs)
		if err != nil {
			log.Printf("applying rules failed (retried on the next change or in %v): %v", resync, err)
		} else if text != last {
			log.Printf("rules applied: %d policies, %d chains, %d rules", len(s.policies), len(rs.chains), len(rs.rules))
			last = text
		}
		select {
		case <-ctx.Done():
			log.Printf("stopping; the rules stay in force")
			return nil
		case <-changed:
			// let a burst of events settle into one rewrite
			time.Sleep(50 * time.Millisecond)
		case <-ticker.C:
		}
	}
}

// apply replaces our chains in one iptables-restore transaction and makes sure FORWARD jumps to
// them first; it returns the body it applied.
func apply(rs ruleset) (string, error) {
	existing, err := ownChains()
	if err != nil {
		return "", err
	}
	keep := map[string]bool{}
	for _, c := range rs.chains {
		keep[c] = true
	}
	var stale []string
	for _, c := range existing {
		if !keep[c] {
			stale = append(stale, c)
		}
	}
	body := rs.restoreInput(stale)
	if out, err := runInput(body, "iptables-restore", "-w", "--noflush"); err != nil {
		return "", fmt.Errorf("iptables-restore: %v: %s", err, out)
	}
	if _, err := runInput("", "iptables", "-w", "-C", "FORWARD", "-j", topChain); err != nil {
		if out, err := runInput("", "iptables", "-w", "-I", "FORWARD", "1", "-j", topChain); err != nil {
			return "", fmt.Errorf("hooking FORWARD: %v: %s", err, out)
		}
	}
	return strings.Join(rs.rules, "\n"), nil
}

// ownChains lists the filter chains this program made.
func ownChains() ([]string, error) {
	out, err := runInput("", "iptables", "-w", "-S")
	if err != nil {
		return nil, fmt.Errorf("iptables -S: %v: %s", err, out)
	}
	var chains []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "-N" && (f[1] == topChain || strings.HasPrefix(f[1], chainPrefix)) {
			chains = append(chains, f[1])
		}
	}
	return chains, nil
}

func removeAll() error {
	for {
		if _, err := runInput("", "iptables", "-w", "-D", "FORWARD", "-j", topChain); err != nil {
			break
		}
	}
	chains, err := ownChains()
	if err != nil || len(chains) == 0 {
		return err
	}
	body := (&ruleset{}).restoreInput(chains)
	if out, err := runInput(body, "iptables-restore", "-w", "--noflush"); err != nil {
		return fmt.Errorf("iptables-restore: %v: %s", err, out)
	}
	return nil
}

func runInput(input string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(input)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
