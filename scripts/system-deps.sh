#!/usr/bin/env bash
# System packages the test suite needs beyond Python, installed when missing and we are root on
# Debian: chromium and chromium-driver (the browser test drives them headless), and the
# handwriting-style fonts the robustness suite types digits in (training/pipeline/robustness.py).
set -euo pipefail
FONTS=(fonts-dkg-handwriting fonts-humor-sans fonts-comic-neue fonts-breip)
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
for font in "${FONTS[@]}"; do
  dpkg-query -W -f='${Status}' "$font" 2>/dev/null | grep -q "install ok installed" || missing+=("$font")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: missing ${missing[*]} and cannot apt-get install them here; the browser test" \
       "and the robustness suite's font category need them (CI installs them)." >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
