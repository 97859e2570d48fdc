#!/usr/bin/env bash
# System packages the test suite needs beyond Python: Debian's chromium and chromium-driver
# (the browser test drives them headless). Installs them when missing and we are root on Debian.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: chromium/chromedriver missing and cannot apt-get install them here;" \
       "the browser test will be skipped (it fails in CI)." >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
