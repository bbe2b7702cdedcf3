#!/bin/sh
# Installs the Debian 12 packages haproxy-connect needs to build, test, bench and run the demo.
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -eu

PKGS="build-essential pkg-config clang libclang-rt-14-dev
libev-dev libcurl4-openssl-dev libssl-dev libjansson-dev libmsgpack-dev libcmocka-dev
haproxy python3 python3-pytest python3-cryptography
iperf3 wrk redis-server iproute2 procps"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "haproxy-connect needs these Debian packages:$missing" >&2
	echo "run as root:  apt-get update && apt-get install -y$missing" >&2
	exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# redis-server from Debian starts a system instance; the demo runs its own on a free port.
apt-get install -y -qq --no-install-recommends $missing >/dev/null
