#!/usr/bin/env bash
# Installs the Debian packages the test suite runs for real (e.g. the xmlsec1 verifier, redis-server), where missing.
# Idempotent and quiet when everything is there; `make test` and `.ci/run` call it.
set -euo pipefail
needed=()
while read -r command package; do
  command -v "$command" >/dev/null 2>&1 || needed+=("$package")
done <<'LIST'
openssl openssl
xmlsec1 xmlsec1
dnsmasq dnsmasq
redis-server redis-server
softhsm2-util softhsm2
/usr/lib/postgresql/15/bin/initdb postgresql-15
LIST
if [ ${#needed[@]} -gt 0 ]; then
  echo "installing Debian packages: ${needed[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${needed[@]}" >/dev/null
fi
