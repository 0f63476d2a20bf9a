#!/usr/bin/env bash
# Installs what the Janus baseline needs from Debian's archive: janus 1.1.2 (VideoRoom plugin,
# WebSocket transport) and gcc for the loopback shim (janus/noloopflag.c). Needs root.
# Debian's package enables a systemd unit; nothing here starts it (run-janus.sh runs Janus
# with its own config on loopback).
set -euo pipefail
need=()
command -v janus >/dev/null 2>&1 || need+=(janus)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
if [[ ${#need[@]} -eq 0 ]]; then
    echo "install-janus.sh: janus and gcc already installed ($(janus --version 2>/dev/null | sed -n 's/^Janus version: //p'))"
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "install-janus.sh: needs root to apt-get install ${need[*]}" >&2
    exit 1
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
# Not `janus --version | head -1`: with pipefail, janus dying of SIGPIPE when head has
# read its line fails the install.
version="$(janus --version 2>/dev/null || true)"
echo "${version%%$'\n'*}"
