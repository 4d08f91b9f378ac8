"""Random Erasing: its statistics over 10,000 draws against an independent simulation of Zhong et
al.'s algorithm, the authors' one-attempt reading, the fills, the batch-wide draw, bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcutmix.errors import InputError
from dcutmix.mixing import RandomErasing, build_mixer

SIZE = 28
DRAWS = 10_000
MARK = -7.0  # a fill no image pixel has, so the erased pixels can be read back


def simulate(attempts: int, n: int = 400_000, p: float = 0.5, seed: int = 0) -> dict:
    """Zhong et al.'s draw written out with numpy: per image a coin, then up to ``attempts``
    boxes of area U(0.02, 0.4) x H W and ratio U(0.3, 1/0.3) until one fits."""
    rng = np.random.default_rng(seed)
    erased = rng.random(n) < p
    h = np.zeros(n)
    w = np.zeros(n)
    pending = erased.copy()
    for _ in range(attempts):
        area = rng.uniform(0.02, 0.4, n) * SIZE * SIZE
        ratio = rng.uniform(0.3, 1 / 0.3, n)
        bh, bw = np.round(np.sqrt(area * ratio)), np.round(np.sqrt(area / ratio))
        take = pending & (bh < SIZE) & (bw < SIZE)
        h[take], w[take] = bh[take], bw[take]
        pending &= ~take
    done = erased & ~pending
    return {"rate": done.mean(), "area": h[done] * w[done] / SIZE**2, "ratio": h[done] / w[done]}


def measure(mixer: RandomErasing, seed: int = 0) -> dict:
    """Which images were erased, and each rectangle's height, width and top-left corner."""
    images = torch.ones(DRAWS, 1, SIZE, SIZE)
    labels = torch.randint(0, 10, (DRAWS,))
    out, targets = mixer(images, labels, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(targets, torch.nn.functional.one_hot(labels, 10).float())
    hole = out[:, 0] == MARK
    assert ((out[:, 0] == 1) | hole).all()  # nothing else changes
    rows, cols = hole.any(2), hole.any(1)
    h, w = rows.sum(1), cols.sum(1)
    erased = h > 0
    # a rectangle: exactly h x w marked pixels
    assert torch.equal(hole.sum((1, 2)), h * w)
    top = rows.float().argmax(1)
    left = cols.float().argmax(1)
    return {
        "erased": erased,
        "h": h[erased],
        "w": w[erased],
        "top": top[erased],
        "left": left[erased],
    }


def _mixer(**settings) -> RandomErasing:
    return build_mixer("random_erasing", num_classes=10, fill=MARK, **settings)


def test_the_papers_reading_matches_its_algorithm_over_10000_draws():
    got = measure(_mixer())
    expected = simulate(attempts=10)
    rate = got["erased"].float().mean().item()
    assert abs(rate - 0.5) < 0.02 and abs(rate - expected["rate"]) < 0.02
    area = (got["h"] * got["w"]).double() / SIZE**2
    ratio = got["h"].double() / got["w"]
    # the ranges: every rectangle inside the simulated envelope, reaching near both ends
    assert (
        expected["area"].min() <= area.min() <= 0.03
        and 0.38 <= area.max() <= expected["area"].max()
    )
    assert (
        expected["ratio"].min() <= ratio.min() <= 0.33
        and 3.0 <= ratio.max() <= expected["ratio"].max()
    )
    # the distributions: uniform in area and in r (not in log r), thinned where boxes do not fit
    assert abs(area.mean().item() - expected["area"].mean()) < 0.005
    assert abs(area.std().item() - expected["area"].std()) < 0.005
    assert abs(ratio.mean().item() - expected["ratio"].mean()) < 0.04
    assert abs(ratio.log().mean().item() - np.log(expected["ratio"]).mean()) < 0.02


def test_the_corner_is_uniform_where_the_box_fits():
    got = measure(_mixer())
    room_h, room_w = SIZE - got["h"], SIZE - got["w"]
    assert (got["top"] <= room_h).all() and (got["left"] <= room_w).all()
    free = room_h > 0
    share = got["top"][free].double() / room_h[free]
    assert abs(share.mean().item() - 0.5) < 0.015
    assert (got["top"] == 0).any() and (got["top"] == room_h).any()


def test_the_authors_one_attempt_erases_only_when_the_first_box_fits():
    got = measure(_mixer(attempts=1), seed=1)
    expected = simulate(attempts=1)
    rate = got["erased"].float().mean().item()
    assert expected["rate"] < 0.48  # a real difference from the paper's reading
    assert abs(rate - expected["rate"]) < 0.02


def test_prob_is_each_images_and_per_sample_false_shares_one_box():
    for prob in (0.2, 0.9):
        rate = measure(_mixer(prob=prob), seed=2)["erased"].float().mean().item()
        assert abs(rate - prob) < 0.025
    mixer = _mixer(per_sample=False)
    images = torch.ones(6, 2, SIZE, SIZE)
    outs = [
        mixer(images, torch.zeros(6, dtype=torch.long), generator=torch.Generator().manual_seed(s))[
            0
        ]
        for s in range(20)
    ]
    for out in outs:
        assert all(torch.equal(out[0], out[i]) for i in range(6))
    assert any((out == MARK).any() for out in outs) and any(not (out == MARK).any() for out in outs)


def test_fills():
    images = torch.rand(64, 3, SIZE, SIZE) * torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1) - 1
    labels = torch.zeros(64, dtype=torch.long)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    marked, _ = _mixer(prob=1.0)(images, labels, generator=gen())
    hole = (marked == MARK)[:, :1].expand_as(images)
    mean, _ = build_mixer("random_erasing", num_classes=1, prob=1.0, fill="mean")(
        images, labels, generator=gen()
    )
    assert torch.equal(mean[hole], torch.zeros(int(hole.sum()))) and torch.equal(
        mean[~hole], images[~hole]
    )
    random, _ = build_mixer("random_erasing", num_classes=1, prob=1.0)(
        images, labels, generator=gen()
    )
    assert torch.equal(random[~hole], images[~hole])
    for channel in range(3):
        values = random[:, channel][hole[:, channel]]
        low, high = images[:, channel].min(), images[:, channel].max()
        assert low <= values.min() and values.max() <= high
        # uniform over the channel's range: its mean is the range's middle
        assert abs(values.mean() - (low + high) / 2) < 0.02 * (high - low)
    uint8 = (images[:8] * 40 + 60).to(torch.uint8)
    out, _ = build_mixer("random_erasing", num_classes=1, prob=1.0)(
        uint8, labels[:8], generator=gen()
    )
    assert out.dtype == torch.uint8 and not torch.equal(out, uint8)


