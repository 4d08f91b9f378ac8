"""He et al.'s CIFAR ResNets and PreAct-ResNet-18: published sizes, shortcuts, width, 1-channel
28x28 input, running in parts, the regularisers, and one training epoch each."""

from __future__ import annotations

import pytest
import torch

from dcutmix.errors import ConfigError
from dcutmix.models import build_model, count_parameters, hidden_layers

DEPTHS = (20, 32, 44, 56, 110)
RESNETS = tuple(f"resnet{depth}" for depth in DEPTHS)
NEW_MODELS = (*RESNETS, "preactresnet18")
# He et al. 2016, Table 6 (CIFAR-10, option A shortcuts): parameters in millions.
PUBLISHED_MILLIONS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


def _conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k


def _bn(c: int) -> int:
    return 2 * c


def resnet_parameters(depth: int, shortcut: str, width: int = 1, c_in: int = 3) -> int:
    """The CIFAR ResNet's parameter count, added up layer by layer from its description."""
    n = (depth - 2) // 6
    widths = [16 * width, 32 * width, 64 * width]
    total = _conv(c_in, widths[0], 3) + _bn(widths[0])
    channels = widths[0]
    for w in widths:
        for index in range(n):
            total += _conv(channels, w, 3) + _bn(w) + _conv(w, w, 3) + _bn(w)
            if index == 0 and channels != w and shortcut == "B":
                total += _conv(channels, w, 1) + _bn(w)
            channels = w
    return total + channels * 10 + 10


def preact_parameters(c_in: int = 3, classes: int = 10) -> int:
    """PreAct-ResNet-18 in FMix's layout, added up layer by layer."""
    total = _conv(c_in, 64, 3) + _bn(64)
    channels = 64
    for w in (64, 128, 256, 512):
        for index in range(2):
            total += _bn(channels) + _conv(channels, w, 3) + _bn(w) + _conv(w, w, 3)
            if index == 0 and channels != w:
                total += _conv(channels, w, 1)
            channels = w
    return total + 512 * classes + classes


@pytest.mark.parametrize("depth", DEPTHS)
def test_option_a_has_the_published_parameter_count(depth):
    model = build_model(f"resnet{depth}", num_classes=10, shortcut="A")
    count = count_parameters(model)
    assert count == resnet_parameters(depth, "A")
    digits = 2 if depth < 100 else 1
    assert round(count / 1e6, digits) == PUBLISHED_MILLIONS[depth]


@pytest.mark.parametrize("depth", DEPTHS)
def test_option_b_adds_two_projections(depth):
    count = count_parameters(build_model(f"resnet{depth}", num_classes=10))
    assert count == resnet_parameters(depth, "B")
    assert count - resnet_parameters(depth, "A") == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_option_a_shortcut_subsamples_and_pads_with_zero_channels():
    model = build_model("resnet20", num_classes=10, shortcut="A").eval()
    block = model.layer2[0]
    x = torch.randn(3, 16, 14, 14)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (3, 32, 7, 7)
    assert torch.equal(shortcut[:, :16], x[:, :, ::2, ::2])
    assert torch.equal(shortcut[:, 16:], torch.zeros(3, 16, 7, 7))
    assert not list(block.shortcut.parameters())


def test_width_multiplies_every_stage():
    model = build_model("resnet20", num_classes=10, width=4)
    assert [model.conv1.out_channels] + [
        s[0].conv2.out_channels for s in (model.layer1, model.layer2, model.layer3)
    ] == [64, 64, 128, 256]
    assert count_parameters(model) == resnet_parameters(20, "B", width=4)


def test_preactresnet18_has_fmix_layout_and_size():
    model = build_model("preactresnet18", num_classes=10)
    assert count_parameters(model) == preact_parameters()
    assert round(count_parameters(model) / 1e6, 1) == 11.2
    assert build_model("preactresnet18", num_classes=10, in_channels=1).conv1.in_channels == 1
    # projections only where the shape changes, and without batch norm
    projections = [n for n, m in model.named_modules() if n.endswith("shortcut") and m is not None]
    assert projections == ["layer2.0.shortcut", "layer3.0.shortcut", "layer4.0.shortcut"]


@pytest.mark.parametrize("name", NEW_MODELS)
def test_runs_on_one_channel_28x28_in_parts(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=1).eval()
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        logits = model(images)
        assert logits.shape == (4, 10) and torch.isfinite(logits).all()
        assert model.hidden_layers == hidden_layers(name)
        for layer in hidden_layers(name):
            hidden = model.forward_to(images, layer)
            torch.testing.assert_close(model.forward_from(hidden, layer), logits)
    sizes = [model.forward_to(images, layer).shape[-1] for layer in hidden_layers(name)[1:]]
    assert sizes == ([28, 14, 7] if name in RESNETS else [28, 14, 7, 4])


@pytest.mark.parametrize("name", ["resnet20", "preactresnet18"])
@pytest.mark.parametrize(
    "options", [{"stochastic_depth": 0.5}, {"dropblock": {"keep_prob": 0.8, "block_size": 3}}]
)
def test_regularisers_change_training_only(name, options):
    torch.manual_seed(0)
    plain = build_model(name, num_classes=5, in_channels=1)
    torch.manual_seed(0)
    regularised = build_model(name, num_classes=5, in_channels=1, **options)
    assert plain.state_dict().keys() == regularised.state_dict().keys()
    images = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(plain.eval()(images), regularised.eval()(images))
        torch.manual_seed(1)
        assert not torch.allclose(regularised.train()(images), plain.train()(images))
    if "stochastic_depth" in options:
        survival = [m.survival for m in regularised.modules() if hasattr(m, "survival")]
        assert survival[-1] == 0.5 and survival == sorted(survival, reverse=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 21}, r"model\.depth: 21 does not fit a CIFAR ResNet; use 6n\+2"),
        ({"width": 0}, r"model\.width: 0 is not valid"),
        ({"shortcut": "C"}, r"model\.shortcut: 'C' is not valid; use A .* or B"),
        ({"stochastic_depth": 1.5}, r"model\.stochastic_depth: 1\.5 is not valid"),
        ({"bottleneck": True}, r"model\.bottleneck: not a setting of resnet20"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_model("resnet20", num_classes=10, **kwargs)


@pytest.mark.parametrize("name", NEW_MODELS)
def test_one_training_epoch_on_one_channel_images(train_in_process, tmp_path, name):
    code, run_dir = train_in_process(
        [
            f"model={name}",
            "dataset=fake",
            "dataset.channels=1",
            "dataset.image_size=28",
            "dataset.num_train=32",
            "dataset.num_val=16",
            "trainer.batch_size=16",
            "trainer.epochs=1",
            "mixing=dcutmix",
        ],
        tmp_path / name,
    )
    assert code == 0
    from tests.helpers.runs import read_results

    results = read_results(run_dir)
    assert results["status"] == "completed" and results["config"]["model"] == name
    assert 0 <= results["top1_err_last"] <= 100
