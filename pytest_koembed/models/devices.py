"""Several devices for one task: ``--koembed-devices`` and the processes that encode on them.

A large retrieval corpus dominates a run's wall time, and pytest-xdist gives a task to one worker.
With ``--koembed-devices cuda:0,cuda:1`` the plugin's sentence-transformers encoder hands every
encode call of at least ``--koembed-devices-min-texts`` texts to sentence-transformers'
multi-process pool (``SentenceTransformer.start_multi_process_pool``), one process per listed
device; smaller calls stay in the pytest process, where no process start is worth it.

The values equal the single-process ones: the texts are sorted by length and cut into batches
exactly as in one process, and each batch goes to a pool process whole (``chunk_size`` = batch
size), so every text is embedded in the same batch, with the same padding, as without the pool.

Process hygiene: the pool starts at the first large call and stops at the end of the session
(the ``koembed_encoder`` fixture's teardown, which pytest also runs after a failure or Ctrl-C).
Each pool process ignores SIGINT (Ctrl-C reaches the whole process group; the pytest process
stops the pool itself) and exits on its own once the pytest process is gone, so that a killed
run leaves no process behind. Plain functions: no pytest; torch only to check CUDA devices.
"""

from __future__ import annotations

import os
import re
import threading
import time
from contextlib import suppress

from pytest_koembed.errors import KoembedError

# Encode calls with fewer texts stay in the pytest process. A pool process starts in seconds
# (Python, torch and the shared weights), and a batch of a few thousand texts takes about as long
# on one GPU: only corpora well above that gain. mteb hands a retrieval corpus over in calls of
# at most 50,000 documents.
DEFAULT_MIN_TEXTS = 10_000

_ITEM = re.compile(r"(cpu|cuda)(?::(\d+))?")
_SYNTAX = "cpu, cpu:N (N CPU processes), cuda (every visible GPU) or cuda:N"


def parse_devices(spec: str) -> list[str]:
    """``--koembed-devices`` as one torch device per pool process (syntax only, no torch).

    ``cuda:0,cuda:1`` -> two processes; ``cpu,cpu`` and ``cpu:2`` -> two CPU processes; ``cuda``
    stays ``cuda`` (every visible GPU, see :func:`resolve_devices`).
    """
    option = f"--koembed-devices {spec!r}"
    items = [item.strip().lower() for item in spec.split(",")]
    if not spec.strip() or not all(items):
        raise KoembedError(f"{option}: give a comma-separated list of {_SYNTAX}")
    devices: list[str] = []
    for item in items:
        match = _ITEM.fullmatch(item)
        if match is None:
            raise KoembedError(f"{option}: {item!r} is not one of {_SYNTAX}")
        kind, number = match.groups()
        if kind == "cpu":
            count = 1 if number is None else int(number)
            if count < 1:
                raise KoembedError(f"{option}: {item!r} asks for no process; cpu:N needs N >= 1")
            devices.extend(["cpu"] * count)
        else:
            devices.append("cuda" if number is None else f"cuda:{int(number)}")
    if len({device.split(":")[0] for device in devices}) > 1:
        raise KoembedError(
            f"{option} mixes CPU and GPU processes, whose embeddings differ in the last bits; "
            "list GPUs only (cuda:0,cuda:1) or CPUs only (cpu:2)"
        )
    return devices


def resolve_devices(spec: str) -> list[str]:
    """The pool's devices, checked against this machine: ``cuda`` becomes every visible GPU, a
    listed GPU must exist, and there must be two processes at least (one KoembedError line)."""
    devices = parse_devices(spec)
    option = f"--koembed-devices {spec!r}"
    if devices[0] != "cpu":
        import torch

        if not torch.cuda.is_available():
            cpu_only = torch.version.cuda is None
            why = f"torch {torch.__version__} is a CPU-only build" if cpu_only else "no GPU found"
            raise KoembedError(
                f"{option}: CUDA is not available ({why}); on this machine only cpu:N works"
            )
        count = torch.cuda.device_count()
        resolved: list[str] = []
        for device in devices:
            if device == "cuda":
                resolved.extend(f"cuda:{i}" for i in range(count))
                continue
            if int(device.split(":")[1]) >= count:
                visible = os.environ.get("CUDA_VISIBLE_DEVICES")
                extra = f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else ""
                raise KoembedError(
                    f"{option}: {device} does not exist, only {count} GPU(s) are visible{extra}"
                )
            resolved.append(device)
        devices = resolved
    if len(devices) < 2:
        raise KoembedError(
            f"{option} is {len(devices)} process; list two devices or more, or use "
            "--koembed-device for one"
        )
    return devices


def cpu_threads(devices: list[str]) -> int | None:
    """torch threads for each CPU pool process: as many as the pytest process uses. A CPU matmul's
    result depends on its thread count in the last bits, so fewer threads per process would
    change the values; n processes on the same cores compete for them instead. None: GPUs."""
    if "cpu" not in devices:
        return None
    import torch

    return torch.get_num_threads()


class PoolProcessSetup:
    """Travels to each pool process inside the pickled model and sets that process up as it is
    unpickled there (``setup_pool_process``): the pool's processes run sentence-transformers'
    own loop, and this is the one hook into them."""

    def __init__(self, threads: int | None) -> None:
        self.parent_pid = os.getpid()
        self.threads = threads

    def __reduce__(self) -> tuple[object, tuple[int, int | None]]:
        return setup_pool_process, (self.parent_pid, self.threads)


def setup_pool_process(parent_pid: int, threads: int | None) -> None:
    """In a pool process: ignore Ctrl-C, use the pytest process's CPU threads, and exit when the
    pytest process that started it is gone (a killed run must leave no process behind)."""
    if os.getpid() == parent_pid:  # unpickled in the pytest process itself (a copy): nothing
        return None
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    # tqdm's default lock is a multiprocessing semaphore, created at the first (disabled)
    # progress bar; a process stopped by SIGTERM never unlinks it, and the resource tracker
    # warns of a leak at exit. A thread lock does: the pool's processes draw no bars.
    with suppress(ImportError):
        from tqdm import tqdm

        tqdm.set_lock(threading.RLock())

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="koembed-parent-watch", daemon=True).start()
    return None
