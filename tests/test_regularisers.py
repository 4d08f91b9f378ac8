"""Stochastic depth and DropBlock: the identity at evaluation, their drop rates in training."""

from __future__ import annotations

import pytest
import torch

from dcutmix.errors import ConfigError
from dcutmix.models import DropBlock, build_model
from dcutmix.models.pyramidnet import _widen
from dcutmix.models.regularisers import (
    check_dropblock,
    check_stochastic_depth,
    drop_block,
    survival_probabilities,
)

SMALL_PYRAMID = {"depth": 20, "alpha": 24}


def _pyramid(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("pyramidnet110", num_classes=5, **SMALL_PYRAMID, **kwargs)


@pytest.mark.parametrize(
    "options",
    [
        {"stochastic_depth": 0.5},
        {"dropblock": {"keep_prob": 0.8, "block_size": 3}},
        {"stochastic_depth": 0.0, "dropblock": {}},
    ],
)
def test_evaluation_is_bit_exact_with_and_without_the_option(options):
    plain, regularised = _pyramid(), _pyramid(**options)
    # the options add no parameters: the same seed gives the same weights, under the same names
    assert plain.state_dict().keys() == regularised.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, regularised.state_dict()[key]), key
    images = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        plain_out = plain.eval()(images)
        torch.manual_seed(1)
        reg_out = regularised.eval()(images)
        assert torch.equal(plain_out, reg_out)
        # and training mode does change the output, so the option is really there
        regularised.train()
        assert not torch.allclose(regularised(images), plain.train()(images))


def test_survival_decays_linearly_to_the_last_block():
    model = _pyramid(stochastic_depth=0.5)
    blocks = [b for stage in (model.layer1, model.layer2, model.layer3) for b in stage]
    survival = [b.survival for b in blocks]
    count = len(blocks)
    assert survival == pytest.approx([1 - (i / count) * 0.5 for i in range(1, count + 1)])
    assert survival[-1] == 0.5 and survival[0] == pytest.approx(1 - 0.5 / count)
    assert all(b.survival == 1.0 for b in _pyramid().modules() if hasattr(b, "survival"))
    assert survival_probabilities(4, None) == [1.0] * 4


@pytest.mark.parametrize("which", [-1, len(range(6)) // 2])
def test_measured_branch_drop_rate_is_the_configured_one(which):
    model = _pyramid(stochastic_depth=0.5)
    blocks = [b for stage in (model.layer1, model.layer2, model.layer3) for b in stage]
    block = blocks[which].train()
    channels = block.bn1.num_features
    torch.manual_seed(0)
    x = torch.randn(4000, channels, 2, 2)
    with torch.no_grad():
        out = block(x)
        shortcut = x if block.downsample is None else block.downsample(x)
        shortcut = _widen(shortcut, out.shape[1])
    dropped = (out == shortcut).flatten(1).all(1).float().mean().item()
    assert abs(dropped - (1 - block.survival)) < 0.02, (dropped, block.survival)


# The default on both maps DropBlock meets in a CIFAR PyramidNet (16x16 and 8x8), and others.
# Ghiasi et al.'s gamma ignores overlapping blocks, so it drops slightly less than 1 - keep_prob
# (keep_prob 0.8, block 3 on 8x8 drops 17.7%); within 2 points for keep_prob >= 0.9.
@pytest.mark.parametrize(
    ("keep_prob", "block_size", "size"), [(0.9, 4, 16), (0.9, 4, 8), (0.9, 3, 8), (0.95, 4, 8)]
)
def test_measured_dropblock_rate_is_the_configured_one(keep_prob, block_size, size):
    torch.manual_seed(0)
    x = torch.ones(64, 16, size, size)
    out = drop_block(x, keep_prob, block_size, training=True)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - (1 - keep_prob)) < 0.02, dropped
    assert dropped <= 1 - keep_prob
    # dropped units come in whole squares: every zero lies in an all-zero block_size square
    zeros = (out == 0).float()
    full = (torch.nn.functional.avg_pool2d(zeros, block_size, stride=1) == 1).float()
    pad = (block_size - 1,) * 4
    covered = torch.nn.functional.max_pool2d(
        torch.nn.functional.pad(full, pad), block_size, stride=1
    )
    assert (zeros <= covered).all() and zeros.any()
    # the kept units are rescaled so the mean activation is kept (per batch, on the device)
    assert out.mean().item() == pytest.approx(1.0, rel=1e-5)
    module = DropBlock(keep_prob=keep_prob, block_size=block_size).eval()
    assert module(x) is x


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.0, "model.stochastic_depth: 1.0 is not valid"),
        (-0.1, "model.stochastic_depth: -0.1 is not valid"),
        ("half", "model.stochastic_depth: 'half' is not valid"),
        (True, "model.stochastic_depth: True is not valid"),
    ],
)
def test_bad_stochastic_depth_is_named(value, message):
    with pytest.raises(ConfigError) as error:
        check_stochastic_depth(value)
    assert str(error.value).startswith(message)
    assert check_stochastic_depth(0) == 0.0 and check_stochastic_depth(None) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"keep_prob": 0}, "model.dropblock.keep_prob: 0 is not valid; use a number in (0, 1]"),
        ({"keep_prob": 1.5}, "model.dropblock.keep_prob: 1.5 is not valid"),
        ({"block_size": 0}, "model.dropblock.block_size: 0 is not valid"),
        ({"block_size": 2.5}, "model.dropblock.block_size: 2.5 is not valid"),
        ({"size": 3}, "model.dropblock.size: unknown key; valid keys: keep_prob, block_size"),
        (0.9, "model.dropblock: 0.9 is not valid; use null or"),
    ],
)
def test_bad_dropblock_settings_are_named(value, message):
    with pytest.raises(ConfigError) as error:
        check_dropblock(value)
    assert str(error.value).startswith(message)
    assert check_dropblock({}) == {"keep_prob": 0.9, "block_size": 4}
