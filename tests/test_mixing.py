"""The mixers: exact provenance, faithful dcutmix statistics, robustness and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dcutmix.mixing import (
    MIXING_MODES,
    CutMix,
    Cutout,
    DCutMix,
    DMixup,
    FMix,
    ManifoldMixup,
    Mixup,
    NaiveCutMix,
    NaiveMixup,
    NoMix,
    RandomErasing,
    ResizeMix,
    build_mixer,
)

BOX_MODES = ("cutmix", "naive_cutmix", "dcutmix")
BLEND_MODES = ("mixup", "naive_mixup", "dmixup")
K_IMAGE_MODES = ("naive_mixup", "naive_cutmix", "dmixup", "dcutmix")


TWO_IMAGE_MODES = ("mixup", "cutmix", "fmix", "resizemix", "manifold_mixup")
NO_ALPHA_MODES = ("none", "cutout", "random_erasing", "resizemix")


def _k_for(mode: str, k: int) -> int | None:
    return (
        2
        if mode in TWO_IMAGE_MODES
        else (None if mode in ("none", "cutout", "random_erasing") else k)
    )


def _build(mode: str, *, alpha: float | None = None, **settings):
    """build_mixer with alpha only where the mode draws one, and a cutout square that fits the
    small test images."""
    if mode == "cutout":
        settings.setdefault("length", 3)
    return build_mixer(mode, alpha=None if mode in NO_ALPHA_MODES else alpha, **settings)


def _provenance_batch(batch: int, height: int = 13, width: int = 17) -> torch.Tensor:
    """Each image constant, equal to its own index: every output pixel names its source."""
    values = torch.arange(batch, dtype=torch.float64).view(batch, 1, 1, 1)
    return values.expand(batch, 2, height, width).contiguous()


def _pixel_shares(mixed: torch.Tensor, batch: int) -> torch.Tensor:
    """(B, B): the share of each output image's pixels that came from each source image."""
    sources = mixed[:, 0].round().long().view(mixed.shape[0], -1)
    counts = torch.zeros(mixed.shape[0], batch, dtype=torch.float64)
    counts.scatter_add_(1, sources, torch.ones_like(sources, dtype=torch.float64))
    return counts / sources.shape[1]


def test_modes_and_classes():
    assert MIXING_MODES == (
        "none",
        "mixup",
        "cutmix",
        "naive_mixup",
        "naive_cutmix",
        "dmixup",
        "dcutmix",
        "cutout",
        "random_erasing",
        "fmix",
        "resizemix",
        "manifold_mixup",
    )
    classes = (
        NoMix,
        Mixup,
        CutMix,
        NaiveMixup,
        NaiveCutMix,
        DMixup,
        DCutMix,
        Cutout,
        RandomErasing,
        FMix,
        ResizeMix,
        ManifoldMixup,
    )
    for mode, cls in zip(MIXING_MODES, classes, strict=True):
        assert type(build_mixer(mode, num_classes=10)) is cls
    mixer = DCutMix(num_classes=100, k=5, alpha=0.2, prob=1.0)
    assert (mixer.k, mixer.alpha, mixer.prob, mixer.per_sample) == (5, 0.2, 1.0, True)
    with pytest.raises(TypeError):
        DCutMix(100, 5)  # keyword-only, like torchvision's mixers


