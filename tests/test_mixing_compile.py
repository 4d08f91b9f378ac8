"""``mixing.compile=true``: the compiled mixer gives the eager mixer's output for the same generator."""

from __future__ import annotations

import pytest
import torch

from dcutmix.mixing import build_mixer, compile_mixer
from tests.helpers.runs import compose_config


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dcutmix", "cutmix"])
def test_compiled_mixer_matches_eager_for_the_same_generator(mode):
    mixer = build_mixer(mode, num_classes=10)
    compiled = compile_mixer(mixer)
    images = torch.rand(16, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(2))
    for seed in (0, 1):
        eager = mixer(images, labels, generator=torch.Generator().manual_seed(seed))
        fast = compiled(images, labels, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(eager[0], fast[0]) and torch.equal(eager[1], fast[1])
    assert not torch.equal(
        eager[0], mixer(images, labels, generator=torch.Generator().manual_seed(9))[0]
    )


def test_mixing_compile_is_a_config_switch():
    assert compose_config([]).mixing.compile is False
    assert compose_config(["mixing.compile=true"]).mixing.compile is True
