"""Models: shapes, parameter counts, the authors' checkpoint layout, devices, dtypes, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from dcutmix.errors import ConfigError
from dcutmix.models import (
    MODEL_NAMES,
    build_model,
    count_parameters,
    load_authors_state_dict,
    model_settings,
)

CONF_MODEL = Path(__file__).resolve().parents[1] / "conf" / "model"

# A 20-layer bottleneck PyramidNet: same code paths as the published ones (widening, zero-padded
# and pooled shortcuts), a fraction of the cost.
SMALL_PYRAMID = {"depth": 20, "alpha": 48}


def _seeded(name: str, seed: int, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, **kwargs)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_gives_one_logit_row_per_image(name: str) -> None:
    model = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("name", "num_classes", "published", "exact"),
    [
        # published figures (CutMix and DCutMix papers, CIFAR-100), given to 0.1M
        ("pyramidnet110", 100, 1.7e6, 1_725_300),
        ("pyramidnet200", 100, 26.8e6, 26_844_952),
        ("resnet18", 10, 11.2e6, 11_173_962),
        ("wrn28_10", 10, 36.5e6, 36_479_194),
    ],
)
def test_parameter_count_matches_published_figure(
    name: str, num_classes: int, published: float, exact: int
) -> None:
    count = count_parameters(build_model(name, num_classes=num_classes))
    assert round(count, -5) == published
    # the exact count of the authors' layout; any change to widths or blocks moves it
    assert count == exact


def test_pyramidnet200_is_within_one_percent_of_26_8m() -> None:
    count = count_parameters(build_model("pyramidnet200", num_classes=100))
    assert abs(count - 26.8e6) / 26.8e6 < 0.01


def test_tiny_is_small() -> None:
    assert 50_000 <= count_parameters(build_model("tiny", num_classes=10)) <= 150_000


def test_count_parameters_skips_frozen_ones() -> None:
    model = build_model("tiny", num_classes=10)
    total = count_parameters(model)
    model.fc.requires_grad_(False)
    assert count_parameters(model) == total - model.fc.weight.numel() - model.fc.bias.numel()


def test_pyramidnet_has_the_authors_module_names() -> None:
    model = build_model("pyramidnet110", num_classes=100)
    top = [name for name, _ in model.named_children()]
    expected = ["conv1", "bn1", "layer1", "layer2", "layer3", "bn_final", "relu_final", "avgpool"]
    assert top == [*expected, "fc"]
    keys = model.state_dict().keys()
    block = [k.removeprefix("layer2.0.") for k in keys if k.startswith("layer2.0.")]
    layers = sorted({k.split(".")[0] for k in block})
    assert layers == ["bn1", "bn2", "bn3", "bn4", "conv1", "conv2", "conv3"]
    # pooling shortcuts only where a stage halves the resolution, and they hold no weights
    pools = [name for name, _ in model.named_modules() if name.endswith("downsample")]
    assert pools == ["layer2.0.downsample", "layer3.0.downsample"]
    assert not any("downsample" in k for k in keys)
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == 12


def test_pyramidnet_widens_block_by_block_to_alpha() -> None:
    model = build_model("pyramidnet110", num_classes=100)
    blocks = [*model.layer1, *model.layer2, *model.layer3]
    widths = [block.conv1.out_channels for block in blocks]
    assert widths == sorted(widths)
    assert (widths[0], widths[-1]) == (18, 16 + 64)
    assert model.fc.in_features == 4 * (16 + 64)


def test_authors_checkpoint_round_trip(tmp_path: Path) -> None:
    source = _seeded("pyramidnet110", 0, num_classes=10, **SMALL_PYRAMID).eval()
    path = tmp_path / "model_best.pth.tar"
    torch.save(
        {"epoch": 300, "net": {f"module.{k}": v for k, v in source.state_dict().items()}}, path
    )
    target = _seeded("pyramidnet110", 1, num_classes=10, **SMALL_PYRAMID).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(source(images), target(images))
        load_authors_state_dict(target, torch.load(path, weights_only=True)["net"])
        assert torch.equal(source(images), target(images))


def test_unprefixed_state_dict_loads_too() -> None:
    source = _seeded("tiny", 0, num_classes=10)
    target = _seeded("tiny", 1, num_classes=10)
    load_authors_state_dict(target, source.state_dict())
    assert torch.equal(target.fc.weight, source.fc.weight)


def test_checkpoint_for_other_class_count_is_rejected_with_shapes() -> None:
    weights = build_model("pyramidnet110", num_classes=10, **SMALL_PYRAMID).state_dict()
    model = build_model("pyramidnet110", num_classes=100, **SMALL_PYRAMID)
    with pytest.raises(ConfigError, match=r"fc\.weight \(10, 256\) vs \(100, 256\)") as error:
        load_authors_state_dict(model, weights)
    assert "num_classes" in str(error.value)


def test_checkpoint_with_missing_and_unexpected_keys_is_rejected() -> None:
    model = build_model("pyramidnet110", num_classes=10, **SMALL_PYRAMID)
    weights = {f"module.{k}": v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    weights["module.classifier.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError) as error:
        load_authors_state_dict(model, weights)
    message = str(error.value)
    assert "\n" not in message
    assert "2 missing: fc.bias, fc.weight" in message
    assert "1 unexpected: classifier.weight" in message


def test_long_key_lists_are_shortened() -> None:
    model = build_model("pyramidnet110", num_classes=10, **SMALL_PYRAMID)
    with pytest.raises(ConfigError, match=r"missing: .*, \.\.\. \d+ more") as error:
        load_authors_state_dict(model, {})
    assert len(str(error.value)) < 400


def test_cpu_and_meta_forward_never_touch_cuda() -> None:
    # A fresh interpreter, so no other test can have initialised CUDA first.
    script = (
        "import torch\n"
        "from dcutmix.models import MODEL_NAMES, build_model\n"
        "for name in MODEL_NAMES:\n"
        "    kwargs = {'depth': 20} if name.startswith('pyramidnet') else {}\n"
        "    build_model(name, num_classes=10, **kwargs)(torch.randn(2, 3, 32, 32))\n"
        "with torch.device('meta'):\n"
        "    out = build_model('pyramidnet200', num_classes=100)(torch.randn(2, 3, 32, 32))\n"
        "assert out.shape == (2, 100) and out.is_meta\n"
        "print('cuda initialised:', torch.cuda.is_initialized())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cuda initialised: False"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_channels_last_gives_the_same_logits(name: str) -> None:
    kwargs = SMALL_PYRAMID if name.startswith("pyramidnet") else {}
    model = build_model(name, num_classes=10, **kwargs).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(images)
        model.to(memory_format=torch.channels_last)
        got = model(images.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_pyramidnet_keeps_channels_last_through_padded_shortcuts() -> None:
    model = build_model("pyramidnet110", num_classes=10, **SMALL_PYRAMID)
    model.to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    features = model.layer3(model.layer2(model.layer1(model.bn1(model.conv1(images)))))
    assert features.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_in_channels_and_image_size_are_honoured(name: str) -> None:
    kwargs = SMALL_PYRAMID if name.startswith("pyramidnet") else {}
    model = build_model(name, num_classes=5, in_channels=1, **kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 24, 24)).shape == (2, 5)
        assert model(torch.randn(1, 1, 40, 40)).shape == (1, 5)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 32, 32))


def test_pyramidnet_trains_under_bf16_autocast() -> None:
    model = build_model("pyramidnet110", num_classes=10, **SMALL_PYRAMID)
    images = torch.randn(4, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images)
    assert logits.shape == (4, 10)
    F.cross_entropy(logits.float(), torch.arange(4)).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_pyramidnet_compiles_as_one_graph() -> None:
    model = build_model("pyramidnet110", num_classes=10, **SMALL_PYRAMID).eval()
    images = torch.randn(2, 3, 32, 32)
    # fullgraph fails on any graph break, e.g. a device-specific allocation in forward
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), model(images))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["pyramidnet110", "pyramidnet200"])
def test_pyramidnet_on_cuda_channels_last_bf16_compiled(name: str) -> None:
    model = build_model(name, num_classes=100).cuda().to(memory_format=torch.channels_last)
    images = torch.randn(8, 3, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    compiled = torch.compile(model)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = compiled(images)
    assert logits.shape == (8, 100) and logits.device.type == "cuda"
    F.cross_entropy(logits.float(), torch.arange(8, device="cuda")).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), model(images), rtol=1e-2, atol=1e-2)


def test_tiny_learns_digits_quickly() -> None:
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    images = F.interpolate(images, size=32, mode="bilinear").expand(-1, 3, -1, -1)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(labels))
    train, val = order[:1400], order[1400:]

    model = build_model("tiny", num_classes=10)
    epochs, batch = 8, 64
    steps_per_epoch = -(-len(train) // batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.1, total_steps=epochs * steps_per_epoch, pct_start=0.25
    )
    for _ in range(epochs):
        model.train()
        shuffled = train[torch.randperm(len(train))]
        for start in range(0, len(shuffled), batch):
            index = shuffled[start : start + batch]
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[val]).argmax(1) == labels[val]).float().mean().item()
    assert accuracy > 0.95


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_file_names_the_model_and_its_default_knobs(name: str) -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_MODEL / f"{name}.yaml"))
    assert cfg.pop("name") == name
    assert sorted(cfg) == list(model_settings(name))
    from_yaml = _seeded(name, 0, num_classes=10, **cfg)
    default = _seeded(name, 0, num_classes=10)
    assert count_parameters(from_yaml) == count_parameters(default)


def test_pyramidnet_knobs_change_the_network() -> None:
    deeper = build_model("pyramidnet110", num_classes=10, depth=164, alpha=48)
    assert len(deeper.layer1) == 18 and deeper.fc.in_features == 4 * (16 + 48)
    basic = build_model("pyramidnet110", num_classes=10, depth=110, alpha=48, bottleneck=False)
    assert not hasattr(basic.layer1[0], "conv3") and basic.fc.in_features == 16 + 48


def test_unknown_model_name_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"model\.name") as error:
        build_model("resnet50", num_classes=10)
    assert all(name in str(error.value) for name in MODEL_NAMES)


@pytest.mark.parametrize(
    ("name", "kwargs", "key", "hint"),
    [
        ("pyramidnet110", {"widen_factor": 2}, "model.widen_factor", "alpha, bottleneck, depth"),
        ("resnet18", {"depth": 34}, "model.depth", "none"),
        ("tiny", {"depth": 3}, "model.depth", "width"),
    ],
)
def test_unknown_setting_is_named(name: str, kwargs: dict, key: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=key) as error:
        build_model(name, num_classes=10, **kwargs)
    assert hint in str(error.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("pyramidnet110", {"depth": 111}, "model.depth: 111 does not fit a bottleneck PyramidNet"),
        ("pyramidnet110", {"depth": 29, "bottleneck": False}, "model.depth: 29 .* 6n\\+2"),
        ("pyramidnet110", {"alpha": 0}, "model.alpha"),
        ("pyramidnet110", {"bottleneck": "yes"}, "model.bottleneck"),
        ("wrn28_10", {"depth": 27}, "model.depth: 27 .* 6n\\+4"),
        ("wrn28_10", {"dropout": 1.0}, "model.dropout"),
        ("wrn28_10", {"widen_factor": 1.5}, "model.widen_factor"),
        ("tiny", {"width": 0}, "model.width"),
        ("tiny", {"width": True}, "model.width"),
    ],
)
def test_bad_setting_values(name: str, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model(name, num_classes=10, **kwargs)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize(("argument", "value"), [("num_classes", 0), ("in_channels", -1)])
def test_bad_data_arguments_are_named(name: str, argument: str, value: int) -> None:
    arguments = {"num_classes": 10, "in_channels": 3, argument: value}
    with pytest.raises(ConfigError, match=argument):
        build_model(name, **arguments)


def test_results_record_tiny_width_only_when_it_is_not_the_default():
    from dcutmix.models.build import recorded_settings

    # earlier tiny runs recorded no width: the default keeps their row, another width is new
    assert recorded_settings({"name": "tiny", "width": 32}) == {}
    assert recorded_settings({"name": "tiny", "width": 8}) == {"width": 8}
    resnet = recorded_settings({"name": "resnet20", "depth": 20, "width": 1, "shortcut": "B"})
    assert resnet == {"depth": 20, "width": 1, "shortcut": "B"}
