# Certificates and kubeconfigs of the local cluster (one CA, one client certificate per component).
# shellcheck shell=bash

# issue_cert NAME SUBJECT EXTENSIONS [CA]: an EC key and a certificate signed by CA (default: the
# cluster CA, `ca`).
issue_cert() {
  local name=$1 subject=$2 ext=$3 ca=${4:-ca}
  [[ -f $SS_PKI/$name.crt ]] && return 0
  openssl ecparam -name prime256v1 -genkey -noout -out "$SS_PKI/$name.key" 2>/dev/null
  openssl req -new -key "$SS_PKI/$name.key" -subj "$subject" -out "$SS_PKI/$name.csr"
  openssl x509 -req -in "$SS_PKI/$name.csr" -CA "$SS_PKI/$ca.crt" -CAkey "$SS_PKI/$ca.key" \
    -CAcreateserial -days 30 -sha256 -out "$SS_PKI/$name.crt" -extfile <(printf '%s\n' "$ext") 2>/dev/null
  rm -f "$SS_PKI/$name.csr"
}

client_ext='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'

# make_ca NAME CN: a self-signed EC certificate authority.
make_ca() {
  local name=$1 cn=$2
  [[ -f $SS_PKI/$name.crt ]] && return 0
  openssl ecparam -name prime256v1 -genkey -noout -out "$SS_PKI/$name.key" 2>/dev/null
  openssl req -x509 -new -key "$SS_PKI/$name.key" -subj "/CN=$cn" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$SS_PKI/$name.crt"
}

make_pki() {
  mkdir -p "$SS_PKI"; chmod 700 "$SS_PKI"
  make_ca ca splitserve-local-ca
  # the aggregation layer: the API server proxies to extension API servers (metrics-server) as
  # front-proxy-client, whose certificate only the separate front-proxy CA signs
  make_ca front-proxy-ca splitserve-front-proxy-ca
  issue_cert front-proxy-client "/CN=front-proxy-client" "$client_ext" front-proxy-ca
  local d=$SS_CLUSTER_DOMAIN
  issue_cert apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$SS_NODE_IP,IP:$SS_API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$d"
  issue_cert kubelet-serving "/CN=$SS_NODE_NAME" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$SS_NODE_IP,DNS:$SS_NODE_NAME"
  issue_cert admin "/O=system:masters/CN=splitserve-admin" "$client_ext"
  issue_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client_ext"
  issue_cert kubelet "/O=system:nodes/CN=system:node:$SS_NODE_NAME" "$client_ext"
  issue_cert controller-manager "/CN=system:kube-controller-manager" "$client_ext"
  issue_cert scheduler "/CN=system:kube-scheduler" "$client_ext"
  issue_cert kube-proxy "/CN=system:kube-proxy" "$client_ext"
  issue_cert coredns "/CN=system:splitserve:coredns" "$client_ext"
  issue_cert metrics-server "/CN=$SS_METRICS_SERVER_USER" "$client_ext"
  issue_cert netpol "/CN=$SS_NETPOL_USER" "$client_ext"
  issue_cert metrics-server-serving "/CN=metrics-server" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$SS_NODE_IP,DNS:metrics-server.kube-system.svc,DNS:metrics-server.kube-system.svc.$d"
  if [[ ! -f $SS_PKI/sa.key ]]; then
    openssl genrsa -out "$SS_PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$SS_PKI/sa.key" -pubout -out "$SS_PKI/sa.pub" 2>/dev/null
  fi
  local who
  for who in admin kubelet controller-manager scheduler kube-proxy coredns metrics-server netpol; do
    write_kubeconfig "$who" "$SS_STATE/$who.kubeconfig"
  done
}

# write_kubeconfig CERT_NAME PATH: a kubeconfig for the client certificate CERT_NAME.
write_kubeconfig() {
  local name=$1 path=$2
  cat >"$path.tmp" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: splitserve
  cluster:
    server: https://$SS_NODE_IP:$SS_API_PORT
    certificate-authority-data: $(base64 -w0 <"$SS_PKI/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 <"$SS_PKI/$name.crt")
    client-key-data: $(base64 -w0 <"$SS_PKI/$name.key")
contexts:
- name: splitserve
  context: {cluster: splitserve, user: $name}
current-context: splitserve
KUBECONFIG
  chmod 600 "$path.tmp"; mv "$path.tmp" "$path"
}
