"""benchmarks/sweep.py smoke test: two seeds of a tiny variant, the optional measurements (CPU; BatchNorm
re-estimation only as part of --swa)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SWEEP = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep.py"


def _sweep_module():
    spec = importlib.util.spec_from_file_location("sweep", SWEEP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_smoke(mnist, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("deepdive.data.load_dataset", lambda *a, **k: mnist)  # the session's dataset
    variants = [{"name": "tiny", "preset": "fast", "epochs": 1, "seeds": [0, 1], "limit_train": 1000,
                 "overrides": {"arch": "cnn-small"}}]
    out = tmp_path / "sweep.jsonl"
    probs_out = tmp_path / "probs.npz"
    rc = _sweep_module().main([json.dumps(variants), "--device", "cpu", "--out", str(out), "--per-epoch", "--tta",
                               "--swa", "1,2", "--probs-out", str(probs_out)])
    assert rc == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seed"] for r in records] == [0, 1]
    for r in records:
        for key in ("test_accuracy", "test_accuracy_last", "test_accuracy_tta"):
            assert 0.5 < r[key] <= 1, (key, r[key])   # one epoch on 1000 images: far above chance (10%)
        # one epoch: the kept model is the last one, so their accuracies agree
        assert r["test_accuracy_last"] == r["test_accuracy"]
        assert [e["epoch"] for e in r["per_epoch"]] == [1]
        assert r["per_epoch"][0]["test_accuracy"] == r["test_accuracy"]
        # --swa: the "average" of the last one epoch is the kept model; two epochs are more than the run had
        assert r["test_accuracy_swa1"] == r["test_accuracy"]
        assert 0.5 < r["test_accuracy_swa1_bn_recal"] <= 1
        assert "test_accuracy_swa2" not in r
    kept = np.load(probs_out)         # every run's test probabilities, as scored
    assert sorted(kept.files) == ["labels", "tiny/0", "tiny/1"]
    for r in records:
        assert float((kept[f"tiny/{r['seed']}"].argmax(1) == kept["labels"]).mean()) == r["test_accuracy"]
    table = capsys.readouterr().out.strip().splitlines()
    row = table[-1].split()
    assert row[0] == "tiny" and row[1] == "2" and row[-1].endswith("%")   # two seeds: an ensemble column


def test_sweep_distills_from_a_teacher_spec_or_a_kept_checkpoint(mnist, tmp_path, monkeypatch):
    """A teacher spec trains once per process and is shared; --keep-models keeps it and every run's checkpoint, and
    a later variant can name such a file as its teacher."""
    monkeypatch.setattr("deepdive.data.load_dataset", lambda *a, **k: mnist)
    spec = {"preset": "fast", "epochs": 1, "limit_train": 600, "overrides": {"arch": "cnn-small"}}
    student = {"preset": "fast", "epochs": 1, "limit_train": 600,
               "overrides": {"arch": "cnn-small", "distill": 0.5}}
    models, out = tmp_path / "models", tmp_path / "sweep.jsonl"
    variants = [{"name": "a", **student, "teacher": spec, "seeds": [0, 1]}, {"name": "b", **student, "teacher": spec}]
    assert _sweep_module().main([json.dumps(variants), "--device", "cpu", "--out", str(out),
                                 "--keep-models", str(models)]) == 0
    assert sorted(p.name for p in models.iterdir()) == ["a_s0.pt", "a_s1.pt", "b_s0.pt", "teacher_0.pt"]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len({r["teacher_test_accuracy"] for r in records}) == 1 and 0.5 < records[0]["teacher_test_accuracy"] <= 1
    variants = [{"name": "c", **student, "teacher": str(models / "teacher_0.pt")}]
    assert _sweep_module().main([json.dumps(variants), "--device", "cpu", "--out", str(out)]) == 0
    last = json.loads(out.read_text().splitlines()[-1])
    assert last["name"] == "c" and last["teacher_test_accuracy"] == records[0]["teacher_test_accuracy"]
    # several kept runs teach as one ensemble: the teacher's accuracy is that of their averaged probabilities
    import deepdive.train.recipe as recipe
    from deepdive.models import Ensemble, load_checkpoint

    taught_by, real_train = [], recipe.train

    def recording_train(*args, teacher=None, **kwargs):
        taught_by.append(teacher)
        return real_train(*args, teacher=teacher, **kwargs)

    monkeypatch.setattr(recipe, "train", recording_train)
    paths = [str(models / name) for name in ("a_s0.pt", "a_s1.pt", "b_s0.pt")]
    probs = sum(recipe.evaluate(load_checkpoint(p), mnist.test_images, mnist.test_labels)[0] for p in paths)
    variants = [{"name": "d", **student, "teacher": paths}]
    assert _sweep_module().main([json.dumps(variants), "--device", "cpu", "--out", str(out)]) == 0
    assert isinstance(taught_by[-1], Ensemble) and len(taught_by[-1].members) == 3
    last = json.loads(out.read_text().splitlines()[-1])
    assert last["name"] == "d"
    assert last["teacher_test_accuracy"] == pytest.approx(float((probs.argmax(1) == mnist.test_labels).mean()))


def test_swa_needs_epoch_counts_of_at_least_one(capsys):
    with pytest.raises(SystemExit):
        _sweep_module().main(['[{"name": "x", "preset": "fast"}]', "--swa", "0,4"])
    assert "--swa takes epoch counts of at least 1" in capsys.readouterr().err


def test_averaged_model_means_float_entries_and_keeps_the_last_counters():
    import torch
    import torch.nn as nn

    sweep = _sweep_module()
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    first = {k: v.clone() for k, v in model.state_dict().items()}
    for v in model.state_dict().values():
        v += 4 if v.is_floating_point() else 7          # weights, running statistics, the batch counter
    second = {k: v.clone() for k, v in model.state_dict().items()}
    avg = sweep.averaged_model(model, [first, second]).state_dict()
    for k, v in avg.items():
        want = (first[k] + second[k]) / 2 if v.is_floating_point() else second[k]
        assert torch.equal(v, want), k
    assert not torch.equal(avg["0.weight"], second["0.weight"])
    assert all(torch.equal(v, second[k]) for k, v in model.state_dict().items())   # a copy: the model is untouched


def _load_ensembles():
    """benchmarks/ensembles.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("ensembles", SWEEP.parent / "ensembles.py")
    ensembles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ensembles)
    return ensembles


