#!/usr/bin/env bash
# Python 3.12 wheels of the pure-Python dependencies that the GPU machine lacks, into .whl/.
# That machine is offline and has its own python3 3.12 with torch and torchvision; the wheels
# travel with the working tree (64 MiB in all), and `make gpu-check` installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEST=.whl
LIMIT_MIB=64
# Pinned to the versions the project's .venv runs; antlr4 4.9.3 (omegaconf's parser runtime)
# is published only as a source archive, so its wheel is built here.
PACKAGES=(hydra-core==1.3.8 omegaconf==2.3.1 submitit==1.5.4 hydra-submitit-launcher==1.2.0)
SDIST_ONLY=(antlr4-python3-runtime==4.9.3)
PLATFORM=(--python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)

rm -rf "$DEST" && mkdir -p "$DEST"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: "${PLATFORM[@]}" -d "$DEST" "${PACKAGES[@]}"
"$PY" -m pip wheel --quiet --no-deps --no-binary=:all: -w "$DEST" "${SDIST_ONLY[@]}"
rm -f "$DEST"/*.tar.gz

wheels=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
ls -1 "$DEST"
"$PY" -c "import sys; w, t, n, lim = (int(a) for a in sys.argv[1:]); M = 2**20
print(f'gpu-wheels: {n} wheels, {w / M:.2f} MiB in .whl/ (with the {t / M:.2f} MiB working tree: '
      f'{(w + t) / M:.2f} of {lim} MiB)')" "$wheels" "$tree" "$(ls "$DEST"/*.whl | wc -l)" "$LIMIT_MIB"
echo "gpu-wheels: W&B is left out: its wheel carries a compiled service and needs pydantic-core," \
  "sentry-sdk and GitPython besides; the GPU check runs with logger=none"
