#!/usr/bin/env bash
# Run HERE (Debian, with apt): downloads the Debian packages the GPU machine lacks into .debs/
# (git-ignored). tools/gpu/run.sh unpacks them there with dpkg -x; pass `carry: [".debs"]`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PKGS=(libopencv-core406 libopencv-imgproc406 libopencv-core-dev libopencv-imgproc-dev
      libstb0 libstb-dev libcli11-dev libopenblas-dev libopenblas0 libopenblas0-pthread
      libopenblas-pthread-dev libtbb12 libglx0 libglvnd0 nlohmann-json3-dev libgtest-dev
      libjpeg62-turbo libjpeg62-turbo-dev libjpeg-dev)
mkdir -p .debs
cd .debs
[ -n "${SKIP_APT_UPDATE:-}" ] || apt-get update -qq
apt-get download "${PKGS[@]}"
du -sh .
