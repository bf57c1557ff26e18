"""Armed only by tools/gpu_standin/standin.py (it puts this folder first on PYTHONPATH for the runbooks
it runs): on SIGUSR1, every thread's stack goes to $SPARKKIT_HANG_DUMP_DIR/hang-<name>-<pid>.txt.
A hung runbook kernel then says where it hung instead of only timing out."""
import os

if os.environ.get("SPARKKIT_HANG_DUMP_DIR"):
    import faulthandler
    import signal

    _path = os.path.join(os.environ["SPARKKIT_HANG_DUMP_DIR"],
                         f"hang-{os.environ.get('SPARKKIT_HANG_DUMP_NAME', 'run')}-{os.getpid()}.txt")
    _file = open(_path, "w")   # kept open: faulthandler writes to its descriptor at signal time
    faulthandler.register(signal.SIGUSR1, file=_file, all_threads=True)
