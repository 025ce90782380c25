#!/usr/bin/env bash
# Installs mmattn's build dependencies from Debian packages (run as root on Debian 12 / Ubuntu 24.04).
# OpenCV: only core + imgproc (12 packages; libopencv-dev would pull 249).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(cmake ninja-build g++ ccache pkg-config
      libopencv-core-dev libopencv-imgproc-dev libstb-dev libpng-dev nlohmann-json3-dev libgtest-dev
      libsentencepiece-dev libopenblas-dev libcli11-dev libjpeg-dev)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "dependencies ok"
