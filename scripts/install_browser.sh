#!/usr/bin/env bash
# Install the system Chromium used by the real-browser tests (tests/browser).
# Idempotent: does nothing but print the version when chromium (and its
# driver) are already installed.
# Uses Debian packages only; never runs `playwright install` (no browser
# downloads are possible on this machine).
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [ ! -x "$CHROMIUM" ] || [ ! -x "$CHROMEDRIVER" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install_browser.sh: need root or sudo to apt-get install chromium" >&2
        exit 1
    fi
    echo "install_browser.sh: chromium/chromedriver missing; installing chromium + chromium-driver via apt-get"
    export DEBIAN_FRONTEND=noninteractive
    ${SUDO[@]+"${SUDO[@]}"} apt-get update
    ${SUDO[@]+"${SUDO[@]}"} apt-get install -y chromium chromium-driver
fi

if [ ! -x "$CHROMIUM" ]; then
    echo "install_browser.sh: $CHROMIUM still missing after install" >&2
    exit 1
fi

# The Debian wrapper script may print harmless shell warnings on stderr.
"$CHROMIUM" --version 2>/dev/null || /usr/lib/chromium/chromium --version
