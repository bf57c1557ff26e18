set -e
export SPARKKIT_HOME=/tmp/p7/home SPARKKIT_RUNS=/tmp/p7/runs PYTHONPATH=/work/main/src
cd /work/main/runbooks
PM="/work/main/.venv/bin/papermill --no-progress-bar -k sparkkit"
O=/tmp/p7/nb; mkdir -p $O
$PM 01-preflight.ipynb $O/01.ipynb -p model embedded -p peer loopback
$PM 04-engine.ipynb $O/04.ipynb -p binary /tmp/lcb/rpcbuild/bin/llama-server
$PM 03-place-model.ipynb $O/03.ipynb
$PM 02-plan.ipynb $O/02.ipynb -p context 131072 -p slots 2
$PM 05-serve.ipynb $O/05.ipynb -p port 18181
$PM 06-verify.ipynb $O/06.ipynb
$PM 07-wire-claude.ipynb $O/07.ipynb
/work/main/.venv/bin/sparkkit stop
