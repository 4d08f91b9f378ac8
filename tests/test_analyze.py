"""dcutmix-analyze on really trained runs: clean and FGSM error, calibration, loss landscape, CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dcutmix.analyze import (
    FGSM_EPSILONS,
    analysis_columns,
    analyze_run,
    calibration,
    entropy_summary,
    evaluate_with_fgsm,
    loss_landscape,
    main,
    plot_analyses,
)
from dcutmix.data import build_data
from dcutmix.models import build_model
from dcutmix.run.checkpoint import extract_model_state, load_file
from dcutmix.train import train_run
from tests.helpers.runs import compose_config, read_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUICK = ["--max-images", "64", "--directions", "1", "--sigmas", "0,0.01", "--device", "cpu"]


def _train(overrides: list[str], run_dir: Path) -> Path:
    """Train in this process and save the composed config where Hydra would put it."""
    cfg = compose_config(overrides)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    assert train_run(cfg, run_dir) == 0
    return run_dir


def _copy_run(run_dir: Path, to: Path) -> Path:
    """A copy of a run folder as training left it (without the analysis another test wrote)."""
    return shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("analysis.json"))


def _strict_json(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _model_and_data(run_dir: Path):
    """The run's model and data rebuilt here by hand, independently of dcutmix.analyze."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    data = build_data(
        OmegaConf.to_container(cfg.dataset), batch_size=64, device=torch.device("cpu"), seed=0
    )
    model = build_model("tiny", num_classes=data.num_classes, in_channels=data.in_channels)
    model.load_state_dict(extract_model_state(load_file(run_dir / "checkpoints" / "last.pt")))
    return model.eval(), data


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny model trained without mixing for three epochs on digits (a few seconds)."""
    return _train(["mixing=none", "trainer.epochs=3"], tmp_path_factory.mktemp("runs") / "none-s0")


@pytest.fixture(scope="module")
def analysis(trained: Path) -> dict:
    """The analysis of every validation image of ``trained``."""
    return analyze_run(
        trained, max_images=None, directions=2, sigmas=(0.0, 0.005, 0.02), progress=False
    )


def test_epsilon_zero_gives_the_clean_error(trained):
    model, data = _model_and_data(trained)
    batches = list(data.val.epoch(1))
    evaluation = evaluate_with_fgsm(
        model, batches, epsilons=[0.0, 8 / 255], mean=data.mean, std=data.std
    )
    with torch.no_grad():
        wrong = sum(int((model(x).argmax(1) != y).sum()) for x, y in batches)
    images = sum(y.numel() for _, y in batches)
    assert evaluation.fgsm_top1_err[0] == pytest.approx(100 * wrong / images, abs=1e-9)
    assert evaluation.top1_err == pytest.approx(100 * wrong / images, abs=1e-9)
    assert evaluation.fgsm_top1_err[1] > evaluation.top1_err


def test_clean_figures_match_the_trainers_evaluation(trained, analysis):
    results = read_results(trained)
    assert analysis["images"] == 360  # every digits validation image
    assert analysis["clean"]["top1_err"] == pytest.approx(results["top1_err_last"], abs=1e-9)
    assert analysis["clean"]["top5_err"] == pytest.approx(results["top5_err_last"], abs=1e-9)
    assert analysis["clean"]["nll"] == pytest.approx(results["val_loss_last"], rel=1e-5)
    assert analysis["mode"] == "none" and analysis["checkpoint"]["epoch"] == 3
    assert _strict_json(trained / "analysis.json") == analysis


def test_fgsm_error_does_not_fall_as_epsilon_grows(analysis):
    assert analysis["fgsm"]["epsilons_255"] == list(FGSM_EPSILONS)
    errors = [analysis["clean"]["top1_err"], *analysis["fgsm"]["top1_err"]]
    assert errors == sorted(errors)
    assert errors[-1] > errors[0] + 10  # the attack really bites at 8/255


class _Recorder(nn.Module):
    """Passes inputs through to the model, keeping a copy of each."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


