# shellcheck shell=sh
# Shell functions the benchmark drivers share; sourced (`. "$here/bench_lib.sh"`) after `set -eu`,
# with $here set to benchmarks/ and the working directory at the repository root.
#
#   bench_build BUILDDIR [MESON-SETUP-OPTIONS...]
#       configures BUILDDIR with --buildtype=release (and the options) if it does not exist, builds it
#   bench_require DRIVER FILE...
#       exits 1 naming the first FILE that is not an executable (the 'benchmarks' option off)
#   bench_source CLI CASES SEED
#       the synthetic CirrMRI600+ set of CASES cases under benchmarks/.data, synthesised once and reused
#       (git-ignored); sets $data (the folder) and $src (the set)
#   bench_loader_dataset CLI CASES SEED
#       the loader benchmarks' dataset: that set converted with the nnunet-3d recipe, made once and reused
#       (rebuilt when it predates manifests with their own checksum); sets $ds

bench_build() {
    _b=$1
    shift
    if [ ! -d "$_b" ]; then
        meson setup "$_b" --buildtype=release "$@"
    fi
    ninja -C "$_b"
}

bench_require() {
    _driver=$1
    shift
    for _f in "$@"; do
        if [ ! -x "$_f" ]; then
            echo "$_driver: $_f not built (is the 'benchmarks' option on?)" >&2
            exit 1
        fi
    done
}

# shellcheck disable=SC2154  # $here is the sourcing driver's
bench_source() {
    data="$here/.data"
    src="$data/cirrmri600-$2-s$3"
    mkdir -p "$data"
    if [ ! -s "$src/Metadata/labels.txt" ]; then
        rm -rf "$src"
        "$1" synth --layout cirrmri600 "$src" --cases "$2" --seed "$3" --quiet --json > "$data/synth-$2-s$3.json"
    fi
}

# shellcheck disable=SC2154  # $data and $src are bench_source's
bench_loader_dataset() {
    bench_source "$1" "$2" "$3"
    ds="$data/loader-nnunet-3d-$2-s$3"
    if [ ! -s "$ds/manifest.json" ] || ! grep -q '"manifest_xxh3"' "$ds/manifest.json"; then
        rm -rf "$ds"
        "$1" convert --layout cirrmri600 "$src" --out "$ds" --recipe nnunet-3d --quiet
    fi
}
