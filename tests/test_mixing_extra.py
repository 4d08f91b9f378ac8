"""Cutout, FMix and ResizeMix: exact provenance, the published behaviour, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dcutmix.mixing import Cutout, FMix, ResizeMix, build_mixer

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
SHAPES = [(1, 13, 17), (2, 8, 8), (7, 13, 17), (5, 9, 4), (3, 32, 20)]


def _provenance_batch(batch: int, height: int, width: int, dtype=torch.float64) -> torch.Tensor:
    """Each image constant, equal to its own index: every output pixel names its source."""
    values = torch.arange(batch, dtype=torch.float64).view(batch, 1, 1, 1)
    return values.expand(batch, 2, height, width).to(dtype).contiguous()


def _pixel_shares(mixed: torch.Tensor, batch: int) -> torch.Tensor:
    sources = mixed[:, 0].double().round().long().view(mixed.shape[0], -1)
    counts = torch.zeros(mixed.shape[0], batch, dtype=torch.float64)
    counts.scatter_add_(1, sources, torch.ones_like(sources, dtype=torch.float64))
    return counts / sources.shape[1]


@pytest.mark.parametrize("mode", ["fmix", "resizemix"])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_targets_equal_counted_pixel_shares(mode, per_sample, dtype):
    gen = torch.Generator().manual_seed(3)
    for batch, height, width in SHAPES:
        images = _provenance_batch(batch, height, width, dtype)
        mixer = build_mixer(mode, num_classes=batch, per_sample=per_sample)
        for _ in range(4):
            mixed, targets = mixer(images, torch.arange(batch), generator=gen)
            assert mixed.dtype == dtype and targets.dtype == torch.float32
            # every pixel is one source's value (resampling a constant image keeps it)
            assert (mixed.double() - mixed.double().round()).abs().max() < 0.02
            torch.testing.assert_close(
                targets.double(), _pixel_shares(mixed, batch), atol=1e-6, rtol=0
            )


def test_fmix_draws_one_mask_per_batch_unless_per_sample():
    mixer = FMix(num_classes=4)
    plan = mixer._plan(8, 1, 16, 16, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert plan.pixel_level.shape == (1, 16, 16) and plan.perms.shape == (1, 8)
    assert plan.pixel_level.sum() == torch.round(plan.weights[0, 1] * 256)
    per = FMix(num_classes=4, per_sample=True)
    plan = per._plan(8, 8, 16, 16, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert plan.pixel_level.shape == (8, 16, 16)
    assert len({tuple(m.flatten().tolist()) for m in plan.pixel_level}) == 8


def _edge_ratio(decay: float) -> float:
    """Neighbouring pixel pairs that differ in FMix masks, over what independent pixels give."""
    mixer = FMix(num_classes=2, decay=decay, per_sample=True)
    plan = mixer._plan(200, 200, 32, 32, torch.device("cpu"), torch.Generator().manual_seed(1))
    mask = plan.pixel_level.float()
    edges = (mask[:, 1:] != mask[:, :-1]).float().mean() + (
        mask[:, :, 1:] != mask[:, :, :-1]
    ).float().mean()
    share = mask.mean((1, 2))
    return float(edges / (2 * (2 * share * (1 - share)).mean()))


def test_fmix_masks_are_low_frequency_and_smoother_for_larger_decay():
    ratios = [_edge_ratio(decay) for decay in (0.5, 1.0, 3.0)]
    assert ratios[0] > ratios[1] > ratios[2]
    # at the published decay 3 the mask is a few blobs: about 8x fewer edges than random pixels
    assert ratios[2] < 0.2, ratios


def test_fmix_lambda_is_beta_alpha_alpha():
    for alpha, mean_abs_dev in ((1.0, 0.25), (0.2, 0.41)):
        mixer = FMix(num_classes=2, alpha=alpha, per_sample=True)
        plan = mixer._plan(4000, 4000, 8, 8, torch.device("cpu"), torch.Generator().manual_seed(2))
        share = plan.weights[:, 1].double()
        assert abs(float(share.mean()) - 0.5) < 0.02
        # E|lam - 1/2| is 1/4 for Beta(1, 1) and about 0.41 for Beta(0.2, 0.2)
        assert abs(float((share - 0.5).abs().mean()) - mean_abs_dev) < 0.02


def _partner_and_box(images, mixed, targets):
    """For each image: the partner index (None if it drew itself) and the rows/cols it changed."""
    found = []
    for b in range(images.shape[0]):
        others = [j for j in range(images.shape[0]) if j != b and targets[b, j] > 0]
        changed = (mixed[b] != images[b]).any(0)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        found.append((others[0] if others else None, rows, cols))
    return found


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("factor", [2, 4])
def test_resizemix_patch_is_the_area_resampled_partner(per_sample, factor):
    """With an exact scale the patch equals average pooling of the partner (antialiased)."""
    size = 20
    mixer = ResizeMix(num_classes=9, scale=(1 / factor, 1 / factor), per_sample=per_sample)
    images = torch.rand(9, 3, size, size, generator=torch.Generator().manual_seed(0)) + 1.0
    gen = torch.Generator().manual_seed(5)
    checked = 0
    for _ in range(3):
        mixed, targets = mixer(images, torch.arange(9), generator=gen)
        for b, (partner, rows, cols) in enumerate(_partner_and_box(images, mixed, targets)):
            if partner is None:
                continue
            side = size // factor
            assert len(rows) == side and len(cols) == side
            assert (rows.diff() == 1).all() and (cols.diff() == 1).all()
            patch = mixed[b][:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            expected = F.avg_pool2d(images[partner], factor)
            torch.testing.assert_close(patch, expected, atol=1e-5, rtol=1e-5)
            assert torch.allclose(targets[b, partner], torch.tensor(1 / factor**2))
            checked += 1
    assert checked >= 10


def test_resizemix_cpu_patch_equals_the_full_frame_products():
    """The CPU's cut-down products give the pixels the device path's full-frame products give."""
    from dcutmix.mixing.resizemix import paste_resized, resize_matrix

    mixer = ResizeMix(num_classes=2)
    images = torch.rand(6, 3, 23, 19, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(7)
    for _ in range(10):
        plan = mixer._plan(6, 1, 23, 19, torch.device("cpu"), gen)
        fast = paste_resized(images, plan, plan.corner, plan.side)
        rows = resize_matrix(plan.corner[0], plan.side[0], 23, torch.float32)
        cols = resize_matrix(plan.corner[1], plan.side[1], 19, torch.float32)
        full = rows.unsqueeze(1) @ images[plan.perms[0]] @ cols.transpose(1, 2).unsqueeze(1)
        expected = torch.where(plan.pixel_level.bool().unsqueeze(1), full, images)
        torch.testing.assert_close(fast, expected, atol=1e-6, rtol=1e-6)
        assert not torch.equal(fast, images)


def test_resizemix_scale_and_position_cover_their_ranges():
    mixer = ResizeMix(num_classes=2, per_sample=True)
    plan = mixer._plan(3000, 3000, 40, 30, torch.device("cpu"), torch.Generator().manual_seed(4))
    rows, cols = plan.pixel_level.any(2), plan.pixel_level.any(1)
    heights, widths = rows.sum(1).double(), cols.sum(1).double()
    assert heights.min() == round(0.1 * 40) and heights.max() == round(0.8 * 40)
    assert widths.min() == round(0.1 * 30) and widths.max() == round(0.8 * 30)
    tau = heights / 40
    assert abs(float(tau.mean()) - 0.45) < 0.02  # U(0.1, 0.8)
    torch.testing.assert_close(
        plan.weights[:, 1].double(), heights * widths / 1200, atol=1e-7, rtol=0
    )
    # every row and column is pasted over sometimes, the corners included
    assert rows.any(0).all() and cols.any(0).all()


def test_cutout_pixels_are_original_or_zero_and_targets_one_hot():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(64, 3, 20, 24, generator=gen) + 1.0  # no zeros of its own
    labels = torch.randint(0, 10, (64,), generator=gen)
    length = 7
    mixer = build_mixer("cutout", num_classes=10, length=length)
    full, clipped = 0, 0
    covered = torch.zeros(20, 24, dtype=torch.bool)
    for _ in range(10):
        mixed, targets = mixer(images, labels, generator=gen)
        assert torch.equal(targets, F.one_hot(labels, 10).float())
        assert ((mixed == images) | (mixed == 0)).all()
        holes = mixed == 0
        assert torch.equal(holes.all(1), holes.any(1))  # all channels cut together
        counts = holes[:, 0].sum((1, 2))
        assert (counts <= length * length).all() and (counts > 0).all()
        full += int((counts == length * length).sum())
        clipped += int((counts < length * length).sum())
        covered |= holes[:, 0].any(0)
    assert full > 0 and clipped > 0  # squares hang over the border and are clipped
    assert covered.all()  # the centre is uniform over every pixel, corners included


def test_cutout_square_is_centred_on_its_pixel():
    mixer = Cutout(num_classes=2, length=5)
    images = torch.ones(400, 1, 15, 15)
    mixed, _ = mixer(images, torch.zeros(400, dtype=torch.long), generator=torch.Generator())
    holes = mixed[:, 0] == 0
    whole = holes.sum((1, 2)) == 25
    rows = holes[whole].any(2).float().argmax(1) + 2
    cols = holes[whole].any(1).float().argmax(1) + 2
    assert rows.min() == 2 and rows.max() == 12 and cols.min() == 2 and cols.max() == 12


def test_cutout_per_batch_shares_one_square():
    mixer = Cutout(num_classes=2, length=4, per_sample=False)
    mixed, _ = mixer(torch.ones(6, 2, 10, 10), torch.zeros(6, dtype=torch.long))
    holes = mixed == 0
    assert holes.any() and (holes == holes[:1]).all()


def test_integer_images():
    images = torch.randint(1, 255, (4, 3, 8, 8), dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.long)
    for mode in ("cutout", "fmix"):
        mixed, _ = build_mixer(mode, num_classes=2, **({"length": 4} if mode == "cutout" else {}))(
            images, labels
        )
        assert mixed.dtype == torch.uint8
    with pytest.raises(ValueError, match="images: resizemix resamples pixels"):
        build_mixer("resizemix", num_classes=2)(images, labels)


def test_prob_gates_whole_batches():
    images = _provenance_batch(8, 10, 10, torch.float32)
    for mode, settings in (("cutout", {"length": 4}), ("fmix", {}), ("resizemix", {})):
        mixer = build_mixer(mode, num_classes=8, prob=0.3, **settings)
        gen = torch.Generator().manual_seed(0)
        changed = sum(
            not torch.equal(mixer(images + 1, torch.arange(8), generator=gen)[0], images + 1)
            for _ in range(200)
        )
        assert 0.2 < changed / 200 < 0.4, (mode, changed)


@pytest.mark.parametrize(
    ("mode", "settings", "message"),
    [
        ("cutout", {"length": 0}, "length: must be a whole number >= 1, got 0"),
        ("cutout", {"length": -3}, "length: must be a whole number >= 1"),
        ("cutout", {"length": 2.5}, "length: must be a whole number >= 1"),
        ("cutout", {"length": True}, "length: must be a whole number >= 1"),
        ("cutout", {"k": 2}, "k: cutout mixes no second image"),
        ("fmix", {"decay": 0}, "decay: must be a finite number > 0, got 0"),
        ("fmix", {"decay": -1.0}, "decay: must be a finite number > 0"),
        ("fmix", {"decay": math.nan}, "decay: must be a finite number > 0"),
        ("fmix", {"alpha": 0.0}, "alpha: must be a finite number > 0"),
        ("fmix", {"k": 3}, "k: fmix mixes exactly 2 images"),
        ("resizemix", {"scale": [0.5, 0.2]}, "scale: must be a [low, high] pair"),
        ("resizemix", {"scale": [0.0, 0.5]}, "scale: must be a [low, high] pair"),
        ("resizemix", {"scale": [0.1, 1.5]}, "scale: must be a [low, high] pair"),
        ("resizemix", {"scale": [0.1]}, "scale: must be a [low, high] pair"),
        ("resizemix", {"scale": "0.1,0.8"}, "scale: must be a [low, high] pair"),
        ("mixup", {"length": 8}, "length: only cutout has this setting, not mixup"),
        ("fmix", {"scale": [0.1, 0.8]}, "scale: only resizemix has this setting, not fmix"),
        ("cutout", {"lenght": 8}, "lenght: not a mixing setting"),
    ],
)
def test_bad_settings_raise_errors_naming_them(mode, settings, message):
    with pytest.raises(ValueError) as info:
        build_mixer(mode, num_classes=10, **settings)
    assert message in str(info.value)


def test_cutout_larger_than_the_images_is_refused():
    mixer = build_mixer("cutout", num_classes=2, length=9)
    with pytest.raises(ValueError, match="length: 9 is larger than the 8x12 images"):
        mixer(torch.rand(2, 3, 8, 12), torch.zeros(2, dtype=torch.long))


def test_modes_without_weights_ignore_alpha_like_none():
    for mode in ("none", "cutout", "resizemix"):
        assert build_mixer(mode, num_classes=2, alpha=0.5).alpha is None


def test_the_settings_show_in_repr_and_defaults_are_the_published_ones():
    assert build_mixer("cutout", num_classes=2).length == 16
    fmix = build_mixer("fmix", num_classes=2)
    assert (fmix.decay, fmix.alpha, fmix.per_sample) == (3.0, 1.0, False)
    resize = build_mixer("resizemix", num_classes=2)
    assert (resize.scale, resize.per_sample) == ((0.1, 0.8), False)
    assert "decay=3.0" in repr(fmix) and "scale=(0.1, 0.8)" in repr(resize)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cutout", "fmix", "resizemix"])
def test_compiled_mixers_stay_exact(mode):
    settings = {"length": 5} if mode == "cutout" else {}
    mixer = build_mixer(mode, num_classes=8, per_sample=True, **settings)
    prov = _provenance_batch(8, 16, 16, torch.float32) + 1
    mixed, targets = torch.compile(lambda x, y: mixer(x, y))(prov, torch.arange(8))
    if mode == "cutout":
        assert ((mixed == prov) | (mixed == 0)).all() and (mixed == 0).any()
        return
    torch.testing.assert_close(targets.double(), _pixel_shares(mixed - 1, 8), atol=1e-6, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["cutout", "fmix", "resizemix"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_exact_and_no_host_synchronisation_on_cuda(mode, per_sample):
    settings = {"length": 8} if mode == "cutout" else {}
    mixer = build_mixer(mode, num_classes=32, prob=0.5, per_sample=per_sample, **settings)
    images = _provenance_batch(32, 32, 24, torch.float32).cuda() + 1
    labels = torch.arange(32, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outs = [mixer(images, labels, generator=gen) for _ in range(4)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for mixed, targets in outs:
        if mode == "cutout":
            assert ((mixed == images) | (mixed == 0)).all()
            continue
        torch.testing.assert_close(
            targets.double().cpu(), _pixel_shares((mixed - 1).cpu(), 32), atol=1e-6, rtol=0
        )
