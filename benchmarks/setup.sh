#!/usr/bin/env bash
# Install what `make bench` needs and is not in the project's dependencies:
#   nginx, aria2c, curl, openssl and GNU time (apt-get; time measures each tool's peak RSS),
#   and hf_transfer (pip, into the venv given as $1); compiles asyncfetch to bytecode.
# Idempotent: installs only what is missing. Usage: bash benchmarks/setup.sh [VENV=.venv]
set -euo pipefail

venv="${1:-.venv}"
python="$venv/bin/python"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
if ! have nginx; then
    # Debian ships a small nginx-light; distributions without it have plain nginx.
    if apt-cache show nginx-light >/dev/null 2>&1; then missing+=(nginx-light); else missing+=(nginx); fi
fi
have aria2c || missing+=(aria2)
have curl || missing+=(curl)
have openssl || missing+=(openssl)
[ -x /usr/bin/time ] || missing+=(time)

if [ "${#missing[@]}" -gt 0 ]; then
    echo "benchmarks/setup.sh: apt-get install ${missing[*]}" >&2
    # The nginx package would start a system service on port 80; the benchmark runs its own
    # nginx on free loopback ports, so forbid service starts while installing (unless the
    # machine already has a policy).
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod +x "$policy"
        trap '$sudo rm -f "$policy"' EXIT
    fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

if ! "$python" -c "import hf_transfer" >/dev/null 2>&1; then
    echo "benchmarks/setup.sh: pip install hf_transfer into $venv" >&2
    "$python" -m pip install -q hf_transfer
fi

# Time asyncfetch as installed, with its bytecode: pip compiles a regular install (and torch's
# files) at install time, but an editable install writes asyncfetch's .pyc files only on first
# import, and never where PYTHONDONTWRITEBYTECODE is set. Compiling on every import costs each
# run ~0.1 s of start-up that no user pays.
"$python" -m compileall -q asyncfetch
