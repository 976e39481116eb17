#!/usr/bin/env bash
# Makes the TLS material for TF Serving's mutual TLS (base/tf-serving/envoy.yaml) into DIR, with openssl alone:
#   ca.crt, ca.key                          a CA for this deployment (keep ca.key off the cluster)
#   tf-serving.crt, tf-serving.key          Envoy's server certificate, for the names the pipelines dial
#   flink-taskmanager.crt, .key             the TaskManagers' client certificate: URI SAN
#                                           spiffe://NAMESPACE/flink-taskmanager, the one identity Envoy lets in
# Then create the two Secrets the pods mount (the deploy README, "TLS for TF Serving"). Certificates last 90 days:
# run it again with the same DIR to renew them under the same CA.
#   deploy/flink-on-k8s/tls/make-certs.sh DIR [NAMESPACE]
set -euo pipefail
DIR=${1:?usage: make-certs.sh DIR [NAMESPACE]}
NS=${2:-marketplace-inference}
mkdir -p "$DIR" && cd "$DIR"
umask 077

new_key() {  # $1: name; a P-256 key and a signing request
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj "/CN=$1" -keyout "$1.key" -out "$1.csr" 2>/dev/null
}
sign() {  # $1: name, $2: subjectAltName, $3: extendedKeyUsage
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 90 -out "$1.crt" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$2" "$3") 2>/dev/null
  rm -f "$1.csr"
}

if [ ! -f ca.key ]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 365 -subj "/CN=$NS CA" \
    -keyout ca.key -out ca.crt 2>/dev/null
fi
new_key tf-serving
sign tf-serving "DNS:tf-serving,DNS:tf-serving.$NS.svc,DNS:tf-serving-pods,DNS:tf-serving-pods.$NS.svc" serverAuth
new_key flink-taskmanager
sign flink-taskmanager "URI:spiffe://$NS/flink-taskmanager" clientAuth
echo "TLS material in $DIR: ca.crt, tf-serving.{crt,key}, flink-taskmanager.{crt,key}"
