#!/bin/sh
# Makes a private CA and one certificate per service of the TLS variant
# (compose.tls.yaml) into /certs, once: a second run keeps what is there.
# Each key is readable by its service's user only (postgres and rabbitmq
# run as uid 999 in their images, Keyward as 65534).
set -eu
cd /certs
[ -s ca.pem ] && { echo "certificates exist; kept"; exit 0; }
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=Keyward compose CA" \
  -keyout ca.key -out ca.pem
for service in api ingestor-1 ingestor-2 rabbitmq postgres; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$service" \
    -keyout "$service.key" -out "$service.csr"
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$service" > "$service.ext"
  openssl x509 -req -in "$service.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days 825 -extfile "$service.ext" -out "$service.pem"
  rm "$service.csr" "$service.ext"
done
chmod 644 ./*.pem
chown 999:999 rabbitmq.key postgres.key
chown 65534:65534 api.key ingestor-1.key ingestor-2.key
echo "certificates made"
