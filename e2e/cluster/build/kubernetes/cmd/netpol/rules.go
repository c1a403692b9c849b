package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	// topChain is jumped to from FORWARD; every chain this program owns starts with chainPrefix.
	topChain    = "SPLITSERVE-NETPOL"
	chainPrefix = "SSNP-"
	// allowMark is the packet mark bit a rule sets when it allows a packet into or out of a pod.
	allowMark = "0x200000/0x200000"
	clearMark = "0x0/0x200000"
)

// snapshot is the cluster state the rules are computed from.
type snapshot struct {
	pods       []*corev1.Pod
	namespaces []*corev1.Namespace
	policies   []*networkingv1.NetworkPolicy
}

// ruleset is an iptables-restore body for the filter table and the names of its chains.
type ruleset struct {
	chains []string
	rules  []string
}

func (r *ruleset) chain(name string) { r.chains = append(r.chains, name) }

func (r *ruleset) add(chain string, args ...string) {
	r.rules = append(r.rules, "-A "+chain+" "+strings.Join(args, " "))
}

// restoreInput renders the ruleset for `iptables-restore --noflush`: every chain it names is
// flushed and refilled in one transaction; stale chains of ours are flushed and deleted.
func (r *ruleset) restoreInput(stale []string) string {
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, c := range append(append([]string{}, r.chains...), stale...) {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, rule := range r.rules {
		b.WriteString(rule + "\n")
	}
	for _, c := range stale {
		fmt.Fprintf(&b, "-X %s\n", c)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// render computes the filter rules enforcing every NetworkPolicy for the pods on nodeName.
// Traffic from nodeIP (the kubelet's probes, the host) and packets of established connections
// are never filtered; a pod selected by a policy of a direction gets only what some rule allows.
func render(s snapshot, nodeName, nodeIP string) ruleset {
	var r ruleset
	r.chain(topChain)
	r.add(topChain, "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
	r.add(topChain, "-s", nodeIP+"/32", "-j RETURN")

	nsLabels := map[string]labels.Set{}
	for _, ns := range s.namespaces {
		nsLabels[ns.Name] = labels.Set(ns.Labels)
	}
	live := livePods(s.pods)
	policies := append([]*networkingv1.NetworkPolicy{}, s.policies...)
	sort.Slice(policies, func(i, j int) bool {
		return policies[i].Namespace+"/"+policies[i].Name < policies[j].Namespace+"/"+policies[j].Name
	})
	for _, pod := range live {
		if pod.Spec.NodeName != nodeName {
			continue
		}
		var ingress, egress []*networkingv1.NetworkPolicy
		for _, p := range policies {
			if p.Namespace != pod.Namespace || !selectorMatches(&p.Spec.PodSelector, pod.Labels) {
				continue
			}
			in, out := directions(p)
			if in {
				ingress = append(ingress, p)
			}
			if out {
				egress = append(egress, p)
			}
		}
		key := pod.Namespace + "/" + pod.Name
		if len(ingress) > 0 {
			c := chainName("I", key)
			r.add(topChain, "-d", podIP(pod)+"/32", "-j", c)
			podChain(&r, c, "-s", ingressAllows(ingress, pod, live, nsLabels), key)
		}
		if len(egress) > 0 {
			c := chainName("E", key)
			r.add(topChain, "-s", podIP(pod)+"/32", "-j", c)
			podChain(&r, c, "-d", egressAllows(egress, pod, live, nsLabels), key)
		}
	}
	return r
}

// allow is one allowed peer: a pod address or an address block with exceptions, and a port match
// (empty: every port and protocol).
type allow struct {
	cidr   string
	except []string
	port   string
}

func podChain(r *ruleset, c, peerFlag string, allows []allow, key string) {
	r.chain(c)
	r.add(c, "-j MARK --set-xmark", clearMark)
	for i, a := range allows {
		target := "-j MARK --set-xmark " + allowMark
		if len(a.except) > 0 {
			// exceptions RETURN from a sub-chain before the block's allow rule
			sub := chainName("B", fmt.Sprintf("%s/%s/%d", c, key, i))
			r.chain(sub)
			for _, e := range a.except {
				r.add(sub, peerFlag, e, "-j RETURN")
			}
			r.add(sub, target)
			target = "-j " + sub
		}
		args := []string{}
		if a.cidr != "" {
			args = append(args, peerFlag, a.cidr)
		}
		if a.port != "" {
			args = append(args, a.port)
		}
		r.add(c, append(args, target)...)
	}
	r.add(c, "-m mark ! --mark", allowMark, "-m comment --comment", `"NetworkPolicy of `+key+`"`,
		"-j REJECT --reject-with icmp-port-unreachable")
	r.add(c, "-j MARK --set-xmark", clearMark)
}

func ingressAllows(policies []*networkingv1.NetworkPolicy, pod *corev1.Pod, live []*corev1.Pod, nsLabels map[string]labels.Set) []allow {
	var out []allow
	for _, p := range policies {
		for _, rule := range p.Spec.Ingress {
			ports := resolvePorts(rule.Ports, []*corev1.Pod{pod})
			if ports == nil {
				continue
			}
			for _, port := range ports {
				out = append(out, peers(rule.From, p.Namespace, live, nsLabels, port)...)
			}
		}
	}
	return out
}

// For egress a named port is resolved against each destination pod.
func egressAllows(policies []*networkingv1.NetworkPolicy, pod *corev1.Pod, live []*corev1.Pod, nsLabels map[string]labels.Set) []allow {
	var out []allow
	for _, p := range policies {
		for _, rule := range p.Spec.Egress {
			if !hasNamedPort(rule.Ports) {
				for _, port := range resolvePorts(rule.Ports, nil) {
					out = append(out, peers(rule.To, p.Namespace, live, nsLabels, port)...)
				}
				continue
			}
			for _, a := range peers(rule.To, p.Namespace, live, nsLabels, "") {
				dst := podByIP(live, strings.TrimSuffix(a.cidr, "/32"))
				if dst == nil {
					continue // a named port means nothing outside pods
				}
				for _, port := range resolvePorts(rule.Ports, []*corev1.Pod{dst}) {
					out = append(out, allow{cidr: a.cidr, port: port})
				}
			}
		}
	}
	return out
}

// peers expands a rule's peer list (empty: everyone) into allowed addresses.
func peers(list []networkingv1.NetworkPolicyPeer, namespace string, live []*corev1.Pod, nsLabels map[string]labels.Set, port string) []allow {
	if len(list) == 0 {
		return []allow{{port: port}}
	}
	var out []allow
	for _, peer := range list {
		if peer.IPBlock != nil {
			out = append(out, allow{cidr: peer.IPBlock.CIDR, except: peer.IPBlock.Except, port: port})
			continue
		}
		for _, pod := range live {
			if peer.NamespaceSelector == nil {
				if pod.Namespace != namespace {
					continue
				}
			} else if !selectorMatches(peer.NamespaceSelector, nsLabels[pod.Namespace]) {
				continue
			}
			if peer.PodSelector != nil && !selectorMatches(peer.PodSelector, pod.Labels) {
				continue
			}
			out = append(out, allow{cidr: podIP(pod) + "/32", port: port})
		}
	}
	return out
}

func hasNamedPort(ports []networkingv1.NetworkPolicyPort) bool {
	for _, p := range ports {
		if p.Port != nil && p.Port.Type == intstr.String {
			return true
		}
	}
	return false
}

// resolvePorts turns a rule's ports into iptables matches: [""] for every port, nil when none of
// them resolves (the rule then allows nothing). Named ports are looked up in pods' containers.
func resolvePorts(ports []networkingv1.NetworkPolicyPort, pods []*corev1.Pod) []string {
	if len(ports) == 0 {
		return []string{""}
	}
	var out []string
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		lower := strings.ToLower(string(proto))
		switch {
		case p.Port == nil:
			out = append(out, "-p "+lower)
		case p.Port.Type == intstr.Int:
			dport := fmt.Sprint(p.Port.IntVal)
			if p.EndPort != nil {
				dport += fmt.Sprintf(":%d", *p.EndPort)
			}
			out = append(out, "-p "+lower+" -m "+lower+" --dport "+dport)
		default:
			for _, pod := range pods {
				for _, c := range pod.Spec.Containers {
					for _, cp := range c.Ports {
						if cp.Name == p.Port.StrVal && cp.Protocol == proto {
							out = append(out, fmt.Sprintf("-p %s -m %s --dport %d", lower, lower, cp.ContainerPort))
						}
					}
				}
			}
		}
	}
	return out
}

// directions tells which directions a policy isolates (policyTypes, or as the API defaults it).
func directions(p *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(p.Spec.PolicyTypes) == 0 {
		return true, len(p.Spec.Egress) > 0
	}
	for _, t := range p.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

func selectorMatches(sel *metav1.LabelSelector, set labels.Set) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(set)
}

// livePods are the pods with an IPv4 address on the pod network that may still send or receive.
func livePods(pods []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if ip := podIP(p); ip != "" && !strings.Contains(ip, ":") {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name
	})
	return out
}

func podIP(p *corev1.Pod) string { return p.Status.PodIP }

func podByIP(pods []*corev1.Pod, ip string) *corev1.Pod {
	for _, p := range pods {
		if podIP(p) == ip {
			return p
		}
	}
	return nil
}

// chainName is a stable chain name within iptables' 28-character limit.
func chainName(kind, key string) string {
	sum := sha256.Sum256([]byte(key))
	return chainPrefix + kind + "-" + strings.ToUpper(hex.EncodeToString(sum[:])[:16])
}