def test_ensembles_scores_runs_and_their_average(tmp_path, capsys):
    """benchmarks/ensembles.py reads --probs-out files (here a hand-made one: two runs, one of them wrong on one of
    four images): each run, their median, the averaged ensemble and the images half the runs get wrong."""
    ensembles = _load_ensembles()
    labels = np.array([0, 1, 1, 0])
    right = np.eye(2, dtype=np.float32)[labels]
    wrong = right.copy()
    wrong[3] = [0.4, 0.6]
    path = tmp_path / "probs.npz"
    np.savez_compressed(path, labels=labels, **{"a/0": right, "a/1": wrong})
    assert ensembles.main([str(path), "a"]) == 0
    out = capsys.readouterr().out
    assert "87.50% (75.00-100.00)" in out                      # the two runs' median and range
    assert "ensemble of 2 (a/0 + a/1): 100.00%; 1 test images are wrong in at least half" in out
    assert out.splitlines()[-2:] == ["  a/0    0    0", "  a/1    0    1"]     # shared errors; a/1's own on the diagonal
    assert "wrong in every one of them: test rows []" in out
    assert ensembles.main([str(path), "a/1"]) == 0
    assert "wrong in every one of them: test rows [3]" in capsys.readouterr().out


def test_ensembles_sizes_scores_every_subset_and_the_disjoint_ones_in_seed_order(tmp_path, capsys):
    """--sizes: for each K, the mean and range over every K-run subset, then the disjoint ensembles taken in seed
    order (1, 2, 10: numeric, not the file's or the alphabet's order). Three runs, each wrong on some of four
    images: seeds 1 + 2 fix each other (100%), a pair with seed 10 fixes one of its two errors (75%), all three
    together get both shared images wrong (50%)."""
    ensembles = _load_ensembles()
    labels = np.zeros(4, dtype=int)
    runs = {seed: np.tile(np.float32([0.9, 0.1]), (4, 1)) for seed in (10, 1, 2)}
    runs[1][0] = runs[2][1] = [0.3, 0.7]
    runs[10][:2] = [0.2, 0.8]
    path = tmp_path / "probs.npz"
    np.savez_compressed(path, labels=labels, **{f"v/{seed}": p for seed, p in runs.items()})
    assert ensembles.main([str(path), "--sizes", "v"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["  2       3 83.333% 75.00-100.00%  100.00", "  3       1 50.000% 50.00-50.00%  50.00"]
    with pytest.raises(SystemExit):
        ensembles.main([str(path), "--sizes", "w"])
    assert "no variant 'w'" in capsys.readouterr().err


def test_ensembles_mix_scores_one_run_per_variant_with_different_seeds(tmp_path, capsys):
    """--mix a b: every pair of an `a` run and a `b` run with different seeds (four of the six pairs here), and the
    pairs ensemble_members cycling [a, b] would train: a/0 + b/1, then a/2 + b/3, which are not there."""
    ensembles = _load_ensembles()
    right, wrong_0, wrong_1 = ([[0.9, 0.1], [0.9, 0.1]], [[0.3, 0.7], [0.9, 0.1]], [[0.9, 0.1], [0.2, 0.8]])
    runs = {"a/0": wrong_0, "a/1": right, "b/0": wrong_1, "b/1": right, "b/2": [[0.05, 0.95], [0.9, 0.1]]}
    path = tmp_path / "probs.npz"
    np.savez_compressed(path, labels=np.zeros(2, dtype=int), **{k: np.float32(v) for k, v in runs.items()})
    assert ensembles.main([str(path), "--mix", "a", "b"]) == 0
    out = capsys.readouterr().out
    # a/0+b/1 100%, a/0+b/2 50% (both runs wrong on image 0), a/1+b/0 100%, a/1+b/2 50%
    assert "one run each of a + b, pairwise different seeds: 4 ensembles, mean 75.000% (50.00-100.00%)" in out
    assert out.rstrip().endswith("(member m: seed s + m; s = 0, K, 2K, ...): 100.00%")
    for bad, why in ((["a", "a"], "one is named twice"), (["a", "z"], "unknown: z")):
        with pytest.raises(SystemExit):
            ensembles.main([str(path), "--mix", *bad])
        assert why in capsys.readouterr().err


def test_ensembles_combine_rules_disagree_where_they_should():
    """Three members, three images (true class 0 each). Image 0: one confident member outvoted by two unsure ones
    (mean right, vote wrong). Image 1: every member gives class 0 0.35; class 1 has the higher mean, but one
    member gives it 0.05, which the geometric mean punishes. Image 2: two members narrowly right, one
    certain of class 1 (only the vote is right). A tied vote goes to the higher mean probability."""
    combine = _load_ensembles().combine
    members = np.float32([
        [[0.45, 0.55, 0.00], [0.35, 0.60, 0.05], [0.55, 0.45, 0.00]],
        [[0.45, 0.55, 0.00], [0.35, 0.05, 0.60], [0.55, 0.45, 0.00]],
        [[0.98, 0.01, 0.01], [0.35, 0.60, 0.05], [0.00, 1.00, 0.00]],
    ])
    assert combine(members, "mean").argmax(1).tolist() == [0, 1, 1]
    assert combine(members, "geometric").argmax(1).tolist() == [0, 0, 1]
    assert combine(members, "vote").argmax(1).tolist() == [1, 1, 0]
    tie = np.float32([[[0.6, 0.4]], [[0.2, 0.8]]])
    assert combine(tie, "vote").argmax(1).tolist() == [1]
    with pytest.raises(ValueError, match="combine must be one of"):
        combine(members, "median")


@pytest.mark.parametrize("path", sorted(SWEEP.parent.glob("sweep_*.json")),
                         ids=lambda p: p.name)
def test_committed_sweep_files_resolve(path):
    """A typo in a sweep file would surface only on the GPU machine, minutes into its device time: every variant
    must resolve (preset, overrides, epochs) on the CPU and on CUDA, as a single model and as each member."""
    from deepdive.train.recipe import resolve_config

    variants = json.loads(path.read_text())
    assert variants and all(v["name"] and v["preset"] for v in variants)
    # a variant's teacher spec trains too (a checkpoint path is not checked: it names a file on the GPU machine)
    teachers = [v["teacher"] for v in variants if isinstance(v.get("teacher"), dict)]
    for v in variants + teachers:
        for device in ("cpu", "cuda"):
            for member in [None] + list(range(int(v.get("ensemble", 1)))):
                resolve_config(v["preset"], v.get("overrides"), v.get("epochs"), device=device, member=member)


def test_a_compact_probabilities_file_scores_like_the_full_one(tmp_path, capsys):
    """--compact keeps only the images some run gives the true class <= 0.5; every ensemble of its runs scores
    exactly as from the full file, and it refuses to be mixed with other files (whose runs it cannot bound)."""
    ensembles = _load_ensembles()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 40)
    runs = {f"v/{i}": np.eye(3, dtype=np.float32)[labels] * 0.9 + 0.1 / 3 for i in range(3)}
    runs["v/0"][:4] = [0.5, 0.25, 0.25]                      # unsure (or wrong) on the first four images
    runs["v/1"][2:6] = [0.2, 0.2, 0.6]
    full, small = tmp_path / "full.npz", tmp_path / "small.npz"
    np.savez_compressed(full, labels=labels, **runs)
    assert ensembles.main(["--compact", str(full), str(small)]) == 0
    kept = np.load(small)
    assert int(kept["n_test"]) == 40 and 0 < len(kept["labels"]) <= 6
    assert set(kept["rows"]) <= set(range(6)) and np.array_equal(kept["labels"], labels[kept["rows"]])
    capsys.readouterr()
    for members in (["v"], ["v/0", "v/1"], ["v/1"]):
        ensembles.main([str(full), *members])
        from_full = capsys.readouterr().out
        ensembles.main([str(small), *members])
        assert capsys.readouterr().out == from_full
    with pytest.raises(SystemExit):
        ensembles.main([str(small), str(full), "v"])
    assert "can only be scored alone" in capsys.readouterr().err


def test_resume_check_smoke(mnist, capsys, monkeypatch):
    """benchmarks/resume_check.py, what gpu_bench.sh runs first on the GPU machine, works and agrees on the CPU."""
    monkeypatch.setattr("deepdive.data.load_dataset", lambda *a, **k: mnist)
    spec = importlib.util.spec_from_file_location("resume_check", SWEEP.parent / "resume_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--limit-train", "300", "--epochs", "2", "--ensemble", "1"]) == 0
    out = capsys.readouterr().out
    assert "on cpu (fast, ensemble 1" in out and "largest weight difference 0, histories identical" in out
    assert "training dynamics: 2 epochs x 300 images" in out and "resumed identical, counts per epoch as trained" in out


def test_the_recorder_check_runs_on_the_cpu(capsys):
    """benchmarks/recorder_check.py, which the GPU round runs on CUDA, on the CPU: the script itself works."""
    spec = importlib.util.spec_from_file_location("recorder_check", SWEEP.parent / "recorder_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert check.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "3 epochs x 4000 images" in out and "log_step on cpu: 500 points, SAME" in out
    assert "parameter histograms on cpu: 12 tensors, largest bin difference from numpy 0; SAME" in out
