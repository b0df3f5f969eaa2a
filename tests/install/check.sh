#!/usr/bin/env bash
# Installs a build into a temporary root and builds tests/install/read_volume.c against it with
# pkg-config, then runs it on nibabel's example file and checks the output. Usage: check.sh BUILDDIR
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
meson install -C "$build" --no-rebuild --destdir "$stage" --quiet >/dev/null
pc=$(find "$stage" -name cirrdata.pc | head -n 1)
[ -n "$pc" ] || { echo "FAIL: no cirrdata.pc installed"; exit 1; }
[ -x "$(find "$stage" -path '*/bin/cirrdata' | head -n 1)" ] || { echo "FAIL: no cirrdata CLI installed"; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$stage
cc -std=c17 -Wall -Wextra -Werror $(pkg-config --cflags cirrdata) "$here/read_volume.c" -o "$stage/read_volume" \
  $(pkg-config --libs cirrdata)
# The advanced part of the headers (cirrdata/augment.h) is there only for those who opt in.
printf '#include <cirrdata/cirrdata.h>\nint main(void) { cd_gpu_timings t; (void)t; return cd_shard_fd(0) + (int)sizeof(cd_aug_params); }\n' \
  >"$stage/advanced.c"
if cc -std=c17 -Werror $(pkg-config --cflags cirrdata) -c "$stage/advanced.c" -o "$stage/advanced.o" 2>/dev/null; then
  echo "FAIL: the advanced API compiled without CIRRDATA_ADVANCED_API"; exit 1
fi
cc -std=c17 -Wall -Werror -DCIRRDATA_ADVANCED_API $(pkg-config --cflags cirrdata) -c "$stage/advanced.c" -o "$stage/advanced.o"
echo "install: the advanced API needs CIRRDATA_ADVANCED_API, and compiles with it"
libdir=$(dirname "$(find "$stage" -name 'libcirrdata.so' | head -n 1)")
out=$(LD_LIBRARY_PATH=$libdir "$stage/read_volume" /usr/lib/python3/dist-packages/nibabel/tests/data/example4d.nii.gz)
# nibabel: example4d is 128 x 96 x 24, LAS; as_closest_canonical gives RAS with the same shape.
case "$out" in
  "128 96 24 RAS "*) echo "install: pkg-config build of read_volume.c OK ($out)" ;;
  *) echo "FAIL: unexpected output '$out'"; exit 1 ;;
esac
