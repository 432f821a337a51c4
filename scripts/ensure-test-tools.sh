#!/usr/bin/env bash
# Installs the independent tools the integration tests cross-check against (kcat), when missing.
set -euo pipefail
if command -v kcat >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "installing kcat (Debian package) for the cross-client tests" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo apt-get update -qq >/dev/null
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null
else
  echo "kcat is not installed and cannot be installed here; the kcat cross-check will be skipped" >&2
fi
