"""deepdive.sysmetrics: the process's CPU use and peak memory between two readings, and the GPU peak where CUDA is
in use (a stand-in torch here: CI has no GPU)."""
import sys
import time
from types import SimpleNamespace

import pytest

from deepdive.sysmetrics import SystemMeter, peak_rss_mb


def test_cpu_use_and_peak_memory_between_readings():
    meter = SystemMeter()
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:       # one core busy
        pass
    busy = meter.read(cuda=None)
    assert 60 < busy["system/cpu_percent"] <= 100 * 1.2, busy
    assert busy["system/peak_rss_mb"] == pytest.approx(peak_rss_mb(), rel=0.05) and busy["system/peak_rss_mb"] > 10
    meter.start()
    time.sleep(0.2)                         # idle
    assert meter.read(cuda=None)["system/cpu_percent"] < 30
    assert "system/cuda_peak_mb" not in busy


def test_gpu_peak_only_where_cuda_is_in_use(monkeypatch):
    asked = []

    def fake(initialised):
        cuda = SimpleNamespace(is_available=lambda: True, is_initialized=lambda: initialised,
                               max_memory_allocated=lambda device=None: asked.append(device) or 3 * 2**20)
        return SimpleNamespace(cuda=cuda)

    meter = SystemMeter()
    monkeypatch.setitem(sys.modules, "torch", fake(True))
    assert meter.read()["system/cuda_peak_mb"] == 3.0 and asked == [None]        # a loop of your own: current GPU
    assert meter.read(cuda="cuda:1")["system/cuda_peak_mb"] == 3.0 and asked[-1] == "cuda:1"   # the recipe's
    assert "system/cuda_peak_mb" not in meter.read(cuda=None)                      # a CPU run
    monkeypatch.setitem(sys.modules, "torch", fake(False))
    assert "system/cuda_peak_mb" not in meter.read()                               # CUDA never used: not started
