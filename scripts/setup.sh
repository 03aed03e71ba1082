#!/usr/bin/env bash
# FlexNet Lab set-up: system packages, then the project's venv. Idempotent; run it again
# at any time. Works as root (no sudo needed) or as a user with sudo.
#
#   bash scripts/setup.sh        (or: make setup)
#
# Debian 12 is the reference machine; Ubuntu (the Vagrant VM, see Vagrantfile) is handled
# too. bmv2/p4c are not installed here: they are not packaged for Debian; the VM gets them
# from the p4lang packages (scripts/vm-provision.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "setup.sh: run as root (or install sudo): it installs system packages" >&2
    exit 1
fi

. /etc/os-release
OS_ID="${ID:-debian}"

# --no-install-recommends matters: mininet recommends openvswitch-switch, which cannot run
# without the Open vSwitch kernel module (the lab does not use OVS).
packages=(mininet bridge-utils iputils-ping iperf3 ethtool python3-bpfcc clang libbpf-dev tcpdump
          python3-venv python3-pip iproute2 procps psmisc)

"${SUDO[@]}" apt-get update

if [ "$OS_ID" = "ubuntu" ]; then
    # Headers of the running kernel (bcc uses /lib/modules/$(uname -r)/build).
    packages+=("linux-headers-$(uname -r)")
    if apt-cache show bpftool >/dev/null 2>&1; then
        packages+=(bpftool)
    else
        # Ubuntu ships bpftool in linux-tools (the wrapper in -common runs the one for the
        # running kernel).
        packages+=(linux-tools-common linux-tools-generic)
        if apt-cache show "linux-tools-$(uname -r)" >/dev/null 2>&1; then
            packages+=("linux-tools-$(uname -r)")
        fi
    fi
else
    packages+=(linux-headers-amd64 bpftool)
fi

# The venv must be made by the distribution's Python so that it sees the distribution's
# bcc and mininet modules (--system-site-packages). The project needs Python >= 3.11:
# Debian 12's python3 is 3.11; Ubuntu 22.04's is 3.10, so there python3.11 is added.
PYTHON=/usr/bin/python3
if [ "$OS_ID" = "ubuntu" ] && ! /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    packages+=(python3.11 python3.11-venv)
    PYTHON=/usr/bin/python3.11
fi

"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${packages[@]}"

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv --system-site-packages .venv
fi
.venv/bin/pip install -q -e '.[test,bmv2]'
# p4runtime-shell (the prompt's `p4sh`) pins ipython 7.31 and jedi 0.17.2, which predate
# this Python; what it really uses is IPython's start_ipython and Prompts (IPython 8 has
# both) and p4runtime 1.4.1 + protobuf < 3.21, which the bmv2 extra pins already. So it
# goes in without its pins, and IPython 8 beside it: protobuf and p4runtime stay as they are.
.venv/bin/pip install -q --no-deps 'p4runtime-shell==0.0.6'
.venv/bin/pip install -q 'ipython>=8.10,<9'

echo "checking the venv: bcc, mininet, pyroute2"
if ! .venv/bin/python -c 'import bcc, mininet, pyroute2; print("ok: bcc, mininet, pyroute2 import from .venv")'; then
    echo "setup.sh: .venv cannot import bcc/mininet/pyroute2; if .venv was made by another" \
         "Python (e.g. pyenv), remove it and run this script again" >&2
    exit 1
fi
