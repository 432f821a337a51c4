#!/usr/bin/env bash
# Installs the independent tools the integration tests check against, when missing (Debian packages):
# kcat for the cross-client checks, chromium (headless) for the status page test.
set -euo pipefail
missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  sudo=()
elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "not installed and cannot be installed here: ${missing[*]}; the tests that need them will be skipped" \
    "(and fail in CI)" >&2
  exit 0
fi
echo "installing ${missing[*]} (Debian packages) for the integration tests" >&2
"${sudo[@]}" apt-get update -qq >/dev/null
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
