#!/usr/bin/env bash
# The main job, shown end to end in a temporary state directory: a server, peers, a phone's QR
# code and the server's wg-quick config. Nothing outside the temporary directory is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
wgadm=${WGADM:-target/release/wgadm}
[ -x "$wgadm" ] || cargo build --release --locked
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
export WGADM_STATE=$state/wgadm

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
hide_keys() { sed -E 's/^(PrivateKey|PresharedKey) = .*/\1 = <secret: shown only to its owner>/'; }

step "$wgadm" init --endpoint vpn.example.com --dns 192.168.1.1
step "$wgadm" peer add alice-laptop
step "$wgadm" peer add bob-phone --preshared-key
step "$wgadm" peer add carol --public-key "$(wg genkey | wg pubkey)" --access 192.168.1.10/32
step "$wgadm" peer disable carol
step "$wgadm" peer list
printf '\n\033[1m$ %s\033[0m\n' "$wgadm peer config alice-laptop   (secrets masked here)"
"$wgadm" peer config alice-laptop | hide_keys
step "$wgadm" peer qr bob-phone
printf '\n\033[1m$ %s\033[0m\n' "$wgadm render   (secrets masked here)"
"$wgadm" render | hide_keys
step "$wgadm" check
echo
echo "demo: done; the temporary state in $state is removed"
