"""deepdive.malloc: freed tensor memory stays in the process, so CPU steps stop page-faulting (glibc only)."""
import os
import subprocess
import sys
import textwrap

import pytest

from deepdive.malloc import on_glibc, user_configured_malloc

glibc = pytest.mark.skipif(not on_glibc(), reason="mallopt thresholds are a glibc feature")

# A fresh process runs eight steps of a one-layer conv net on 512 MNIST-sized images (its 51 MB activations are
# above glibc's largest dynamic mmap threshold, as the default preset's are) and prints the minor page faults of
# the last four steps.
PROBE = textwrap.dedent("""
    import resource, sys, torch
    from deepdive.malloc import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else None
    torch.set_num_threads(1)
    conv, x = torch.nn.Conv2d(1, 32, 3, padding=1), torch.rand(512, 1, 28, 28)
    for step in range(8):
        if step == 4:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.relu(conv(x)).sum().backward()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")
# glibc's defaults mmap the activation and its gradient anew in every step: 2 x 12,544 pages, four times over
STEADY_FAULTS = 4 * 2 * 12544


def _probe(mode, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**clean, "PYTHONPATH": os.getcwd(), **env}).stdout.split()
    return out[0], int(out[1])


@glibc
def test_freed_blocks_are_reused_without_page_faults():
    _, faults_default = _probe("default")
    applied, faults_kept = _probe("keep")
    assert applied == "True"
    assert faults_default > STEADY_FAULTS
    # kept: a block now and then still lands on fresh heap (measured 0 or 12,544 faults; glibc defaults ~250,000)
    assert faults_kept < faults_default / 5


@glibc
def test_a_users_own_malloc_settings_stand():
    applied, faults = _probe("keep", MALLOC_MMAP_THRESHOLD_="131072")
    assert applied == "False" and faults > STEADY_FAULTS


def test_user_configured_malloc():
    assert not user_configured_malloc({})
    assert not user_configured_malloc({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=2048", "LD_PRELOAD": ""})
    assert user_configured_malloc({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"})
    assert user_configured_malloc({"MALLOC_ARENA_MAX_": "2"}) or user_configured_malloc({"MALLOC_TOP_PAD_": "0"})
    assert user_configured_malloc({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})


# The same steps in a worker thread (as `deepdive serve` runs its model passes), with activations of 103 MB: over a
# thread arena's 64 MB heaps, so the thresholds alone leave every step mmapping them anew; one arena does not.
THREADED = textwrap.dedent("""
    import resource, sys, threading
    from deepdive.malloc import keep_freed_memory, keep_freed_memory_in_threads
    applied = keep_freed_memory_in_threads() if sys.argv[1] == "arena" else keep_freed_memory()
    import torch
    torch.set_num_threads(1)
    conv, x = torch.nn.Conv2d(1, 32, 3, padding=1), torch.rand(1024, 1, 28, 28)
    out = {}
    def steps():
        for step in range(8):
            if step == 4:
                out["before"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            torch.relu(conv(x)).sum().backward()
        out["after"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = threading.Thread(target=steps)
    t.start(); t.join()
    print(applied, out["after"] - out["before"])
""")


@glibc
def test_one_arena_keeps_a_worker_threads_blocks_too():
    def probe(mode):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
        out = subprocess.run([sys.executable, "-c", THREADED, mode], capture_output=True, text=True, check=True,
                             env={**clean, "PYTHONPATH": os.getcwd()}).stdout.split()
        return out[0], int(out[1])
    _, faults_thresholds = probe("thresholds")
    applied, faults_arena = probe("arena")
    assert applied == "True"
    assert faults_thresholds > 2 * STEADY_FAULTS        # 103 MB blocks, mmapped anew in every step
    assert faults_arena < faults_thresholds / 5
