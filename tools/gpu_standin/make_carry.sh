#!/bin/bash
# Prepare what run.sh carries to the (offline) GPU machine, here, where the registries answer:
#   .devcarry/llama.cpp  the llama.cpp tree vendored in the xllamacpp sdist we pin (b11549, the build
#                        the embedded engine and 02's compute-buffer model are written against), trimmed
#                        to what a CUDA build of llama-server + llama-bench reads
#   .whl/                papermill, ipykernel, gguf … as wheels for the device's Python (3.12)
# Both paths are git-ignored (.git/info/exclude); together they stay under run's 64 MiB carry limit.
# usage (repo root): bash tools/gpu_standin/make_carry.sh
set -euo pipefail
XLLAMACPP=$(sed -n 's/.*"xllamacpp==\([^"]*\)".*/\1/p' pyproject.toml)
PYVER=${PYVER:-3.12}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "xllamacpp $XLLAMACPP sdist → .devcarry/llama.cpp"
python3 -m pip download -q --no-binary :all: --no-deps "xllamacpp==$XLLAMACPP" -d "$work"
tar xzf "$work"/xllamacpp-*.tar.gz -C "$work"
src=$(echo "$work"/xllamacpp-*/thirdparty/llama.cpp)
# Not read by the build (tests/examples are off, and only the CPU and CUDA backends are configured);
# models/templates stays: 03 takes the gpt-oss chat template from there.
rm -rf "$src"/{docs,tests,examples,benches,conversion,pocs,ci,.github,.devops,app,media,gguf-py,requirements}
find "$src/models" -mindepth 1 -maxdepth 1 ! -name templates -exec rm -rf {} +
find "$src/ggml/src" -mindepth 1 -maxdepth 1 -type d ! -name ggml-cpu ! -name ggml-cuda ! -name ggml-rpc -exec rm -rf {} +
# tools/ui: only what its CMakeLists reads with the UI off (gpu-standin.md §1)
find "$src/tools/ui" -mindepth 1 -maxdepth 1 ! -name CMakeLists.txt ! -name '*.in' ! -name '*.cmake' \
  -exec rm -rf {} +
echo "llama.cpp tree vendored in xllamacpp $XLLAMACPP (sdist thirdparty/llama.cpp, b${XLLAMACPP##*.}), trimmed by tools/gpu_standin/make_carry.sh" \
  > "$src/SPARKKIT_SOURCE"
rm -rf .devcarry/llama.cpp
mkdir -p .devcarry
mv "$src" .devcarry/llama.cpp

echo "wheels for Python $PYVER → .whl/"
rm -rf .whl && mkdir .whl
python3 -m pip download -q --only-binary :all: --python-version "$PYVER" --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_34_x86_64 --platform any -d .whl \
  "$(grep -o '"papermill==[^"]*"' pyproject.toml | tr -d '"')" \
  "$(grep -o '"ipykernel==[^"]*"' pyproject.toml | tr -d '"')" \
  "$(grep -o '"ipywidgets==[^"]*"' pyproject.toml | tr -d '"')" \
  "$(grep -o '"gguf==[^"]*"' pyproject.toml | tr -d '"')"
# The device image (a CUDA + torch one, research/gpu-standin.md) already has these; a second numpy on the
# path would shadow torch's.
for have in numpy packaging psutil pygments python_dateutil pyyaml PyYAML requests certifi charset_normalizer \
            idna urllib3 tqdm typing_extensions tzdata attrs click; do
  rm -f .whl/"$have"-*.whl
done
du -sh .devcarry .whl
