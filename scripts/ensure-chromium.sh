#!/bin/sh
# Make sure Debian's chromium is installed: the dashboard's browser test and scripts/dashboard_screenshot.py
# drive it through Playwright (never `playwright install`, which downloads a browser build of its own).
# Exits non-zero when chromium is missing and cannot be installed (no apt-get, not root and no sudo).
set -eu
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium not found, and no apt-get to install it" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"  # -n: a test run must never stop at a password prompt
else
  echo "chromium not found: install it as root (apt-get install chromium)" >&2
  exit 1
fi
echo "chromium not found: installing it (apt-get)" >&2
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null 2>&1
