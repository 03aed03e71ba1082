#!/usr/bin/env bash
# Provisions the Vagrant VM (Ubuntu 22.04, run as root by `vagrant up`): the p4lang
# packages (bmv2 with simple_switch_grpc, p4c, PI), then the same set-up as everywhere
# else, scripts/setup.sh (what `make setup` runs), from the synced repository.
#
#   usage: vm-provision.sh [REPO_DIR]     (default /home/vagrant/flexnet-lab)
set -euo pipefail

REPO="${1:-/home/vagrant/flexnet-lab}"
export DEBIAN_FRONTEND=noninteractive

. /etc/os-release
OBS="https://download.opensuse.org/repositories/home:/p4lang/xUbuntu_${VERSION_ID}"

apt-get update
apt-get install -y --no-install-recommends ca-certificates curl gnupg

# The p4lang OBS repository (home:p4lang) and its signing key.
echo "deb ${OBS}/ /" > /etc/apt/sources.list.d/home:p4lang.list
curl -fsSL "${OBS}/Release.key" | gpg --dearmor --yes -o /etc/apt/trusted.gpg.d/home_p4lang.gpg

apt-get update
apt-get install -y --no-install-recommends p4lang-bmv2 p4lang-p4c p4lang-pi

bash "$REPO/scripts/setup.sh"

command -v simple_switch_grpc simple_switch p4c-bm2-ss
