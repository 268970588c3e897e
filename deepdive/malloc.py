"""Keep freed memory in the process, so CPU training does not page-fault its way through every step.

PyTorch's CPU tensors come straight from malloc. glibc serves blocks above its mmap threshold (dynamic, at most
32 MB) with a fresh mmap and unmaps them on free, and trims the top of the heap past its trim threshold; the next
step then touches all of that memory anew, one page fault per 4 KB. The default preset's step (512 images) makes
activations of 25-50 MB, so every step re-faults ~830 MB. Measured on the Intel Xeon host (KVM, 2 threads,
2026-11-30; `default` preset, 60 steps of 512 images):

    glibc defaults              458 ms/step   12.7M minor page faults   19.1 s system time
    keep_freed_memory()         311 ms/step    0.3M (all in the first steps; then ~20)   0.5 s

and the fast preset's first run in a process 40 -> 31 ms/step (later runs in the same process were at ~32 ms
already: the dynamic threshold had risen). This is what jemalloc / tcmalloc via LD_PRELOAD buy in Intel's PyTorch
CPU tuning guides, with glibc's own knobs: every block under 1 GiB comes from the heap, and the heap is not
trimmed below 1 GiB of free space. The price: the process keeps its peak memory (for MNIST training, well under
2 GB) instead of handing it back between steps.

Only glibc (Linux) has these knobs; elsewhere, or when the user has configured malloc (GLIBC_TUNABLES, MALLOC_*_
variables, an LD_PRELOADed allocator), nothing is changed. Only the stdlib: recipe.py imports this on the
bare GPU machine too.
"""
import ctypes
import functools
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8      # mallopt parameters, from glibc's <malloc.h>
KEEP_BYTES = 1 << 30


def on_glibc() -> bool:
    """Whether this process runs on glibc (Linux), the only malloc with these knobs."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def user_configured_malloc(environ=None) -> bool:
    """Whether the environment already chooses the allocator or its thresholds: then that choice stands."""
    env = os.environ if environ is None else environ
    if "malloc" in env.get("GLIBC_TUNABLES", ""):
        return True
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in env):      # MALLOC_MMAP_THRESHOLD_ etc.
        return True
    return any(name in env.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc"))


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB for this process (once). Returns whether they were set."""
    if not on_glibc() or user_configured_malloc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success. Setting either threshold turns off glibc's dynamic adjustment of both, so the
    # trim threshold is only set once the mmap one is: a high trim threshold under the fixed 128 KB mmap threshold
    # would mmap every tensor (measured: 62 ms/step against 32).
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))


@functools.cache
def keep_freed_memory_in_threads() -> bool:
    """keep_freed_memory() for a process whose model passes run in worker threads (deepdive serve): also one malloc
    arena for all threads. A thread's own arena is made of 64 MB heaps, so it serves any larger block (a batch's
    activations) with a fresh mmap whatever the thresholds say. Measured (Zen 5 host, 2026-12-06; one picture's
    TracIn over the demo's 55,000 training images in a worker thread): 10.9 s under glibc's defaults, 8.1-10.7 s
    with the thresholds alone, 3.6-4.1 s with one arena (3.9 s through `deepdive serve`'s app). Call it before any
    second thread allocates: glibc fixes the arena limit then."""
    if not keep_freed_memory():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, 1))
