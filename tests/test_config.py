"""Every config file of every group composes, validates, and means what its name says."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from dcutmix.config import CONF_DIR, REPO_ROOT, register, resolve_milestones, run_name, validate
from dcutmix.errors import ConfigError, InputError
from dcutmix.reference import not_reproduced, published_results, reproducible_results
from dcutmix.sweep.points import values_to_check
from tests.helpers.bad_config import SEMANTIC_CASES

register()

GROUPS = ("dataset", "model", "mixing", "optimizer", "scheduler", "logger", "experiment")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.fixture
def composer():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield lambda overrides=(), hydra=False: compose(
            "train", overrides=list(overrides), return_hydra_config=hydra
        )
    GlobalHydra.instance().clear()


def test_defaults_compose_and_validate(composer):
    cfg = composer()
    assert (cfg.dataset.name, cfg.model.name, cfg.mixing.mode) == ("digits", "tiny", "dcutmix")
    assert (cfg.mixing.k, cfg.mixing.alpha, cfg.mixing.prob) == (5, 0.2, 1.0)
    validate(cfg)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(composer, group, option):
    overrides = [f"{group}={option}"]
    if group == "dataset" and option in ("cifar10", "cifar100", "imagefolder"):
        overrides.append(
            "dataset.root=/nonexistent"
        )  # composition only; the root is checked at run time
    cfg = composer(overrides)
    OmegaConf.to_container(cfg.dataset, resolve=True)
    if group == "mixing":
        assert cfg.mixing.mode == option
    elif group in ("dataset", "model", "optimizer", "scheduler", "logger"):
        assert cfg[group].name == option
    validate_cfg = cfg.copy()
    validate_cfg.trainer.device = "cpu"
    validate(validate_cfg)


# What each regulariser row of the paper sets beyond the shared recipe.
REGULARISER_SETTINGS = {
    "stochdepth": lambda cfg: cfg.model.stochastic_depth == 0.5,
    "dropblock": lambda cfg: dict(cfg.model.dropblock) == {"keep_prob": 0.9, "block_size": 4},
    "label_smoothing": lambda cfg: cfg.trainer.label_smoothing == 0.1,
}


def test_each_paper_row_has_an_experiment_with_its_exact_recipe(composer):
    experiments = {name for name in _options("experiment") if name.startswith(("c10_", "c100_"))}
    short = {"cifar100": "c100", "cifar10": "c10"}
    rows = list(csv.DictReader((REPO_ROOT / "dcutmix" / "reference" / "paper_results.csv").open()))
    assert len(rows) == 24
    reproduced = [r for r in rows if r["method"] not in ("stylemix", "stylecutmix")]
    assert len(reproduced) == 22
    for row in reproduced:
        name = f"{short[row['dataset']]}_{row['model']}_{row['method']}"
        assert name in experiments, f"no experiment preset for paper row {name}"
        cfg = composer([f"experiment={name}"])
        regulariser = row["kind"] == "regulariser"
        assert (cfg.dataset.name, cfg.model.name, cfg.mixing.mode) == (
            row["dataset"],
            row["model"],
            "none" if regulariser else row["method"],
        )
        if regulariser:
            assert REGULARISER_SETTINGS[row["method"]](cfg), name
        else:
            assert cfg.model.stochastic_depth is None and cfg.model.dropblock is None
            assert cfg.trainer.label_smoothing == 0.0
        assert cfg.experiment_name == name
        assert (
            cfg.optimizer.name,
            cfg.optimizer.lr,
            cfg.trainer.batch_size,
            cfg.trainer.epochs,
        ) == (
            "sgd",
            0.25,
            64,
            300,
        )
        assert cfg.optimizer.nesterov and cfg.optimizer.momentum == 0.9
        if row["k"]:
            assert cfg.mixing.k == int(row["k"])
        if row["alpha"]:
            assert abs(cfg.mixing.alpha - float(row["alpha"])) < 1e-3
        if row["prob"]:
            assert cfg.mixing.prob == float(row["prob"])
        validate_cfg = cfg.copy()
        validate_cfg.trainer.device = "cpu"
        validate(validate_cfg)
    assert len(experiments) == len(reproduced)


# The two recipes the Fashion-MNIST presets follow (optimizer, lr, momentum, Nesterov, weight
# decay, batch, epochs, milestones as epochs), from Random Erasing's and FMix's scripts.
FMNIST_RECIPES = {
    "re": ("sgd", 0.1, 0.9, False, 5e-4, 128, 300, [150, 225]),
    "fmix": ("sgd", 0.1, 0.9, False, 1e-4, 128, 200, [100, 150]),
}
FMNIST_MODES = ("none", "random_erasing", "cutout", "mixup", "cutmix", "fmix", "dmixup", "dcutmix")


def test_fmnist_presets_follow_their_recipes(composer):
    names = [name for name in _options("experiment") if name.startswith("fmnist_")]
    published = {
        f"fmnist_{r.model}_{r.method}"
        for r in published_results()
        if r.model.startswith("resnet") and r.model != "resnet18" and r.method in FMNIST_MODES
    }
    grid = {f"fmnist_{m}_{mode}" for m in ("resnet20", "preactresnet18") for mode in FMNIST_MODES}
    assert set(names) == grid | published
    for name in names:
        cfg = composer([f"experiment={name}"])
        _, model, mode = name.split("_", 2)
        assert (cfg.dataset.name, cfg.model.name, cfg.mixing.mode) == ("fashion_mnist", model, mode)
        assert cfg.experiment_name == name
        o, t = cfg.optimizer, cfg.trainer
        recipe = (o.name, o.lr, o.momentum, o.nesterov, o.weight_decay, t.batch_size, t.epochs)
        milestones = resolve_milestones(list(cfg.scheduler.milestones), t.epochs)
        which = "fmix" if model == "preactresnet18" else "re"
        assert (*recipe, milestones) == FMNIST_RECIPES[which]
        assert (list(cfg.dataset.mean), list(cfg.dataset.std)) == ([0.1307], [0.3081])
        assert cfg.dataset.crop_padding == 4 and cfg.dataset.hflip
        if model.startswith("resnet"):
            assert (cfg.model.width, cfg.model.shortcut) == (1, "B")
        if mode in ("mixup", "cutmix", "fmix"):
            assert (cfg.mixing.alpha, cfg.mixing.prob) == (1.0, 1.0)
        if mode == "random_erasing":
            # the authors' code made the ResNets' published figures; the paper's reading elsewhere
            reading = (0.4914, 1) if model.startswith("resnet") else ("random", 10)
            assert (cfg.mixing.fill, cfg.mixing.attempts) == reading
            assert (cfg.mixing.prob, list(cfg.mixing.area), cfg.mixing.aspect) == (
                0.5,
                [0.02, 0.4],
                0.3,
            )
        validate_cfg = cfg.copy()
        validate_cfg.trainer.device = "cpu"
        validate(validate_cfg)


def test_paper_fmnist_sweeps_every_fmnist_preset_over_three_seeds():
    params = OmegaConf.load(REPO_ROOT / "sweeps" / "paper_fmnist.yaml").hydra.sweeper.params
    swept = str(params.experiment).split(",")
    assert len(swept) == len(set(swept))
    assert set(swept) == {name for name in _options("experiment") if name.startswith("fmnist_")}
    assert str(params["trainer.seed"]) == "1,2,3"


def test_the_authors_pyramidnet110_dcutmix_command(composer):
    cfg = composer(["experiment=c100_pyramidnet110_dcutmix"])
    assert cfg.optimizer.weight_decay == 4e-5
    assert (cfg.mixing.k, cfg.mixing.alpha, cfg.mixing.prob) == (5, 0.2, 1.0)
    assert resolve_milestones(list(cfg.scheduler.milestones), cfg.trainer.epochs) == [225, 270]
    assert (cfg.model.depth, cfg.model.alpha, cfg.model.bottleneck) == (110, 64, True)


@pytest.mark.parametrize("sweep", sorted(p.stem for p in (REPO_ROOT / "sweeps").glob("*.yaml")))
def test_every_sweep_composes_and_names_itself(composer, sweep):
    cfg = composer([f"+sweep={sweep}"], hydra=True)
    assert cfg.sweep_name == sweep
    params = cfg.hydra.sweeper.params
    assert params, "a sweep declares its grid in hydra.sweeper.params"
    # every value of every swept key composes (both ends of a searched interval)
    for key, values in params.items():
        override = OverridesParser.create().parse_overrides([f"{key}={values}"])[0]
        for value in values_to_check(override):
            composer([f"+sweep={sweep}", f"{key}={value}"])


def test_k_ablation_grid():
    sweep = OmegaConf.load(REPO_ROOT / "sweeps" / "k_ablation.yaml")
    params = sweep.hydra.sweeper.params
    assert [int(k) for k in str(params["mixing.k"]).split(",")] == [2, 3, 4, 5, 6, 8]
    assert set(str(params.mixing).split(",")) == {
        "dcutmix",
        "dmixup",
        "naive_cutmix",
        "naive_mixup",
    }


def test_paper_sweeps_cover_every_reproducible_paper_row():
    for dataset in ("cifar100", "cifar10"):
        sweep = OmegaConf.load(REPO_ROOT / "sweeps" / f"paper_{dataset}.yaml")
        swept = set(str(sweep.hydra.sweeper.params.experiment).split(","))
        expected = {
            f"{'c100' if dataset == 'cifar100' else 'c10'}_{r.model}_{r.method}"
            for r in reproducible_results()
            if r.dataset == dataset
        }
        assert swept == expected
    assert {r.method for r, _ in not_reproduced()} == {"stylemix", "stylecutmix"}


def test_zoo_sweeps_every_mixing_mode_over_three_seeds():
    from dcutmix.mixing import MIXING_MODES

    params = OmegaConf.load(REPO_ROOT / "sweeps" / "zoo.yaml").hydra.sweeper.params
    modes = str(params.mixing).split(",")
    assert set(MIXING_MODES) <= set(modes) and len(modes) == len(set(modes)) == 12
    assert set(modes) == set(MIXING_MODES)
    assert str(params["trainer.seed"]) == "1,2,3"


@pytest.mark.parametrize(
    ("overrides", "message"), SEMANTIC_CASES, ids=[" ".join(c[0]) for c in SEMANTIC_CASES]
)
def test_semantic_checks_name_the_key(composer, overrides, message):
    cfg = composer(overrides)
    with pytest.raises(InputError) as info:
        validate(cfg)
    assert info.value.key == message.split(":")[0]
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_run_names_say_what_ran():
    assert run_name("dcutmix", 5, 0.2, 1) == "dcutmix-k5-a0.2-s1"
    assert run_name("none", None, None, 3) == "none-s3"
    assert run_name("mixup", 2, 1.0, 0) == "mixup-a1-s0"
    assert run_name("dmixup", 3, 1 / 3, 2) == "dmixup-k3-a0.3333-s2"
    assert (
        run_name("dcutmix", 5, 0.2, 1, "c100_pyramidnet110_dcutmix")
        == "c100_pyramidnet110_dcutmix-s1"
    )
    named = run_name(
        "dcutmix", 5, 0.2, 1, None, "+sweep=demo,mixing=dcutmix,optimizer.lr=0.05,trainer.seed=1"
    )
    assert named == "dcutmix-k5-a0.2-lr0.05-s1"
    # any other swept key keeps jobs apart, even one that does not change the numbers
    names = {run_name("dcutmix", 5, 0.2, 1, None, f"trainer.log_every={n}") for n in (10, 20)}
    assert len(names) == 2
    assert (
        run_name("none", None, None, 1, None, "dataset.root=/data/cifar")
        == "none-root_data_cifar-s1"
    )


def test_cuda_device_without_cuda_is_refused(composer, monkeypatch):
    import torch

    # Runs on a CUDA machine too, as one where torch finds no GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        ConfigError, match=r"trainer\.device: cuda was requested but CUDA is not available"
    ):
        validate(composer(["trainer.device=cuda"]))


def test_conf_sweep_is_the_sweeps_folder():
    assert (CONF_DIR / "sweep").resolve() == (REPO_ROOT / "sweeps").resolve()
    assert Path(CONF_DIR / "sweep" / "demo.yaml").is_file()
