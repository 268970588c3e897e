"""What an epoch cost the machine, logged beside its metrics under "system/" (as W&B's system charts do):

    system/cpu_percent   the process's CPU time over the wall time since the meter started, in percent of one
                         core (top's reading: 200 = two cores busy all along)
    system/peak_rss_mb   the process's peak resident memory so far, MiB (getrusage; absent where there is none)
    system/cuda_peak_mb  the peak GPU memory PyTorch's allocator has held so far on the training device, MiB (only
                         once CUDA is in use; the peak since the process started or the user last reset it)

Peaks are "so far" and never reset, so deepdive does not disturb a loop that reads torch.cuda's statistics itself.
Only the stdlib and torch: recipe.py imports this on the bare GPU machine too.
"""
import sys
import time

try:
    import resource
except ImportError:      # Windows
    resource = None


def peak_rss_mb() -> float | None:
    """The process's peak resident memory so far, MiB; None where the platform does not say."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10    # bytes on macOS, KiB on Linux


class SystemMeter:
    """Readings since `start()` (or construction): `read()` -> {"system/...": value}."""

    def __init__(self):
        self.start()

    def start(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def read(self, cuda="auto") -> dict:
        """The readings. cuda: the GPU whose peak to read; "auto" the current one once CUDA is in use (a loop of
        your own); None none (a run on the CPU, even in a process that used CUDA before)."""
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        out = {}
        if wall > 0:
            out["system/cpu_percent"] = 100.0 * cpu / wall
        rss = peak_rss_mb()
        if rss is not None:
            out["system/peak_rss_mb"] = rss
        torch = sys.modules.get("torch")     # never imports torch (or initialises CUDA) itself
        if cuda is not None and torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            device = None if cuda == "auto" else cuda
            out["system/cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        return out
