"""The `deepdive` command line: train/runs JSON contracts, predict, error paths and exit codes."""
import json
import re
import sys
from datetime import datetime, timedelta, timezone

import pytest
from PIL import Image, ImageDraw

from deepdive.cli import main
from deepdive.store import Store

TRAIN_KEYS = {"run_id", "run_dir", "test_accuracy", "train_seconds", "epochs"}
RUNS_KEYS = {"id", "name", "dataset", "recipe", "status", "test_accuracy", "created", "notes"}


@pytest.fixture(scope="module")
def cli_train(run_cli, mnist, tmp_path_factory):
    """`deepdive train --json` in a subprocess, small: (workspace, CompletedProcess)."""
    ws = tmp_path_factory.mktemp("cli_ws")
    proc = run_cli("train", "--preset", "fast", "--epochs", "1", "--limit-train", "500", "--limit-test", "100",
                   "--workspace", ws, "--name", "cli-run", "--precision", "fp32", "--json")
    return ws, proc


def test_train_json_contract(cli_train):
    ws, proc = cli_train
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "with --json stdout holds only the result; progress goes to stderr"
    result = json.loads(lines[-1])
    assert set(result) == TRAIN_KEYS
    assert result["epochs"] == 1 and 0 <= result["test_accuracy"] <= 1 and result["train_seconds"] > 0
    assert result["run_dir"].endswith(result["run_id"]) and (ws / result["run_id"] / "model_best.pt").is_file()
    assert "epoch" in proc.stderr.lower()  # progress went to stderr
    from deepdive.store import Store

    with Store.open(ws, create=False) as store:
        assert store.get_run(result["run_id"]).config["resolved"]["amp"] is False   # --precision fp32