@pytest.mark.parametrize("mode", BOX_MODES)
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_box_targets_equal_pixel_shares(mode, per_sample, k):
    batch = 23
    images = _provenance_batch(batch)
    mixer = build_mixer(
        mode, num_classes=batch, k=_k_for(mode, k), alpha=1.0, per_sample=per_sample
    )
    gen = torch.Generator().manual_seed(k)
    for _ in range(5):
        mixed, targets = mixer(images, torch.arange(batch), generator=gen)
        torch.testing.assert_close(targets.double(), _pixel_shares(mixed, batch), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", BOX_MODES)
def test_box_pixels_keep_their_position(mode):
    """A pasted pixel comes from the same (channel, row, column) of its source image."""
    batch, channels, height, width = 9, 3, 11, 14
    numel = channels * height * width
    images = torch.arange(batch * numel, dtype=torch.float64).view(batch, channels, height, width)
    mixed, _ = build_mixer(mode, num_classes=batch, k=_k_for(mode, 4), alpha=0.7, per_sample=True)(
        images, torch.arange(batch), generator=torch.Generator().manual_seed(3)
    )
    position = mixed.long() % numel
    expected = torch.arange(numel).view(1, channels, height, width).expand_as(position)
    assert torch.equal(position, expected)
    assert not torch.equal(mixed, images)


@pytest.mark.parametrize("mode", BLEND_MODES)
@pytest.mark.parametrize("per_sample", [False, True])
def test_blend_pixels_are_the_target_weighted_blend(mode, per_sample):
    batch = 17
    images = torch.randn(
        batch, 3, 8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    mixer = build_mixer(
        mode, num_classes=batch, k=_k_for(mode, 4), alpha=0.5, per_sample=per_sample
    )
    mixed, targets = mixer(images, torch.arange(batch), generator=torch.Generator().manual_seed(1))
    expected = (targets.double() @ images.view(batch, -1)).view_as(images)
    torch.testing.assert_close(mixed, expected, atol=1e-6, rtol=1e-6)
    assert (targets > 0).sum(1).float().mean() > 1.5  # it really mixed


def test_per_batch_draws_share_one_lambda_and_one_box():
    batch = 64
    images = _provenance_batch(batch)
    labels = torch.arange(batch)
    gen = torch.Generator().manual_seed(5)
    _, targets = build_mixer("mixup", num_classes=batch, alpha=1.0)(images, labels, generator=gen)
    paired = (targets > 0).sum(1) == 2  # rows whose partner is another image
    own = targets.diagonal()[paired]
    assert paired.sum() > batch // 2
    torch.testing.assert_close(own, own[:1].expand_as(own))

    mixed, _ = build_mixer("cutmix", num_classes=batch, alpha=1.0)(images, labels, generator=gen)
    pasted = mixed[:, 0] != images[:, 0]
    # One box for the whole batch: every image that received a different partner shows the same mask.
    moved = pasted.flatten(1).any(1)
    assert moved.sum() > batch // 2
    assert (pasted[moved] == pasted[moved][0]).all()


def test_mixup_per_batch_weights_are_identical_across_rows():
    mixer = Mixup(num_classes=4, alpha=0.4)
    plan = mixer._plan(32, 1, 8, 8, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert plan.weights.shape == (1, 2)
    per_sample = Mixup(num_classes=4, alpha=0.4, per_sample=True)
    plan = per_sample._plan(32, 32, 8, 8, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert plan.weights.shape == (32, 2) and plan.weights[:, 0].unique().numel() > 1


def test_dcutmix_boxes_are_nested_and_never_clipped():
    height, width = 32, 24
    mixer = DCutMix(num_classes=10, k=6, alpha=1.0)
    plan = mixer._plan(
        200, 200, height, width, torch.device("cpu"), torch.Generator().manual_seed(2)
    )
    level = plan.level.long()
    for j in range(1, mixer.k):
        inside = level >= j  # box j and everything nested in it
        rows, cols = inside.any(2), inside.any(1)
        # a rectangle: its pixel count equals the product of its row and column extents
        assert torch.equal(inside.sum((1, 2)), rows.sum(1) * cols.sum(1))
        # contiguous rows and columns (a box, not a union of strips)
        for span in (rows.long(), cols.long()):
            assert ((span[:, 1:] - span[:, :-1]) == 1).sum(1).le(1).all()
        if j > 1:
            assert (inside <= (level >= j - 1)).all()
    # stick-breaking sides: box 1 has sides round(H * sqrt(1 - phi_0)) with phi_0 the anchor weight
    box1 = (level >= 1).any(2).sum(1).double()
    expected = torch.round(height * torch.sqrt(1 - plan.weights[:, 0].double().clamp(0, 1)))
    assert (box1 - expected).abs().le(1).all()


@pytest.mark.parametrize(
    ("k", "alpha", "max_weight", "visible"),
    [(5, 0.2, 0.71, 3.1), (5, 1.0, 0.46, None)],
)
def test_dcutmix_weight_statistics_match_the_design(k, alpha, max_weight, visible):
    batch = 8192
    mixer = DCutMix(num_classes=10, k=k, alpha=alpha)
    plan = mixer._plan(batch, batch, 32, 32, torch.device("cpu"), torch.Generator().manual_seed(0))
    weights = plan.weights.double()
    torch.testing.assert_close(
        weights.sum(1), torch.ones(batch, dtype=torch.float64), atol=1e-6, rtol=0
    )
    assert abs(weights[:, 0].mean().item() - 1 / k) < 0.015
    assert abs(weights.max(1).values.mean().item() - max_weight) < 0.02
    if visible is not None:
        assert abs((weights > 0).sum(1).double().mean().item() - visible) < 0.1


def test_dmixup_weights_are_dirichlet():
    k, alpha = 4, 0.5
    plan = DMixup(num_classes=3, k=k, alpha=alpha)._plan(
        20000, 20000, 4, 4, torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    w = plan.weights.double()
    assert torch.allclose(w.mean(0), torch.full((k,), 1 / k, dtype=torch.float64), atol=0.01)
    # Var of a Dirichlet(alpha 1_K) component: (1/K)(1 - 1/K) / (K alpha + 1)
    expected_var = (1 / k) * (1 - 1 / k) / (k * alpha + 1)
    assert abs(w[:, 0].var().item() - expected_var) < 0.005


def test_naive_mixup_weights_are_products_of_lambdas():
    plan = NaiveMixup(num_classes=3, k=4, alpha=1.0, per_sample=True)._plan(
        5000, 5000, 4, 4, torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    w = plan.weights.double()
    # anchor = l1 l2 l3, last partner = 1 - l3 ~ Uniform: mean 1/2; anchor mean (1/2)^3
    assert abs(w[:, -1].mean().item() - 0.5) < 0.02
    assert abs(w[:, 0].mean().item() - 0.125) < 0.01
    torch.testing.assert_close(w.sum(1), torch.ones(5000, dtype=torch.float64))


def test_naive_cutmix_later_boxes_cover_earlier_ones():
    plan = NaiveCutMix(num_classes=3, k=6, alpha=1.0, per_sample=True)._plan(
        2000, 2000, 16, 16, torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    counted = torch.stack([(plan.level == s).sum((1, 2)) for s in range(6)], 1).double() / 256
    torch.testing.assert_close(plan.weights.double(), counted)
    # with overlapping boxes some earlier partner is sometimes fully covered
    assert ((plan.weights[:, 1:] == 0).any(1)).float().mean() > 0.05


@pytest.mark.parametrize("mode", MIXING_MODES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_shapes_and_small_batches(mode, dtype):
    for batch, channels, height, width in [(1, 3, 32, 32), (7, 1, 17, 29), (4, 5, 9, 4)]:
        images = torch.rand(batch, channels, height, width).to(dtype)
        labels = torch.randint(0, 10, (batch,))
        mixer = _build(mode, num_classes=10, k=_k_for(mode, 3))
        mixed, targets = mixer(images, labels, generator=torch.Generator().manual_seed(0))
        assert mixed.shape == images.shape and mixed.dtype == dtype
        assert targets.shape == (batch, 10) and targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(batch), atol=1e-5, rtol=0)
        assert torch.isfinite(mixed.float()).all()


@pytest.mark.parametrize("mode", (*K_IMAGE_MODES, "mixup", "cutmix"))
@pytest.mark.parametrize("alpha", [0.01, 0.05, 1.0, 100.0])
def test_extreme_alpha_and_k_never_give_nan(mode, alpha):
    ks = [2] if mode in ("mixup", "cutmix") else [2, 3, 8, 16]
    for k in ks:
        mixer = build_mixer(mode, num_classes=10, k=k, alpha=alpha, per_sample=True)
        mixed, targets = mixer(
            torch.rand(64, 3, 16, 16),
            torch.randint(0, 10, (64,)),
            generator=torch.Generator().manual_seed(k),
        )
        assert torch.isfinite(mixed).all() and torch.isfinite(targets).all()
        torch.testing.assert_close(targets.sum(1), torch.ones(64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MIXING_MODES)
def test_prob_zero_returns_images_unchanged_with_one_hot_targets(mode):
    images = torch.rand(6, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])
    mixed, targets = _build(mode, num_classes=5, k=_k_for(mode, 3), prob=0.0)(images, labels)
    assert torch.equal(mixed, images)
    assert torch.equal(targets, torch.nn.functional.one_hot(labels, 5).float())


@pytest.mark.parametrize("mode", ("cutmix", "dcutmix", "dmixup"))
def test_prob_mixes_whole_batches_at_that_rate(mode):
    images = _provenance_batch(16, 6, 6)
    labels = torch.arange(16)
    mixer = build_mixer(mode, num_classes=16, k=_k_for(mode, 3), prob=0.3, per_sample=True)
    gen = torch.Generator().manual_seed(0)
    mixed_batches = 0
    for _ in range(300):
        mixed, targets = mixer(images, labels, generator=gen)
        unchanged = torch.equal(mixed, images)
        one_hot = torch.equal(targets, torch.eye(16))
        assert unchanged == one_hot  # one coin for images and targets together
        mixed_batches += not unchanged
    assert 0.22 < mixed_batches / 300 < 0.38


@pytest.mark.parametrize("mode", MIXING_MODES)
def test_probability_labels_are_mixed_with_the_same_weights(mode):
    batch, classes = 12, 7
    images = _provenance_batch(batch)
    gen_labels = torch.Generator().manual_seed(0)
    soft = torch.softmax(torch.randn(batch, classes, generator=gen_labels), 1)
    mixer = _build(mode, num_classes=batch, k=_k_for(mode, 4), alpha=1.0)
    _, shares = mixer(images, torch.arange(batch), generator=torch.Generator().manual_seed(9))
    soft_mixer = _build(mode, num_classes=classes, k=_k_for(mode, 4), alpha=1.0)
    _, targets = soft_mixer(images, soft, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(targets, shares @ soft, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", MIXING_MODES[1:])
@pytest.mark.parametrize("per_sample", [False, True])
def test_class_index_targets_equal_mixing_one_hot_rows(mode, per_sample):
    # Few classes for many sources, so one sample's sources often share a class: class indices
    # (summed into their classes) and one-hot rows (a dense weighted sum) agree to rounding.
    batch, classes = 64, 3
    labels = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(1))
    images = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    mixer = _build(mode, num_classes=classes, k=_k_for(mode, 6), alpha=0.7, per_sample=per_sample)
    _, targets = mixer(images, labels, generator=torch.Generator().manual_seed(3))
    _, dense = mixer(
        images, F.one_hot(labels, classes).float(), generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(targets, dense, rtol=0, atol=2**-23)
    torch.testing.assert_close(targets.sum(1), torch.ones(batch))


@pytest.mark.parametrize("mode", MIXING_MODES)
def test_inputs_are_not_modified(mode):
    images = torch.rand(8, 3, 10, 10)
    labels = torch.randint(0, 4, (8,))
    before = images.clone(), labels.clone()
    _build(mode, num_classes=4, k=_k_for(mode, 3))(images, labels)
    assert torch.equal(images, before[0]) and torch.equal(labels, before[1])


@pytest.mark.parametrize("mode", MIXING_MODES[1:])
def test_same_seed_same_output_different_seed_differs(mode):
    images = torch.rand(16, 3, 12, 12)
    labels = torch.randint(0, 5, (16,))
    mixer = _build(mode, num_classes=5, k=_k_for(mode, 4))

    def run(seed):
        return mixer(images, labels, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "cutmixx"}, "mode: unknown mixing mode 'cutmixx'"),
        ({"mode": "dcutmix", "k": 1}, "k:"),
        ({"mode": "dmixup", "k": 0}, "k:"),
        ({"mode": "mixup", "k": 3}, "k: mixup mixes exactly 2 images"),
        ({"mode": "cutmix", "k": 5}, "k: cutmix mixes exactly 2 images"),
        ({"mode": "dcutmix", "k": 2.5}, "k: must be an integer"),
        ({"mode": "dcutmix", "alpha": 0.0}, "alpha: must be a finite number > 0"),
        ({"mode": "mixup", "alpha": -1.0}, "alpha:"),
        ({"mode": "dmixup", "alpha": float("nan")}, "alpha:"),
        ({"mode": "dcutmix", "prob": 1.5}, "prob: must be a number in [0, 1]"),
        ({"mode": "cutmix", "prob": -0.1}, "prob:"),
        ({"mode": "dcutmix", "num_classes": 0}, "num_classes:"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, message):
    kwargs = {"num_classes": 10, **kwargs}
    mode = kwargs.pop("mode")
    with pytest.raises(ValueError) as info:
        build_mixer(mode, **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("images", "labels", "num_classes", "message"),
    [
        (
            torch.rand(3, 8, 8),
            torch.zeros(3, dtype=torch.long),
            10,
            "images: expected a 4-d tensor",
        ),
        (torch.rand(4, 3, 8, 8), torch.zeros(3, dtype=torch.long), 10, "labels: batch size"),
        (
            torch.rand(4, 3, 8, 8),
            torch.tensor([0, 1, 2, 10]),
            10,
            "labels: class indices must be in [0, 9]",
        ),
        (torch.rand(4, 3, 8, 8), torch.tensor([0, -1, 2, 3]), 10, "labels: class indices"),
        (torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), None, "num_classes: required"),
        (torch.rand(4, 3, 8, 8), torch.rand(4, 7), 10, "labels: probability labels have 7 classes"),
        (
            torch.rand(0, 3, 8, 8),
            torch.zeros(0, dtype=torch.long),
            10,
            "images: the batch is empty",
        ),
        (torch.rand(4, 3, 8, 8), torch.zeros(4), 10, "labels: expected integer class indices"),
    ],
)
def test_bad_inputs_raise_clear_errors(images, labels, num_classes, message):
    mixer = build_mixer("dcutmix", num_classes=num_classes)
    with pytest.raises(ValueError) as info:
        mixer(images, labels)
    assert message in str(info.value)


def test_integer_images_blend_modes_refuse_and_box_modes_accept():
    images = torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="images: dmixup blends pixels"):
        build_mixer("dmixup", num_classes=2)(images, labels)
    mixed, _ = build_mixer("dcutmix", num_classes=2)(images, labels)
    assert mixed.dtype == torch.uint8


def test_generator_on_another_device_is_refused():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="generator:"):
            build_mixer("mixup", num_classes=2)(
                torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), generator=object()
            )
        return
    with pytest.raises(ValueError, match="generator: lives on cuda"):
        build_mixer("mixup", num_classes=2)(
            torch.rand(2, 1, 4, 4),
            torch.zeros(2, dtype=torch.long),
            generator=torch.Generator(device="cuda"),
        )


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "uint8"])
def test_cpu_box_paste_gives_the_gathers_pixels(layout):
    # CutMix's shared rectangle is pasted by slicing on the CPU; the per-pixel gather (the path
    # of every device) must give the same batch, the prob coin included.
    from dataclasses import replace

    from dcutmix.mixing import native
    from dcutmix.mixing.apply import apply_boxes, gate

    gen = torch.Generator().manual_seed(5)
    mixer = CutMix(num_classes=10, alpha=1.0)
    pasted = 0
    for trial in range(40):
        height, width = 9 + trial % 5, 31 - trial % 7
        images = torch.rand(6, 3, height, width, generator=gen)
        if layout == "channels_last":
            images = images.to(memory_format=torch.channels_last)
        elif layout == "uint8":
            images = (images * 255).to(torch.uint8)
        plan = mixer._plan(6, 1, height, width, images.device, gen)
        if trial % 2:
            plan = gate(plan, 0.5, images.device, gen)
        assert plan.box is not None
        fast = apply_boxes(images, plan)
        with native.disabled():  # not the C kernels either
            gathered = apply_boxes(images, replace(plan, box=None))
        assert torch.equal(fast, gathered) and fast.dtype == images.dtype
        assert fast.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
        pasted += int(not torch.equal(fast, images))
    assert pasted >= 10  # most trials really pasted a box


@pytest.mark.slow
def test_compiles_with_torch_compile():
    # One compilation: the compiled mixer keeps the shape, rows that sum to 1, and exactness
    # (each source's pixel share equals its target weight).
    prov = _provenance_batch(8, 16, 16).float()
    full = build_mixer("dcutmix", num_classes=8, k=5, alpha=0.2)
    mixed, targets = torch.compile(lambda x, y: full(x, y))(prov, torch.arange(8))
    assert mixed.shape == prov.shape
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    torch.testing.assert_close(
        targets.double(), _pixel_shares(mixed.double(), 8), atol=1e-6, rtol=0
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", MIXING_MODES)
def test_no_host_synchronisation_on_cuda(mode):
    images = torch.rand(32, 3, 32, 32, device="cuda")
    labels = torch.randint(0, 10, (32,), device="cuda")
    mixer = _build(mode, num_classes=10, k=_k_for(mode, 5), prob=0.5)
    gen = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        mixed, targets = mixer(images, labels, generator=gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isclose(float(targets.sum()), 32.0, rel_tol=1e-5) and mixed.is_cuda
