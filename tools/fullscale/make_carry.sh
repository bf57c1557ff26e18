#!/bin/bash
# Prepare, here (where the registries answer), what the full-scale call carries to the offline GPU machine:
#   .fullcarry/whl/       papermill, ipykernel, ipywidgets, gguf, huggingface_hub … as wheels for the device's
#                         Python 3.12, less what its image already has (the pins of pyproject.toml)
#   .fullcarry/sources/   the pinned xllamacpp sdist 04 builds llama.cpp from — fetched from PyPI by 04's own
#                         code (sha256-checked); on the device it seeds $SPARKKIT_HOME/build/sources/, as an
#                         owner seeds an offline box
# .fullcarry is git-ignored through .git/info/exclude. usage (repo root): bash tools/fullscale/make_carry.sh
set -euo pipefail
grep -qx '/.fullcarry/' .git/info/exclude 2>/dev/null || echo '/.fullcarry/' >> .git/info/exclude
PY=${PY:-.venv/bin/python}
rm -rf .fullcarry && mkdir -p .fullcarry/whl .fullcarry/sources
pin() { grep -o "\"$1==[^\"]*\"" pyproject.toml | tr -d '"'; }
python3 -m pip download -q --only-binary :all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
  --platform any -d .fullcarry/whl \
  "$(pin papermill)" "$(pin ipykernel)" "$(pin ipywidgets)" "$(pin gguf)" "$(pin huggingface_hub)"
# The device image (research/gpu-standin.md) has these; a second copy on the path would shadow its own.
for have in numpy packaging psutil pygments python_dateutil pyyaml PyYAML requests certifi charset_normalizer \
            idna urllib3 tqdm typing_extensions tzdata attrs click httpx httpcore h11 anyio sniffio fsspec \
            filelock hf_xet typer rich shellingham markdown_it_py mdurl jinja2 MarkupSafe markupsafe; do
  rm -f .fullcarry/whl/"$have"-*.whl
done
SPARKKIT_HOME=$PWD/.fullcarry/home PYTHONPATH=src $PY -c \
  "from sparkkit.engines.llamacpp import fetch_source; import shutil; shutil.move(str(fetch_source()), '.fullcarry/sources/')"
rm -rf .fullcarry/home
du -sh .fullcarry/whl .fullcarry/sources