def test_runs_json_and_table(cli_train, run_cli, capsys):
    ws, train = cli_train
    run_id = json.loads(train.stdout.splitlines()[-1])["run_id"]
    proc = run_cli("runs", "--workspace", ws, "--json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout.splitlines()[-1])
    assert set(row) == RUNS_KEYS
    assert (row["id"], row["name"], row["dataset"], row["status"]) == (run_id, "cli-run", "mnist", "finished")
    assert row["recipe"] == {"preset": "fast", "epochs": 1, "seed": 0, "ensemble": 1, "limit_train": 500,
                             "overrides": {"amp": False}}

    assert main(["runs", "--workspace", str(ws)]) == 0
    out = [re.split(r"\s{2,}", line) for line in capsys.readouterr().out.splitlines()]
    assert out[0][:5] == ["ID", "NAME", "DATASET", "RECIPE", "STATUS"]
    assert out[1][:5] == [run_id, "cli-run", "mnist", "fast · 1 ep · seed 0 · 500 images · fp32", "finished"]


def test_runs_grouped_by_recipe_or_name(tmp_path, capsys):
    """`deepdive runs --group-by recipe` puts the seeds of one recipe together, as the runs page does, with the
    test accuracy over them; by name, runs of two recipes under one name go together."""
    from deepdive.store import Store

    ws = tmp_path / "ws"
    with Store.open(ws) as store:
        for name, preset, seed, acc in [("a", "fast", 0, 0.9950), ("a", "fast", 1, 0.9960), ("a", "fast", 2, None),
                                        ("a", "default", 0, 0.9970), ("b", "default", 1, 0.9972)]:
            rid = store.create_run(name, "mnist", {"preset": preset, "seed": seed, "epochs": 3}, {},
                                   [str(c) for c in range(10)], "cpu").id
            if acc is not None:
                store.finish_run(rid, acc, 10.0 * (seed + 1), 1000, "cnn")
    assert main(["runs", "--workspace", str(ws), "--group-by", "recipe", "--json"]) == 0
    groups = {g["group"]: g for g in json.loads(capsys.readouterr().out.splitlines()[-1])}
    assert set(groups) == {"mnist · fast · 3 ep", "mnist · default · 3 ep"}
    fast = groups["mnist · fast · 3 ep"]
    assert len(fast["runs"]) == 3 and fast["n_accuracy"] == 2            # the unfinished seed has no accuracy
    assert (fast["mean"], fast["median"], fast["min"], fast["max"]) == pytest.approx((0.9955, 0.9955, 0.995, 0.996))
    assert fast["std"] == pytest.approx(0.000707, abs=1e-6) and fast["median_train_seconds"] == 15.0
    assert main(["runs", "--workspace", str(ws), "--group-by", "recipe"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["GROUP", "RUNS", "WITH"]
    assert any(line.startswith("mnist · default · 3 ep") and "99.71%" in line and "99.70%-99.72%" in line
               for line in lines)
    assert main(["runs", "--workspace", str(ws), "--group-by", "name", "--json"]) == 0
    by_name = {g["group"]: len(g["runs"]) for g in json.loads(capsys.readouterr().out.splitlines()[-1])}
    assert by_name == {"a": 4, "b": 1}


def test_ctrl_c_then_resume_finishes_the_run(run_cli, mnist, tmp_path, monkeypatch, capsys,
                                             ctrl_c_after_first_epoch):
    """The user's path: Ctrl-C a `deepdive train` after its first epoch (raised from the epoch hook, so the stop
    does not race the training), read the hint it prints, run `deepdive resume` in a fresh process: the same run
    finishes with every epoch; resuming it again is an error that says why."""
    ctrl_c_after_first_epoch(monkeypatch)
    assert main(["train", "--preset", "fast", "--epochs", "3", "--limit-train", "500", "--limit-test", "100",
                 "--workspace", str(tmp_path), "--precision", "fp32"]) == 130
    stderr = capsys.readouterr().err
    hint = re.search(r"continue it with: (deepdive resume (\S+) --workspace \S+)", stderr)
    assert hint, stderr
    run_id = hint.group(2)
    with Store.open(tmp_path, create=False) as store:
        assert store.get_run(run_id).status == "interrupted" and len(store.epochs(run_id)) == 1

    proc = run_cli(*hint.group(1).split()[1:], "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert set(result) == TRAIN_KEYS and result["run_id"] == run_id and result["epochs"] == 3
    with Store.open(tmp_path, create=False) as store:
        run = store.get_run(run_id)
        assert run.status == "finished" and [e["epoch"] for e in store.epochs(run_id)] == [1, 2, 3]
    again = run_cli("resume", run_id, "--workspace", tmp_path)
    assert again.returncode == 2 and "is finished; there is nothing to resume" in again.stderr


def test_runs_on_empty_workspace(tmp_path, capsys):
    assert main(["runs", "--workspace", str(tmp_path / "none"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["runs", "--workspace", str(tmp_path / "none")]) == 0
    assert "no runs" in capsys.readouterr().out
    assert not (tmp_path / "none").exists()  # listing does not create a workspace


def test_runs_shows_killed_run_as_interrupted(tmp_path, capsys):
    with Store.open(tmp_path) as store:
        run = store.create_run("killed", "mnist", {}, {}, [str(i) for i in range(10)], "cpu")
        old = (datetime.now(timezone.utc) - timedelta(minutes=30)).isoformat(timespec="milliseconds")
        store._conn.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (old, run.id))
    assert main(["runs", "--workspace", str(tmp_path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "interrupted" and row["recipe"] is None    # no preset: not a `deepdive train` run
    assert main(["runs", "--workspace", str(tmp_path)]) == 0
    assert re.split(r"\s{2,}", capsys.readouterr().out.splitlines()[1])[3] == "-"


def draw_one(path):
    """A '1' as a person might draw it: a thick dark vertical stroke on a large white canvas."""
    image = Image.new("RGB", (240, 300), "white")
    ImageDraw.Draw(image).line([(125, 40), (115, 260)], fill="black", width=28)
    image.save(path)


def test_predict_classifies_a_drawn_one_and_reports_a_bad_file(tiny_run, tmp_path, capsys):
    one, bad = tmp_path / "one.png", tmp_path / "broken.png"
    draw_one(one)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is no image")
    rc = main(["predict", tiny_run.run_id, str(one), str(bad), "--workspace", str(tiny_run.workspace), "--json"])
    captured = capsys.readouterr()
    assert rc == 1  # one file failed
    good, failed = json.loads(captured.out)
    assert set(good) == {"file", "class", "label", "probabilities"}
    assert (good["file"], good["class"], good["label"]) == (str(one), "1", 1)
    assert len(good["probabilities"]) == 10 and sum(good["probabilities"]) == pytest.approx(1, abs=1e-4)
    assert set(failed) == {"file", "error"} and failed["file"] == str(bad) and "broken.png" in failed["error"]
    assert f"error: {bad}" in captured.err

    assert main(["predict", "latest", str(one), "--workspace", str(tiny_run.workspace)]) == 0
    assert capsys.readouterr().out.startswith(f"{one}: 1 (")


def test_predict_refuses_a_run_whose_inputs_are_unknown(tmp_path, capsys):
    with Store.open(tmp_path) as store:
        record = store.create_run("colour", "cifar10", {}, {}, [str(i) for i in range(10)], "cpu")
        (record.run_dir / "model_best.pt").write_bytes(b"")
    img = tmp_path / "one.png"
    draw_one(img)
    assert main(["predict", "colour", str(img), "--workspace", str(tmp_path)]) == 2
    assert "stores no evaluation inputs" in capsys.readouterr().err


def test_predict_classifies_a_picture_for_a_model_of_your_own(tmp_path, capsys):
    """A 3-channel 12x20 model logged with log_evaluation, its inputs normalised per channel: one of its test images
    saved as a PNG (as the dashboard shows it) and classified again gets its analysed probabilities back; a bigger
    copy of it, resized to the model's input, too. --fit digit is refused for a model that is not 28x28 grey."""
    import torch

    import deepdive
    from deepdive.analysis import display_images

    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 256, (40, 3, 12, 20), generator=g)
    mean, std = torch.tensor([0.5, 0.4, 0.3])[:, None, None], torch.tensor([0.2, 0.25, 0.3])[:, None, None]
    images, labels = (codes / 255 - mean) / std, torch.randint(0, 4, (40,), generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 12 * 20, 4), torch.nn.Softmax(dim=1))
    with torch.no_grad():
        model[1].weight.mul_(20)
    run = deepdive.log_evaluation(model, (images, labels), class_names=list("abcd"), workspace=tmp_path,
                                  name="own", progress=False)
    stored = Store.open(tmp_path, create=False).predictions(run.id, "test")["probs"]
    shown = display_images(images.numpy())
    small, big = tmp_path / "seven.png", tmp_path / "seven-x4.png"
    Image.fromarray(shown[7]).save(small)
    Image.fromarray(shown[7]).resize((80, 48), Image.Resampling.NEAREST).save(big)
    assert main(["predict", "own", str(small), str(big), "--workspace", str(tmp_path), "--json"]) == 0
    for result in json.loads(capsys.readouterr().out):
        assert result["probabilities"] == pytest.approx(stored[7].tolist(), abs=2e-4)
        assert result["label"] == int(stored[7].argmax()) and result["class"] == "abcd"[result["label"]]
    assert stored[7].max() > 0.5           # the model's own confidence, not a softmax of its probabilities
    # the same model logged on a split of another name: its stored inputs are found all the same
    deepdive.log_evaluation(model, (images, labels), class_names=list("abcd"), workspace=tmp_path, name="own-val",
                            split="val", progress=False)
    assert main(["predict", "own-val", str(small), "--workspace", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["probabilities"] == pytest.approx(stored[7].tolist(), abs=2e-4)
    assert main(["predict", "own", str(small), "--fit", "digit", "--workspace", str(tmp_path)]) == 2
    assert "28x28 one-channel" in capsys.readouterr().err


def test_unknown_run_is_a_clear_error_without_traceback(tiny_run, run_cli, tmp_path):
    proc = run_cli("predict", "no-such-run", tmp_path / "x.png", "--workspace", tiny_run.workspace)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no run 'no-such-run'") and tiny_run.run_id in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = run_cli("predict", "latest", tmp_path / "x.png", "--workspace", tmp_path / "nothing-here")
    assert proc.returncode == 2 and proc.stderr.startswith("error: no deepdive workspace")


def test_ctrl_c_exits_130(monkeypatch, tmp_path, capsys):
    import deepdive.train.run

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(deepdive.train.run, "train_and_evaluate", interrupted)
    assert main(["train", "--workspace", str(tmp_path)]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_train_arch_flag_overrides_the_preset_net(monkeypatch, tmp_path):
    import deepdive.models
    import deepdive.train.cli
    import deepdive.train.recipe
    import deepdive.train.run

    # the parser's static copies (no torch import at startup) match the real registries
    assert set(deepdive.train.cli.ARCHS) == set(deepdive.models.ARCHS)
    assert set(deepdive.train.cli.PRESETS) == set(deepdive.train.recipe.PRESETS)
    calls = []
    monkeypatch.setattr(deepdive.train.run, "train_and_evaluate",
                        lambda *a, **kw: calls.append(kw) or {"run_id": "x", "run_dir": "d", "test_accuracy": 0.5,
                                                              "train_seconds": 1.0, "epochs": 1})
    assert main(["train", "--workspace", str(tmp_path), "--arch", "stack5", "--ensemble", "2"]) == 0
    assert main(["train", "--workspace", str(tmp_path)]) == 0
    assert main(["train", "--workspace", str(tmp_path), "--arch", "cnn", "--precision", "bf16"]) == 0
    assert main(["train", "--workspace", str(tmp_path), "--precision", "auto"]) == 0
    assert main(["train", "--workspace", str(tmp_path), "--prune", "0.5"]) == 0
    assert main(["train", "--workspace", str(tmp_path), "--preset", "fast", "--prune", "0"]) == 0
    assert calls[0]["overrides"] == {"arch": "stack5"} and calls[0]["ensemble"] == 2
    assert calls[1]["overrides"] is None
    assert calls[2]["overrides"] == {"arch": "cnn", "amp": True} and calls[3]["overrides"] is None
    assert calls[4]["overrides"] == {"prune": 0.5} and calls[5]["overrides"] == {"prune": 0.0}
    with pytest.raises(SystemExit):
        main(["train", "--arch", "resnet"])


@pytest.mark.parametrize("argv", [["train", "--limit-train", "0"], ["train", "--preset", "huge"],
                                  ["train", "--epochs", "two"], ["predict", "latest"], ["train", "--prune", "1"],
                                  ["train", "--prune", "half"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2


def test_prune_out_of_range_names_the_problem(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--prune", "1"])
    assert "--prune: expected a number in [0, 1), got 1" in capsys.readouterr().err


def test_serve_takes_the_workspace_either_way(tmp_path, monkeypatch, capsys):
    """`deepdive serve W` and `deepdive serve --workspace W` (as every other command takes it) serve the same."""
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app.state.store.workspace))
    Store.open(tmp_path / "a").close()
    assert main(["serve", str(tmp_path / "a")]) == 0
    assert main(["serve", "--workspace", str(tmp_path / "a")]) == 0
    assert served == [tmp_path / "a", tmp_path / "a"]
    assert main(["serve", str(tmp_path / "a"), "--workspace", str(tmp_path / "b")]) == 2
    assert "two workspaces given" in capsys.readouterr().err


def test_all_commands_are_registered(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    for command in ("train", "resume", "runs", "predict", "bench", "analyze", "export", "verify-advice", "serve",
                    "report"):
        assert f"    {command} " in listed or f"    {command}\n" in listed, command


def test_training_path_does_not_import_analysis_or_web_libraries():
    import subprocess
    from pathlib import Path

    import deepdive

    code = ("import sys; from deepdive.cli import build_parser; build_parser(); "
            "import deepdive.train.run, deepdive.train.recipe, deepdive.data, deepdive.models, deepdive.store; "
            "print(sorted(m for m in ('captum', 'cleanlab', 'fastapi', 'plotly') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(deepdive.__file__).parents[1])
    assert out.stdout.strip() == "[]"


def test_delete_asks_first_and_removes_whole_runs(tmp_path, capsys, monkeypatch):
    with Store.open(tmp_path) as store:
        runs = [store.create_run(name, "mnist", {}, {}, [str(c) for c in range(10)], "cpu") for name in "abc"]
        for run in runs:
            (run.run_dir / "model_best.pt").write_bytes(b"x" * 2_000_000)
            store.finish_run(run.id, 0.99, 1.0, 10, "cnn")
    ws = str(tmp_path)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["delete", "a", "--workspace", ws]) == 2
    assert "needs --yes where stdin is not a terminal" in capsys.readouterr().err
    assert main(["delete", "a", "nope", "--workspace", ws, "--yes"]) == 2   # every reference checked before any goes
    assert "no run 'nope'" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["delete", "a", "--workspace", ws]) == 1
    assert "nothing deleted" in capsys.readouterr().out
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["delete", "a", runs[1].id[:-1], "--workspace", ws]) == 0
    out = capsys.readouterr().out
    assert f"{runs[0].id}  a  mnist  finished  99.00%  2.0 MB" in out and "deleted 2 runs, 4.0 MB freed" in out
    with Store.open(tmp_path, create=False) as store:
        assert [r.name for r in store.list_runs()] == ["c"]
    assert not runs[0].run_dir.exists() and not runs[1].run_dir.exists() and runs[2].run_dir.is_dir()


def test_edit_renames_a_run_and_runs_shows_its_notes(tmp_path, capsys):
    with Store.open(tmp_path) as store:
        rid = store.create_run("before", "mnist", {}, {}, [str(c) for c in range(10)], "cpu").id
        store.finish_run(rid, 0.99, 1.0, 10, "cnn")
    ws = str(tmp_path)
    assert main(["edit", "before", "--workspace", ws]) == 2
    assert "nothing to change" in capsys.readouterr().err
    assert main(["edit", "before", "--name", "after", "--notes", "a long note " * 8, "--workspace", ws]) == 0
    assert f"run {rid}: name 'after'" in capsys.readouterr().out
    assert main(["runs", "--workspace", ws]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[-1] == "NOTES" and row.split()[1] == "after"
    assert row.endswith("a long note a long note a long note a l…")        # one line, 40 characters
    assert main(["runs", "--workspace", ws, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["notes"] == ("a long note " * 8).strip()