def test_same_generator_same_erasing_and_inputs_untouched():
    images, labels = torch.rand(32, 1, SIZE, SIZE), torch.arange(32) % 10
    before = images.clone()
    mixer = build_mixer("random_erasing", num_classes=10)
    a = mixer(images, labels, generator=torch.Generator().manual_seed(5))
    b = mixer(images, labels, generator=torch.Generator().manual_seed(5))
    c = mixer(images, labels, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert torch.equal(images, before)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"area": [0.5, 0.1]}, "area: must be a [low, high] pair of image fractions"),
        ({"area": [0.0, 0.4]}, "area: must be a [low, high] pair"),
        ({"aspect": 0}, "aspect: must be a number in (0, 1]"),
        ({"aspect": 3.0}, "aspect: must be a number in (0, 1]"),
        ({"fill": "blue"}, "fill: must be random (uniform over the pixel range), mean"),
        ({"attempts": 0}, "attempts: must be a whole number >= 1"),
        ({"k": 2}, "k: random_erasing mixes no second image"),
        ({"prob": 1.5}, "prob: must be a number in [0, 1]"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(InputError) as error:
        build_mixer("random_erasing", num_classes=10, **settings)
    assert str(error.value).startswith(message)


def test_the_defaults_are_the_papers():
    mixer = build_mixer("random_erasing", num_classes=10)
    assert (mixer.prob, mixer.area, mixer.aspect, mixer.fill, mixer.per_sample) == (
        0.5,
        (0.02, 0.4),
        0.3,
        "random",
        True,
    )
    with pytest.raises(InputError, match="area: only random_erasing has this setting"):
        build_mixer("cutout", num_classes=10, area=[0.1, 0.2])
