"""haq pretrain / eval / finetune on the command line (digits data, tiny model)."""

import json

import pytest
import torch

from haq.cli import main
from haq.policy import Policy
from tests.conftest import stop_at_step

NAMES = ["body.0", "body.2", "body.5", "head"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "tiny.pt"
    code = main(
        [
            "pretrain",
            "--model",
            "tests.conftest:TinyNet",
            "--dataset",
            "digits",
            "--out",
            str(path),
            "--epochs",
            "4",
            "--lr",
            "0.05",
            "--batch-size",
            "64",
            "--no-augment",
        ]
    )
    assert code == 0 and path.is_file()
    return str(path)


def test_pretrain_reaches_useful_accuracy(ckpt):

    payload = torch.load(ckpt, weights_only=False)
    assert payload["meta"]["accuracy"]["top1"] > 85.0
    assert payload["meta"]["input_shape"] == (1, 8, 8) or list(payload["meta"]["input_shape"]) == [
        1,
        8,
        8,
    ]


def test_eval_prints_fp_quantized_and_cost(ckpt, capsys):
    code = main(
        [
            "eval",
            "--model",
            "tests.conftest:TinyNet",
            "--checkpoint",
            ckpt,
            "--dataset",
            "digits",
            "--policy",
            "w4a4",
            "--finetune-steps",
            "5",
            "--hardware",
            "bitfusion",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "full precision   top-1" in out and "w4a4" in out and "cost on bitfusion" in out


def test_eval_shows_its_passes_unless_told_not_to(ckpt, capsys):
    """``haq eval`` shows a bar per pass on stderr (full precision, the finetune, the
    policy's own), the report alone on stdout; ``--no-progress`` shows none."""
    argv = ["eval", "--model", "tests.conftest:TinyNet", "--checkpoint", ckpt]
    argv += ["--dataset", "digits", "--policy", "w4a4", "--finetune-steps", "3"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "full precision:" in captured.err and "w4a4:" in captured.err
    assert "finetune" in captured.err and "it/s" not in captured.out
    assert main([*argv, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "full precision:" not in captured.err and "w4a4:" not in captured.err
    assert "full precision   top-1" in captured.out


def test_eval_policy_file_and_kmeans(ckpt, capsys, tmp_path):
    Policy.from_arrays(NAMES, [8, 3, 3, 8], [8, 4, 4, 8]).save(tmp_path / "p.json")
    assert (
        main(
            [
                "eval",
                "--model",
                "tests.conftest:TinyNet",
                "--checkpoint",
                ckpt,
                "--dataset",
                "digits",
                "--policy",
                str(tmp_path / "p.json"),
                "--mode",
                "kmeans",
            ]
        )
        == 0
    )
    assert "kmeans" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--checkpoint", "/nonexistent.pt"], "not found"),
        (["--policy", "w4a9"], "1..8"),
        (["--dataset", "mnist"], "not found"),
    ],
)
def test_eval_bad_input(ckpt, capsys, extra, message, monkeypatch, tmp_path):
    monkeypatch.setenv("HAQ_DATA", str(tmp_path))
    argv = [
        "eval",
        "--model",
        "tests.conftest:TinyNet",
        "--checkpoint",
        ckpt,
        "--dataset",
        "digits",
        *extra,
    ]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_eval_wrong_architecture_and_bad_file(ckpt, capsys, tmp_path):
    code = main(["eval", "--model", "resnet_fmnist", "--checkpoint", ckpt, "--dataset", "digits"])
    err = capsys.readouterr().err
    assert (
        code == 2 and "written for model 'tests.conftest:TinyNet', not for 'resnet_fmnist'" in err
    )
    (tmp_path / "junk.pt").write_text("junk")
    code = main(
        [
            "eval",
            "--model",
            "tests.conftest:TinyNet",
            "--checkpoint",
            str(tmp_path / "junk.pt"),
            "--dataset",
            "digits",
        ]
    )
    assert code == 2 and "unreadable" in capsys.readouterr().err
    Policy.from_arrays(NAMES[:3], [8, 8, 8], [8, 8, 8]).save(tmp_path / "short.json")
    code = main(
        [
            "eval",
            "--model",
            "tests.conftest:TinyNet",
            "--checkpoint",
            ckpt,
            "--dataset",
            "digits",
            "--policy",
            str(tmp_path / "short.json"),
        ]
    )
    assert code == 2 and "no bits for layer 'head'" in capsys.readouterr().err


def test_finetune_command_writes_quantized_checkpoint(ckpt, capsys, tmp_path, monkeypatch):
    Policy.from_arrays(NAMES, [8, 3, 3, 8], [8, 4, 4, 8]).save(tmp_path / "p.json")
    out = tmp_path / "final.pt"
    argv = ["finetune", "--policy", str(tmp_path / "p.json"), "--model", "tests.conftest:TinyNet"]
    argv += ["--checkpoint", ckpt, "--dataset", "digits", "--epochs", "2", "--out", str(out)]
    # Ctrl-C in the second epoch (12 steps an epoch): the first epoch's end is kept
    stop_at_step(monkeypatch, 15)
    assert main(argv) == 130 and (tmp_path / "final.pt.partial").is_file()
    assert "the same command continues after the last finished epoch" in capsys.readouterr().err
    monkeypatch.undo()
    capsys.readouterr()
    code = main(argv)  # the same command again: continues after epoch 1
    captured = capsys.readouterr()
    assert "continuing the finetune at step 12 of 24" in captured.err
    assert not (tmp_path / "final.pt.partial").exists()
    text = captured.out
    assert code == 0 and "test top-1" in text and out.is_file()
    # a bar per pass on stderr: the three test-set evaluations and the finetune
    for bar in ("full precision:", "before finetune:", "after finetune:", "finetune"):
        assert bar in captured.err, bar
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["policy"]["accuracy"]["test_top1"] == pytest.approx(
        meta["result"]["quantized_test_top1"]
    )
    assert meta["result"]["quantized_test_top1"] > 50
    # the depthwise conv: quantizer facts travel with the policy
    layer = meta["policy"]["layers"][1]
    assert layer["quantizer"] == "linear" and layer["granularity"] == "per-tensor"
    assert layer["w_clip"] > 0 and layer["a_clip"] > 0 and layer["a_signed"] is False
    assert "a_clip" not in meta["policy"]["layers"][0]  # the network input is not re-quantized
    # the finetuned checkpoint exports as is
    code = main(
        ["export", "--checkpoint", str(out), "--format", "torch", "--out", str(tmp_path / "e.pt")]
    )
    assert code == 0 and "finetuned quantized checkpoint" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["eval", "finetune"])
def test_dataset_that_does_not_fit_the_model_is_one_line(ckpt, capsys, tmp_path, command):
    """A checkpoint of 8x8 digits with 28x28 Fashion-MNIST: refused before any work, in one
    line, by eval and by finetune alike (finetune used to report torch's matrix-shape message)."""
    policy = tmp_path / "p.json"
    Policy.from_arrays(NAMES, [4] * 4, [4] * 4, "linear").save(policy)
    argv = [command, "--model", "tests.conftest:TinyNet", "--checkpoint", ckpt]
    argv += ["--dataset", "fashion-mnist", "--policy", str(policy)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "has images (1, 28, 28); the model expects (1, 8, 8)" in err
    assert len(err.strip().splitlines()) == 1


def test_finetune_and_export_take_a_uniform_policy(ckpt, capsys, tmp_path, monkeypatch):
    """``--policy wXaY`` works for finetune and export as it does for eval and cost: the
    policy is built for the model's layers; finetune writes ``wXaY.final.pt`` here."""
    monkeypatch.chdir(tmp_path)
    model = ["--model", "tests.conftest:TinyNet", "--checkpoint", ckpt, "--dataset", "digits"]
    code = main(["finetune", "--policy", "w4a4", *model, "--epochs", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "test top-1" in capsys.readouterr().out
    meta = json.loads((tmp_path / "w4a4.final.json").read_text())
    assert meta["source"]["policy"] == "w4a4"
    assert [layer["name"] for layer in meta["policy"]["layers"]] == NAMES
    assert {(layer["w_bits"], layer["a_bits"]) for layer in meta["policy"]["layers"]} == {(4, 4)}
    assert meta["result"]["quantized_test_top1"] > 50
    # the finetuned file exports; naming the same policy again is accepted, another refused
    final = ["--checkpoint", "w4a4.final.pt", "--format", "torch"]
    assert main(["export", *final, "--policy", "w4a4", "--out", "a.pt"]) == 0
    assert main(["export", *final, "--policy", "w4a3", "--out", "b.pt"]) == 2
    assert "differs from the policy stored" in capsys.readouterr().err
    # a pretrained checkpoint, calibrated on the spot
    assert main(["export", *model, "--policy", "w3a5", "--format", "torch", "--out", "c.pt"]) == 0
    assert "quantized with w3a5 (calibrated, not finetuned)" in capsys.readouterr().out
    # checked before any model is read
    assert main(["finetune", "--policy", "w9a4", *model]) == 2
    assert "weight bits must be an integer in 1..8" in capsys.readouterr().err
    assert not (tmp_path / "w9a4.final.pt").exists()


def test_export_without_a_checkpoint_uses_the_shipped_model(capsys, tmp_path):
    """As for eval and finetune, the model defaults to the shipped reference checkpoint."""
    out = tmp_path / "m.pt"
    assert main(["export", "--policy", "w8a8", "--format", "torch", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mobilenet_v2_fmnist.pt quantized with w8a8" in text and out.is_file()


def test_a_policy_searched_for_another_model_is_noted(ckpt, capsys, tmp_path):
    """Layer names alone do not tell MobileNet-V2 from the MobileNet-V2-style reference
    model: a policy file that records another model is applied with a note saying so."""
    policy = Policy.from_arrays(NAMES, [8, 4, 4, 8], [8, 4, 4, 8], info={"model": "resnet18"})
    policy.save(tmp_path / "p.json")
    argv = ["eval", "--model", "tests.conftest:TinyNet", "--checkpoint", ckpt]
    assert main([*argv, "--dataset", "digits", "--policy", str(tmp_path / "p.json")]) == 0
    err = capsys.readouterr().err
    assert (
        "note: the policy was searched for resnet18; applying it to tests.conftest:TinyNet" in err
    )
    policy.info["model"] = "tests.conftest:TinyNet"
    policy.save(tmp_path / "p.json")
    assert main([*argv, "--dataset", "digits", "--policy", str(tmp_path / "p.json")]) == 0
    assert "searched for" not in capsys.readouterr().err


def test_bars_redraw_every_30_s_into_a_log_and_often_on_a_terminal(monkeypatch):
    """A search logged to a file wrote ten bar frames a second (megabytes over a long run);
    into anything that is not a terminal a bar now redraws every 30 s."""
    import os
    import pty

    from haq.textfmt import LOG_REDRAW_S, progress_bar

    with progress_bar(total=3, desc="x") as bar:  # pytest captures stderr: not a terminal
        assert bar.mininterval == LOG_REDRAW_S == 30.0
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        monkeypatch.setattr("sys.stderr", terminal)
        with progress_bar(total=3, desc="x") as bar:
            assert bar.mininterval == 0.1  # tqdm's own
    os.close(leader)
