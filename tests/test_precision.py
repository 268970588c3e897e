"""bf16 autocast on the CPU only where a timed probe says it pays, with the answer cached per CPU and model."""
import json

import pytest
import torch

from deepdive.train import precision
from deepdive.train.recipe import train

CPU = torch.device("cpu")


def small_model():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 26 * 26, 10))


def pays(key="m", progress=False, batch=64):
    return precision.bf16_pays(CPU, small_model, input_shape=(1, 28, 28), num_classes=10, batch=batch,
                               memory_format=torch.contiguous_format, key=key, progress=progress)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPDIVE_HOME", str(tmp_path))
    monkeypatch.setattr(precision, "_native_bf16", lambda: True)
    return tmp_path


def scripted_probe(monkeypatch, fp32_s, bf16_s):
    calls = []

    def probe(build, x, y):
        calls.append((tuple(x.shape), y.max().item()))
        return fp32_s, bf16_s

    monkeypatch.setattr(precision, "probe", probe)
    return calls


def test_the_faster_precision_is_chosen_once_and_cached(home, monkeypatch, capsys):
    calls = scripted_probe(monkeypatch, fp32_s=0.315, bf16_s=0.412)   # the Intel host's numbers: fp32 wins
    assert pays(progress=True) is False
    assert calls == [((64, 1, 28, 28), 9)]
    assert "412 ms under bf16" in capsys.readouterr().err
    entry, = json.loads((home / precision.CACHE_NAME).read_text()).values()
    assert entry["bf16"] is False and entry["fp32_ms"] == 315.0 and entry["bf16_ms"] == 412.0
    assert not list(home.glob("*.tmp"))

    # the same machine and model read the cached answer, whatever a new timing would say
    scripted_probe(monkeypatch, fp32_s=0.9, bf16_s=0.1)
    assert pays() is False
    # another model is timed on its own
    calls = scripted_probe(monkeypatch, fp32_s=0.241, bf16_s=0.138)   # the Zen 5 host's: bf16 wins
    assert pays(key="other") is True and len(calls) == 1
    # and so is another batch size, capped at MAX_PROBE_BATCH images
    calls = scripted_probe(monkeypatch, fp32_s=0.3, bf16_s=0.1)
    assert pays(batch=2048) is True and calls == [((precision.MAX_PROBE_BATCH, 1, 28, 28), 9)]
    assert len(json.loads((home / precision.CACHE_NAME).read_text())) == 3


def test_a_near_tie_keeps_fp32(home, monkeypatch):
    scripted_probe(monkeypatch, fp32_s=0.110, bf16_s=0.100)   # 10% faster is within the margin
    assert pays() is False


def test_a_damaged_cache_is_measured_again(home, monkeypatch):
    (home / precision.CACHE_NAME).write_text("{not json")
    calls = scripted_probe(monkeypatch, fp32_s=0.3, bf16_s=0.1)
    assert pays() is True and len(calls) == 1
    assert len(json.loads((home / precision.CACHE_NAME).read_text())) == 1


def test_an_unwritable_cache_warns_and_still_answers(tmp_path, monkeypatch):
    home = tmp_path / "not-a-folder"
    home.write_text("")
    monkeypatch.setenv("DEEPDIVE_HOME", str(home))
    monkeypatch.setattr(precision, "_native_bf16", lambda: True)
    scripted_probe(monkeypatch, fp32_s=0.3, bf16_s=0.1)
    with pytest.warns(UserWarning, match="could not cache the CPU precision choice"):
        assert pays() is True


def test_no_native_bf16_means_fp32_without_timing(home, monkeypatch):
    monkeypatch.setattr(precision, "_native_bf16", lambda: False)
    calls = scripted_probe(monkeypatch, fp32_s=1.0, bf16_s=0.1)
    assert pays() is False and calls == []
    assert not (home / precision.CACHE_NAME).exists()
    assert precision.bf16_pays(torch.device("cuda"), small_model, input_shape=(1, 28, 28), num_classes=10,
                               batch=64, memory_format=torch.contiguous_format, key="m") is True


def test_the_probe_times_both_precisions_and_leaves_the_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    torch.set_rng_state(state)
    fp32_s, bf16_s = precision.probe(small_model, x, y, min_rounds=2, seconds=0)
    assert 0 < fp32_s < 10 and 0 < bf16_s < 10
    assert torch.equal(torch.get_rng_state(), state)


def test_cheap_steps_get_more_rounds_up_to_the_cap():
    forwards = []

    class Counted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_model()

        def forward(self, x):
            forwards.append(torch.is_autocast_enabled("cpu"))
            return self.net(x)

    x, y = torch.rand(4, 1, 28, 28), torch.arange(4)
    precision.probe(Counted, x, y, min_rounds=3, max_rounds=5, seconds=0)
    assert forwards == [False, True] * (1 + 3)          # warm-up, then the minimum
    forwards.clear()
    precision.probe(Counted, x, y, min_rounds=3, max_rounds=5, seconds=60)
    assert forwards == [False, True] * (1 + 5)          # a minute allowed: the cap stops it


def test_train_records_the_precision_it_chose_and_the_probe_changes_no_result(mnist, home, monkeypatch):
    kw = dict(epochs=1, seed=0, device="cpu", limit_train=500, progress=False)
    probed = train(mnist, "fast", **kw, overrides={"arch": "cnn-small"})   # times the real model first
    chosen = probed.config["amp"]
    assert isinstance(chosen, bool) and len(json.loads((home / precision.CACHE_NAME).read_text())) == 1
    forced = train(mnist, "fast", **kw, overrides={"arch": "cnn-small", "amp": chosen})
    assert forced.config["amp"] is chosen
    assert [r["val_loss"] for r in forced.history] == [r["val_loss"] for r in probed.history]

    calls = scripted_probe(monkeypatch, fp32_s=0.3, bf16_s=0.1)
    narrower = {"arch": "cnn-small", "arch_kwargs": {"widths": (8, 16, 32)}}
    assert train(mnist, "fast", **kw, overrides=narrower).config["amp"] is True
    assert len(calls) == 1    # other widths: another model, timed on its own
    assert train(mnist, "fast", **kw, overrides={"arch": "cnn-small", "amp": False}).config["amp"] is False
