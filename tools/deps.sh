#!/usr/bin/env bash
# Installs the Debian 12 packages libcirrdata needs, only those missing. Usage: tools/deps.sh [build|test|demo]
set -euo pipefail

build_pkgs=(gcc meson ninja-build pkg-config libnifti2-dev zlib1g-dev libdeflate-dev libzstd-dev liburing-dev
  libvulkan-dev libvulkan-volk-dev glslc libxxhash-dev libjansson-dev libpng-dev libcmocka-dev)
python_pkgs=(python3 python3-numpy python3-nibabel python3-scipy python3-zstandard python3-xxhash python3-jsonschema python3-torch python3-torchvision
  python3-sklearn)  # sklearn: the nnunet_import test compares nnU-Net's default folds with KFold itself
vulkan_runtime=(mesa-vulkan-drivers vulkan-validationlayers)
check_tools=(clang libclang-rt-14-dev valgrind clang-format)   # tests/fuzz (libFuzzer), valgrind and format tests
install_tools=(git python3-venv python3-pip python3-mesonpy patchelf)  # the python_install test (pip install of pyproject.toml)
dask_pkgs=(python3-dask python3-distributed)  # cirrdata.distributed and the distributed test
cluster_tools=(slurm-wlm munge)  # the slurm test starts munged, slurmctld and slurmd itself

case "${1:-build}" in
  build) want=("${build_pkgs[@]}") ;;
  test) want=("${build_pkgs[@]}" "${python_pkgs[@]}" "${vulkan_runtime[@]}" "${check_tools[@]}" "${install_tools[@]}"
    "${dask_pkgs[@]}" "${cluster_tools[@]}") ;;
  demo) want=("${build_pkgs[@]}" "${python_pkgs[@]}" "${vulkan_runtime[@]}") ;;
  *) echo "usage: $0 [build|test|demo]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "Installing missing Debian packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "error: need root to install packages (run as root, or install them yourself): ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