def test_fgsm_steps_in_pixel_space_and_stays_in_the_image(trained):
    model, data = _model_and_data(trained)
    images, labels = next(iter(data.val.epoch(1)))
    recorder = _Recorder(model)
    epsilon = 4 / 255
    evaluate_with_fgsm(
        recorder, [(images, labels)], epsilons=[epsilon], mean=data.mean, std=data.std
    )
    clean, attacked = recorder.inputs
    assert torch.equal(clean, images)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    clean_pixels, attacked_pixels = clean * std + mean, attacked * std + mean
    assert attacked_pixels.min() >= -1e-6 and attacked_pixels.max() <= 1 + 1e-6
    moved = (attacked_pixels - clean_pixels).abs()
    assert moved.max() <= epsilon + 1e-6
    # Pixels away from the range's ends move by the full epsilon; black ones cannot go lower.
    inside = (clean_pixels > epsilon + 1e-3) & (clean_pixels < 1 - epsilon - 1e-3)
    assert inside.any() and torch.allclose(
        moved[inside], torch.full_like(moved[inside], epsilon), atol=1e-5
    )
    assert (moved < epsilon / 2).any()


def test_sigma_zero_gives_the_clean_loss_and_weights_come_back_exactly(trained):
    model, data = _model_and_data(trained)
    batches = list(data.val.epoch(1))[:2]
    clean = evaluate_with_fgsm(model, batches, epsilons=[0.0], mean=data.mean, std=data.std)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    landscape = loss_landscape(model, batches, [0.0, 0.01, 0.0, 1e30], directions=2, seed=0)
    for losses in landscape["loss_per_direction"]:
        assert losses[0] == pytest.approx(clean.nll, rel=1e-6)
        assert losses[2] == pytest.approx(clean.nll, rel=1e-6)  # zero again after a perturbation
        assert losses[1] != pytest.approx(clean.nll, rel=1e-3)
        assert losses[3] is None  # diverged: recorded as null, not NaN
    assert landscape["loss"][0] == pytest.approx(clean.nll, rel=1e-6)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    again = loss_landscape(model, batches, [0.0, 0.01], directions=2, seed=0)
    other = loss_landscape(model, batches, [0.0, 0.01], directions=2, seed=1)
    assert again["loss_per_direction"] == [row[:2] for row in landscape["loss_per_direction"]]
    assert other["loss"][1] != again["loss"][1]


def test_landscape_moves_conv_and_linear_weights_only(trained):
    model, data = _model_and_data(trained)
    batches = list(data.val.epoch(1))[:1]
    trained_state = {k: v.clone() for k, v in model.state_dict().items()}
    changed: set[str] = set()

    def note_changes(module, inputs):
        changed.update(
            k for k, v in module.state_dict().items() if not torch.equal(v, trained_state[k])
        )

    hook = model.register_forward_pre_hook(note_changes)
    loss_landscape(model, batches, [0.01], directions=1, seed=0)
    hook.remove()
    expected = {
        f"{name}.weight"
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    }
    assert changed == expected
    batchnorm = {
        f"{name}.{key}"
        for name, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for key in m.state_dict()
    }
    assert batchnorm and changed.isdisjoint(batchnorm)


