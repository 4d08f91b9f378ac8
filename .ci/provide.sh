#!/usr/bin/env bash
# Install what the tests need besides Python packages and Slurm (`make slurm-up` starts that):
# a C compiler for the mixers' kernels (tests/test_native.py) and the Debian package
# dataset-fashion-mnist (the real Fashion-MNIST files). Under CI=true a test whose tool is missing
# fails rather than skips (tests/helpers/provided.py), so CI installs them here first.
#
# Runs as root. Installs only what is missing, so a second run changes nothing and takes no time.
set -euo pipefail

log() { echo "provide: $*" >&2; }

# Whether the C compiler dcutmix/native.py would pick builds a shared library with the headers the
# kernels include (a compiler without libc's headers is no use to it).
compiler_works() {
	local cc probe
	for cc in "${CC:-}" cc gcc clang; do
		[[ -n $cc ]] && command -v "$cc" >/dev/null && break
		cc=
	done
	[[ -n $cc ]] || return 1
	probe=$(mktemp -d)
	trap 'rm -rf "$probe"' RETURN
	printf '#include <math.h>\n#include <pthread.h>\n#include <stdint.h>\nint f(void) { return 0; }\n' >"$probe/p.c"
	"$cc" -shared -fPIC -pthread "$probe/p.c" -o "$probe/p.so" -lm 2>/dev/null
}

missing=()
compiler_works || missing+=(gcc libc6-dev)
dpkg-query -W -f='${Status}' dataset-fashion-mnist 2>/dev/null | grep -q "ok installed" ||
	missing+=(dataset-fashion-mnist)
((${#missing[@]} == 0)) && exit 0

command -v apt-get >/dev/null || {
	log "error: missing ${missing[*]} and no apt-get to install them"
	exit 1
}
log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq </dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
