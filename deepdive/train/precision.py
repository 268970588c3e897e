"""Whether bf16 autocast pays for a model on this machine: always on CUDA; on a CPU, timed once and cached.

CPU flags do not predict it. benchmarks/cpu_throughput.py, one thread, batch 256, channels_last:
  - this project's AMD Zen 5 host (AVX512_BF16): 138 ms/step bf16 vs 241 ms/step fp32;
  - an Intel Xeon host with the same AVX512_BF16 flag (no AMX exposed; oneDNN picks avx512_core_bf16 kernels),
    2026-11-30: 412 ms/step bf16 vs 315 ms/step fp32. bf16 was 1.3x *slower* there.
So where the CPU has native bf16 instructions (AVX512_BF16 or AMX), a few training steps of the actual model and
batch are timed in both precisions. The answer is cached per CPU (name and flags), torch version, thread count,
batch and model under $DEEPDIVE_HOME/cpu_precision.json, so later runs on the machine make the same choice and a
seed keeps fixing the result. Without those instructions oneDNN emulates bf16, which always loses, so nothing
is timed.

Only torch and the stdlib: like recipe.py this runs on a bare GPU machine with PYTHONPATH=.
"""
import functools
import hashlib
import json
import platform
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from deepdive.atomic import atomic_write_text
from deepdive.paths import deepdive_home

CACHE_NAME = "cpu_precision.json"
# Images per timed step: the run's own step (batch x aug_repeats) up to this many. The ratio depends on it: the
# default net on the Intel host, two threads, bf16 vs fp32: 129 vs 126 ms at 128 images, 228 vs 186 ms at 512.
MAX_PROBE_BATCH = 512
# Interleaved rounds (one step in each precision); the minimum per precision is the least disturbed by the
# neighbours. Small steps get more rounds, up to about a second of timing: in a test run, 3 rounds of a 60-image
# step once read 72 ms fp32 against 27 ms for a 40-image step just before.
MIN_ROUNDS, MAX_ROUNDS, PROBE_SECONDS = 3, 50, 1.0
# bf16 must be clearly faster to be chosen: fp32 is the more precise, and a near-tie would make the choice noise.
MIN_SPEEDUP = 1.15


def bf16_pays(dev, build, *, input_shape, num_classes, batch, memory_format, key, progress=False) -> bool:
    """Whether to train under bf16 autocast on `dev`. `build()` returns a fresh model on `dev` in
    `memory_format`, taking images of `input_shape` (C, H, W) to `num_classes` logits; a training step sees
    `batch` images; `key` (JSON-able) names the model and its layout, so the cached answer is per model."""
    if dev.type == "cuda":
        return True   # tensor cores
    if dev.type != "cpu" or not _native_bf16():
        return False
    # A VM may name its CPU generically ("Intel(R) Xeon(R) Processor"): the flags tell such CPUs apart.
    name, flags = _cpu()
    flags = hashlib.sha1(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    full_key = json.dumps({"cpu": name, "cpu_flags": flags, "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "model": key, "batch": batch}, sort_keys=True)
    path = deepdive_home() / CACHE_NAME
    cache = _read(path)
    if full_key not in cache:
        noise = torch.Generator(device=dev).manual_seed(0)   # not the global RNG: the run's seed owns that
        n = max(1, min(int(batch), MAX_PROBE_BATCH))
        x = torch.rand(n, *input_shape, device=dev, generator=noise).contiguous(memory_format=memory_format)
        y = torch.arange(n, device=dev) % num_classes
        fp32_s, bf16_s = probe(build, x, y)
        cache = _read(path)   # another process may have added entries meanwhile
        cache[full_key] = {"bf16": bf16_s * MIN_SPEEDUP < fp32_s, "fp32_ms": round(fp32_s * 1e3, 1),
                           "bf16_ms": round(bf16_s * 1e3, 1), "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            atomic_write_text(path, json.dumps(cache, indent=1, sort_keys=True))
        except OSError as e:   # a read-only or odd cache folder costs a probe per run, not the run itself
            warnings.warn(f"could not cache the CPU precision choice in {path}: {e}")
        if progress:
            entry = cache[full_key]
            print(f"deepdive: a training step of {n} images takes {entry['fp32_ms']:.0f} ms in fp32 and "
                  f"{entry['bf16_ms']:.0f} ms under bf16 autocast on this CPU, so this model trains in "
                  f"{'bf16' if entry['bf16'] else 'fp32'} here (cached in {path})", file=sys.stderr)
    return bool(cache[full_key]["bf16"])


def probe(build, x, y, min_rounds=MIN_ROUNDS, max_rounds=MAX_ROUNDS, seconds=PROBE_SECONDS):
    """(fp32 seconds, bf16 seconds) per training step of `build()`'s model on the batch (x, y): the fastest of
    interleaved steps in each precision (at least `min_rounds`, more until `seconds` have passed, at most
    `max_rounds`), after one warm-up step each (oneDNN picks and builds its kernels then). Leaves torch's global
    RNG as it found it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build()
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(bf16):
            t0 = time.perf_counter()
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return time.perf_counter() - t0

        step(False), step(True)
        times = {False: [], True: []}
        t0 = time.perf_counter()
        while len(times[True]) < min_rounds or (time.perf_counter() - t0 < seconds
                                                 and len(times[True]) < max_rounds):
            for bf16 in (False, True):
                times[bf16].append(step(bf16))
    return min(times[False]), min(times[True])


def _native_bf16() -> bool:
    return any(f in _cpu()[1] for f in ("avx512_bf16", "amx_bf16"))


@functools.cache
def _cpu() -> tuple[str, frozenset]:
    """(model name, flags) of the first CPU in /proc/cpuinfo, read once per process."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if "model name" in fields and "flags" in fields:
                    break
    except OSError:
        pass
    return fields.get("model name") or platform.processor(), frozenset(fields.get("flags", "").split())


def _read(path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}   # missing or damaged: measure again and rewrite it whole