def test_ece_of_constructed_predictions_matches_a_hand_computed_value():
    confidence = torch.tensor([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    correct = torch.tensor([True, True, True, False, True, False])
    ece, bins = calibration(confidence, correct)
    # bin (14/15, 1]: 4 images, confidence 0.95, accuracy 0.75; bin (8/15, 9/15]: 2 images, 0.55 vs 0.5
    assert ece == pytest.approx(100 * (4 / 6 * 0.20 + 2 / 6 * 0.05))
    assert len(bins) == 15
    assert (bins[14]["count"], bins[14]["confidence"], bins[14]["accuracy"]) == (
        4,
        pytest.approx(0.95),
        0.75,
    )
    assert (bins[8]["count"], bins[8]["confidence"], bins[8]["accuracy"]) == (
        2,
        pytest.approx(0.55),
        0.5,
    )
    assert all(
        b["count"] == 0 and b["accuracy"] is None for i, b in enumerate(bins) if i not in (8, 14)
    )
    assert bins[8]["lower"] == pytest.approx(8 / 15) and bins[8]["upper"] == pytest.approx(9 / 15)
    # the ends of the range fall into the first and last bins
    ece, bins = calibration(torch.tensor([1.0, 0.0]), torch.tensor([True, False]))
    assert ece == 0.0 and bins[14]["count"] == 1 and bins[0]["count"] == 1


def test_reliability_bins_agree_with_scikit_learn():
    from sklearn.calibration import calibration_curve

    generator = np.random.default_rng(0)
    confidence = generator.uniform(0.1, 1.0, 5000)
    correct = generator.uniform(0, 1, 5000) < confidence**2
    ece, bins = calibration(torch.from_numpy(confidence), torch.from_numpy(correct))
    accuracy, mean_confidence = calibration_curve(
        correct, confidence, n_bins=15, strategy="uniform"
    )
    counts, _ = np.histogram(confidence, bins=15, range=(0, 1))
    filled = [b for b in bins if b["count"]]
    assert [b["count"] for b in filled] == counts[counts > 0].tolist()
    assert [b["accuracy"] for b in filled] == pytest.approx(accuracy.tolist())
    assert [b["confidence"] for b in filled] == pytest.approx(mean_confidence.tolist())
    expected = np.sum(counts[counts > 0] * np.abs(accuracy - mean_confidence)) / confidence.size
    assert ece == pytest.approx(100 * expected)


def test_entropy_summaries():
    entropy = torch.tensor([0.1, 0.2, 0.3, 1.0, 2.0])
    correct = torch.tensor([True, True, True, False, False])
    summary = entropy_summary(entropy, correct)
    assert summary["mean"] == pytest.approx(0.72) and summary["median"] == pytest.approx(0.3)
    assert summary["correct"] == {
        "count": 3,
        "mean": pytest.approx(0.2),
        "median": pytest.approx(0.2),
    }
    assert summary["incorrect"] == {
        "count": 2,
        "mean": pytest.approx(1.5),
        "median": pytest.approx(1.5),
    }
    assert entropy_summary(entropy[:3], correct[:3])["incorrect"] == {
        "count": 0,
        "mean": None,
        "median": None,
    }


def test_a_model_that_cannot_tell_classes_apart_has_the_largest_entropy(trained):
    model, data = _model_and_data(trained)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
    evaluation = evaluate_with_fgsm(
        model, list(data.val.epoch(1))[:1], epsilons=[], mean=data.mean, std=data.std
    )
    assert torch.allclose(evaluation.entropy, torch.full_like(evaluation.entropy, math.log(10)))
    assert torch.allclose(evaluation.confidence, torch.full_like(evaluation.confidence, 0.1))


def test_trained_model_is_less_sure_where_it_is_wrong(analysis):
    entropy = analysis["predictive_entropy"]
    assert 0 < entropy["mean"] < entropy["max"] == pytest.approx(math.log(10))
    assert entropy["correct"]["count"] + entropy["incorrect"]["count"] == analysis["images"]
    assert entropy["incorrect"]["mean"] > entropy["correct"]["mean"]


def test_columns_for_the_report(trained, analysis, tmp_path):
    columns = analysis_columns(trained)
    assert columns == {
        "clean_top1_err": analysis["clean"]["top1_err"],
        "clean_top5_err": analysis["clean"]["top5_err"],
        "nll": analysis["clean"]["nll"],
        "ece": analysis["calibration"]["ece"],
        **{
            f"fgsm_top1_err@{e}": err
            for e, err in zip(FGSM_EPSILONS, analysis["fgsm"]["top1_err"], strict=True)
        },
        "predictive_entropy_mean": analysis["predictive_entropy"]["mean"],
    }
    assert analysis_columns(tmp_path) == {}


def test_plots_average_runs_of_a_mode(trained, analysis, tmp_path):
    out = tmp_path / "plots"
    written = plot_analyses(
        {"none": [trained, trained], "cutmix": [tmp_path / "not-analysed"]}, out
    )
    assert [p.name for p in written] == [
        "plot_loss_landscape.png",
        "plot_fgsm.png",
        "plot_reliability.png",
    ]
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in written)
    assert plot_analyses({"cutmix": [tmp_path / "not-analysed"]}, tmp_path / "none") == []
    assert not (tmp_path / "none").exists()


def test_a_sweep_folder_is_analysed_run_by_run(trained, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _copy_run(trained, sweep / "none-s0")
    _train(
        ["mixing=cutmix", "trainer.epochs=1", "trainer.limit_train_batches=3"], sweep / "cutmix-s0"
    )
    _copy_run(trained, sweep / "killed")
    results = read_results(sweep / "killed")
    (sweep / "killed" / "results.json").write_text(json.dumps({**results, "status": "running"}))
    _copy_run(trained, sweep / "no-checkpoint")
    shutil.rmtree(sweep / "no-checkpoint" / "checkpoints")
    (sweep / "never-started" / ".hydra").mkdir(parents=True)
    shutil.copy(trained / ".hydra" / "config.yaml", sweep / "never-started" / ".hydra")

    assert main([str(sweep), *QUICK]) == 0
    err = capsys.readouterr().err
    for name in ("none-s0", "cutmix-s0"):
        analysis = _strict_json(sweep / name / "analysis.json")
        assert analysis["images"] == 64 and analysis["settings"]["directions"] == 1
    for name in ("killed", "no-checkpoint", "never-started"):
        assert not (sweep / name / "analysis.json").exists()
    skips = [line for line in err.splitlines() if "skipping" in line]
    assert len(skips) == 3
    assert any(
        f"{sweep / 'killed'}: status is 'running', not 'completed'" in line for line in skips
    )
    assert any(f"{sweep / 'no-checkpoint'}: no checkpoints/last.pt" in line for line in skips)
    assert any(f"{sweep / 'never-started'}: no readable results.json" in line for line in skips)
    assert "2 run(s) analysed, 3 skipped, 0 failed" in err

    written = (sweep / "none-s0" / "analysis.json").stat().st_ino
    assert main([str(sweep / "none-s0"), *QUICK]) == 0
    assert "is up to date" in capsys.readouterr().err
    assert (sweep / "none-s0" / "analysis.json").stat().st_ino == written
    assert main([str(sweep / "none-s0"), *QUICK, "--force"]) == 0
    assert (sweep / "none-s0" / "analysis.json").stat().st_ino != written


def test_best_checkpoint_on_request(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path / "run")
    assert main([str(run), *QUICK, "--checkpoint", "best"]) == 0
    assert _strict_json(run / "analysis.json")["checkpoint"]["file"] == "checkpoints/best.pt"
    (run / "checkpoints" / "best.pt").unlink()
    assert main([str(run), *QUICK, "--checkpoint", "best"]) == 1
    assert "no checkpoints/best.pt" in capsys.readouterr().err


def test_a_damaged_checkpoint_fails_only_its_run(trained, tmp_path, capsys):
    good = _copy_run(trained, tmp_path / "sweep" / "good")
    bad = _copy_run(trained, tmp_path / "sweep" / "bad")
    checkpoint = bad / "checkpoints" / "last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # a copy cut short
    assert main([str(tmp_path / "sweep"), *QUICK]) == 0
    err = capsys.readouterr().err
    assert f"error: {bad}: ckpt: {bad / 'checkpoints' / 'last.pt'} is damaged" in err
    assert "1 run(s) analysed, 0 skipped, 1 failed" in err
    assert (good / "analysis.json").exists() and not (bad / "analysis.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "PATH: {missing} does not exist"),
        (["{empty}"], "PATH: {empty} holds no run folders"),
        (["{file}"], "PATH: {file} is not a folder"),
        (["{run}", "--directions", "0"], "--directions: 0 is not valid"),
        (["{run}", "--max-images", "many"], "argument --max-images: 'many' is not valid"),
        (["{run}", "--sigmas", "0,-1"], "--sigmas: [0.0, -1.0] is not valid"),
        (["{run}", "--checkpoint", "worst"], "--checkpoint: 'worst' is not valid"),
        (["{run}", "--device", "tpu"], "--device: 'tpu' is not a device"),
        (["{run}", "--unknown"], "unrecognized arguments: --unknown"),
        ([], "the following arguments are required: PATH"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(trained, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("")
    places = {
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "file": tmp_path / "file",
        "run": trained,
    }
    assert main([a.format(**places) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message.format(**places) in err


@pytest.mark.slow
def test_command_line_on_a_real_hydra_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    train = subprocess.run(
        [sys.executable, "-m", "dcutmix.train", "-m", "mixing=none,mixup", "trainer.epochs=1",
         "trainer.limit_train_batches=3", "logger=none", "trainer.device=cpu", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    analyze = subprocess.run(
        [sys.executable, "-m", "dcutmix.analyze", str(sweep), *QUICK],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert analyze.returncode == 0, analyze.stderr
    analyses = sorted(sweep.glob("*/analysis.json"))
    assert len(analyses) == 2
    assert {_strict_json(p)["mode"] for p in analyses} == {"none", "mixup"}
    assert "step 1/3" in analyze.stderr  # plain progress lines when stderr is not a terminal
