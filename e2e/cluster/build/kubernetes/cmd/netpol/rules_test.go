package main

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const node = "n1"

func pod(ns, name, ip string, labels map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
}

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{"kubernetes.io/metadata.name": name}}}
}

func rulesOf(r ruleset, chain string) []string {
	var out []string
	for _, rule := range r.rules {
		if strings.HasPrefix(rule, "-A "+chain+" ") {
			out = append(out, strings.TrimPrefix(rule, "-A "+chain+" "))
		}
	}
	return out
}

func contains(rules []string, want string) bool {
	for _, r := range rules {
		if r == want {
			return true
		}
	}
	return false
}

func TestUnselectedPodsAreNotIsolated(t *testing.T) {
	s := snapshot{pods: []*corev1.Pod{pod("a", "p", "10.0.0.2", nil)}, namespaces: []*corev1.Namespace{namespace("a")}}
	r := render(s, node, "10.0.0.1")
	if len(r.chains) != 1 || len(rulesOf(r, topChain)) != 2 {
		t.Fatalf("want only the top chain with its two pass rules, got %v %v", r.chains, r.rules)
	}
}

func TestIngressFromPodsOfNamedNamespaceOnNamedPort(t *testing.T) {
	tcp := corev1.ProtocolTCP
	metrics := intstr.FromString("metrics")
	dst := pod("a", "dst", "10.0.0.2", map[string]string{"app": "w"},
		corev1.ContainerPort{Name: "metrics", ContainerPort: 9090, Protocol: tcp})
	mon := pod("mon", "prom", "10.0.0.3", nil)
	other := pod("b", "x", "10.0.0.4", nil)
	policy := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "p"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "w"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
					MatchLabels: map[string]string{"kubernetes.io/metadata.name": "mon"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &metrics}},
			}},
		},
	}
	s := snapshot{pods: []*corev1.Pod{dst, mon, other},
		namespaces: []*corev1.Namespace{namespace("a"), namespace("b"), namespace("mon")},
		policies:   []*networkingv1.NetworkPolicy{policy}}
	r := render(s, node, "10.0.0.1")
	chain := chainName("I", "a/dst")
	if !contains(rulesOf(r, topChain), "-d 10.0.0.2/32 -j "+chain) {
		t.Fatalf("dst not isolated: %v", r.rules)
	}
	rules := rulesOf(r, chain)
	if !contains(rules, "-s 10.0.0.3/32 -p tcp -m tcp --dport 9090 -j MARK --set-xmark "+allowMark) {
		t.Fatalf("monitoring pod not allowed on the resolved named port: %v", rules)
	}
	for _, rule := range rules {
		if strings.Contains(rule, "10.0.0.4") {
			t.Fatalf("pod of another namespace allowed: %v", rule)
		}
	}
	if !strings.Contains(rules[len(rules)-2], "REJECT") {
		t.Fatalf("no reject at the end: %v", rules)
	}
}

func TestEgressDenyAllButIPBlockWithException(t *testing.T) {
	src := pod("a", "src", "10.0.0.2", map[string]string{"app": "c"})
	policy := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "p"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
					CIDR: "10.1.0.0/16", Except: []string{"10.1.2.0/24"}}}},
			}},
		},
	}
	s := snapshot{pods: []*corev1.Pod{src}, namespaces: []*corev1.Namespace{namespace("a")},
		policies: []*networkingv1.NetworkPolicy{policy}}
	r := render(s, node, "10.0.0.1")
	if contains(rulesOf(r, topChain), "-d 10.0.0.2/32 -j "+chainName("I", "a/src")) {
		t.Fatal("an egress-only policy isolated ingress")
	}
	chain := chainName("E", "a/src")
	if !contains(rulesOf(r, topChain), "-s 10.0.0.2/32 -j "+chain) {
		t.Fatalf("src egress not isolated: %v", r.rules)
	}
	rules := rulesOf(r, chain)
	var sub string
	for _, rule := range rules {
		if strings.HasPrefix(rule, "-d 10.1.0.0/16 -j ") {
			sub = strings.TrimPrefix(rule, "-d 10.1.0.0/16 -j ")
		}
	}
	if sub == "" {
		t.Fatalf("no jump for the block: %v", rules)
	}
	subRules := rulesOf(r, sub)
	if len(subRules) != 2 || subRules[0] != "-d 10.1.2.0/24 -j RETURN" ||
		subRules[1] != "-j MARK --set-xmark "+allowMark {
		t.Fatalf("exception not returned before the allow: %v", subRules)
	}
}

func TestStaleChainsAreDeletedAfterFlush(t *testing.T) {
	r := render(snapshot{}, node, "10.0.0.1")
	body := r.restoreInput([]string{"SSNP-I-OLD"})
	if !strings.Contains(body, ":SSNP-I-OLD - [0:0]\n") || !strings.HasSuffix(body, "-X SSNP-I-OLD\nCOMMIT\n") {
		t.Fatalf("stale chain not flushed and deleted:\n%s", body)
	}
}

func TestTerminalAndHostNetworkPodsAreIgnored(t *testing.T) {
	done := pod("a", "done", "10.0.0.5", nil)
	done.Status.Phase = corev1.PodSucceeded
	host := pod("a", "host", "10.0.0.1", nil)
	host.Spec.HostNetwork = true
	if got := livePods([]*corev1.Pod{done, host, pod("a", "live", "10.0.0.6", nil)}); len(got) != 1 || got[0].Name != "live" {
		t.Fatalf("live pods: %v", got)
	}
}
