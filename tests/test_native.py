"""The box mixers' C kernels (dcutmix/mixing/native.py): the same boxes, pixels and targets as the tensor
code that accelerators and machines without a compiler run, and a clean fall-back without them."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from dcutmix.mixing import DCutMix, build_mixer, native
from dcutmix.mixing.apply import apply_boxes, gate, mix_targets
from tests.helpers.provided import require


@pytest.fixture(autouse=True)
def _c_compiler():
    """Every test here needs a C compiler: skipped without one, failed under CI (which has gcc)."""
    require(
        "a C compiler",
        None
        if native.build.find_compiler() is not None
        else "none of $CC, cc, gcc, clang is on PATH, so the mixers run their tensor code",
    )


BOX_MODES = ("dcutmix", "cutmix", "naive_cutmix", "fmix", "cutout")


def test_the_kernels_build_and_load_here():
    # With a compiler on PATH the kernels must really be in use, or every other test here
    # would compare the tensor code with itself.
    assert native.library() is not None
    assert native.available(torch.device("cpu"))
    assert not native.available(torch.device("meta"))
    with native.disabled():
        assert native.library() is None and not native.available(torch.device("cpu"))
        with pytest.raises(RuntimeError, match="turned off or could not be built"):
            native.blend(torch.rand(2, 1, 2, 2), torch.tensor([[1, 0]]), torch.ones(1, 2))
    assert native.library() is not None


@pytest.mark.parametrize("k", [2, 3, 5, 9])
@pytest.mark.parametrize("alpha", [0.05, 0.2, 1.0, 8.0])
def test_nested_boxes_equal_the_tensor_code_bit_for_bit(k, alpha):
    mixer = DCutMix(num_classes=4, k=k, alpha=alpha)
    for seed, (batch, n, height, width) in enumerate(
        [(64, 64, 32, 32), (7, 1, 13, 29), (33, 33, 40, 17), (5, 5, 1, 6), (50, 50, 224, 224)]
    ):
        plans = []
        for use_native in (True, False):
            gen = torch.Generator().manual_seed(seed)
            if use_native:
                plans.append(mixer._plan(batch, n, height, width, torch.device("cpu"), gen))
            else:
                with native.disabled():
                    plans.append(mixer._plan(batch, n, height, width, torch.device("cpu"), gen))
        fast, tensor = plans
        assert torch.equal(fast.perms, tensor.perms)
        assert fast.rows.dtype == tensor.rows.dtype == torch.int32
        assert torch.equal(fast.rows, tensor.rows) and torch.equal(fast.cols, tensor.cols)
        assert fast.weights.dtype == torch.float32
        assert torch.equal(fast.weights, tensor.weights)
        # the visible shares are the pixel counts of the levels
        counts = torch.stack([(fast.level == j).sum((1, 2)) for j in range(k)], dim=1)
        torch.testing.assert_close(
            fast.weights.double(), counts.double() / (height * width), atol=1e-7, rtol=0
        )


def _images(layout: str, dtype: torch.dtype, shape, gen) -> torch.Tensor:
    images = torch.rand(shape, generator=gen) * 200
    images = images.to(dtype)
    if layout == "channels_last":
        images = images.to(memory_format=torch.channels_last)
    return images


@pytest.mark.parametrize("mode", BOX_MODES)
@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_mixers_give_the_tensor_codes_pixels_and_targets(mode, per_sample, layout):
    gen = torch.Generator().manual_seed(11)
    ks = (2, 3, 6) if mode in ("dcutmix", "naive_cutmix") else (None,)
    checked = 0
    for k in ks:
        for prob in (1.0, 0.5):
            extra = {"length": 5} if mode == "cutout" else {}  # it hangs over the borders too
            mixer = build_mixer(mode, num_classes=7, k=k, per_sample=per_sample, prob=prob, **extra)
            for dtype in (torch.float32, torch.uint8, torch.float64, torch.bfloat16):
                shape = (9, 3, 11 + checked % 5, 23 - checked % 4)
                images = _images(layout, dtype, shape, gen)
                labels = torch.randint(0, 7, (9,), generator=gen)
                seed = int(torch.randint(1 << 30, (1,), generator=gen))
                fast = mixer(images, labels, generator=torch.Generator().manual_seed(seed))
                with native.disabled():
                    slow = mixer(images, labels, generator=torch.Generator().manual_seed(seed))
                assert torch.equal(fast[0], slow[0]) and fast[0].dtype == dtype
                assert torch.equal(fast[1], slow[1]) and fast[1].dtype == torch.float32
                # the kernels keep the caller's memory format
                kept = fast[0].is_contiguous(memory_format=torch.channels_last)
                assert kept == (layout == "channels_last")
                checked += 1
    assert checked >= 8


def test_paste_equals_the_gather_for_every_level_shape():
    # Nested profiles, a per-pixel map, a shared (n = 1) map and a gated (all level 0) plan.
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(12, 2, 17, 19, generator=gen)
    for mode, per_sample in [("dcutmix", True), ("dcutmix", False), ("naive_cutmix", True),
                             ("fmix", False), ("cutmix", True)]:  # fmt: skip
        mixer = build_mixer(mode, num_classes=3, per_sample=per_sample)
        for trial in range(6):
            n = 12 if per_sample else 1
            plan = mixer._plan(12, n, 17, 19, images.device, gen)
            if trial % 3 == 2:
                plan = gate(plan, 0.5, images.device, gen)
            fast = apply_boxes(images, plan)
            with native.disabled():
                slow = apply_boxes(images, plan)
            assert torch.equal(fast, slow)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_wide_rows_copied_as_runs_give_the_same_pixels(layout):
    # Rows of RUN_BYTES or more (224-pixel images) are copied run by run instead of box over box.
    gen = torch.Generator().manual_seed(4)
    for width, k, per_sample in [(160, 5, True), (300, 9, True), (200, 3, False)]:
        images = _images(layout, torch.float32, (10, 3, 21, width), gen)
        mixer = build_mixer("dcutmix", num_classes=3, k=k, alpha=1.0, per_sample=per_sample)
        for trial in range(4):
            plan = mixer._plan(10, 10 if per_sample else 1, 21, width, images.device, gen)
            if trial == 3:
                plan = gate(plan, 0.5, images.device, gen)
            fast = apply_boxes(images, plan)
            with native.disabled():
                slow = apply_boxes(images, plan)
            assert torch.equal(fast, slow)


def test_targets_equal_the_scatter_bit_for_bit():
    gen = torch.Generator().manual_seed(8)
    for mode in ("dcutmix", "naive_cutmix", "dmixup", "mixup", "cutmix"):
        for per_sample in (True, False):
            mixer = build_mixer(mode, num_classes=3, k=None, per_sample=per_sample)
            k = mixer.k
            mixer = build_mixer(mode, num_classes=3, k=k if k == 2 else 6, per_sample=per_sample)
            batch = 40
            plan = mixer._plan(batch, batch if per_sample else 1, 8, 8, torch.device("cpu"), gen)
            labels = torch.randint(0, 3, (batch,), generator=gen)  # classes repeat among sources
            fast = mix_targets(None, plan, labels, 3)
            with native.disabled():
                slow = mix_targets(None, plan, labels, 3)
            assert torch.equal(fast, slow)
            torch.testing.assert_close(fast.sum(1), torch.ones(batch))


def test_bad_indices_raise_instead_of_reading_out_of_bounds():
    images = torch.rand(4, 3, 8, 8)
    partners = torch.tensor([[1, 2, 3, 0]])
    level = torch.zeros(1, 8, 8, dtype=torch.long)
    assert torch.equal(native.paste(images, partners, level=level), images)
    with pytest.raises(RuntimeError, match="source index is outside the batch"):
        native.paste(images, torch.tensor([[1, 2, 3, 4]]), level=level + 1)
    with pytest.raises(RuntimeError, match="level is outside the plan"):
        native.paste(images, partners, level=level + 2)
    rows = torch.full((1, 8), 3, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="level is outside the plan"):
        native.paste(images, partners, rows=rows, cols=rows)
    holes = torch.tensor([[1, 0, 1, 1, 1, 1, 1, 1]], dtype=torch.int32)  # depth 1 rows 0, 2..7
    with pytest.raises(RuntimeError, match="not nested boxes"):
        native.paste(images, partners, rows=holes, cols=torch.ones(1, 8, dtype=torch.int32))
    weights = torch.tensor([[0.5, 0.5]])
    with pytest.raises(RuntimeError, match="class index is outside"):
        native.mix_targets(torch.tensor([0, 1, 2, 5]), partners, weights, 5)
    # buffers of the wrong size never reach the C code
    with pytest.raises(ValueError, match=r"rows: expected shape \(1, 8\)"):
        native.paste(images, partners, rows=torch.ones(1, 6, dtype=torch.int32), cols=rows)
    with pytest.raises(ValueError, match="partners: expected shape"):
        native.blend(images, torch.tensor([[1, 0]]), torch.ones(1, 2))
    with pytest.raises(ValueError, match="weights: expected shape"):
        native.mix_targets(torch.tensor([0, 1, 2, 3]), partners, torch.ones(1, 3), 5)
    with pytest.raises(ValueError, match="box: expected shape"):
        native.resize_paste(
            images,
            torch.tensor([1, 2, 3, 0]),
            torch.eye(8)[None],
            torch.eye(8)[None],
            torch.zeros(3, 1),
        )
    shrink = torch.full((1, 1), float("nan"))
    with pytest.raises(RuntimeError, match="box falls outside the image"):
        native.nested_boxes(shrink, torch.zeros(1, 2, 1), 8, 8)


def test_autograd_and_strided_batches_take_the_tensor_code():
    mixer = build_mixer("dcutmix", num_classes=4)
    images = torch.rand(6, 3, 10, 10, requires_grad=True)
    assert not native.usable(images)
    mixed, _ = mixer(images, torch.arange(6) % 4, generator=torch.Generator().manual_seed(0))
    mixed.sum().backward()
    assert images.grad is not None and images.grad.sum() == images.numel()
    strided = torch.rand(6, 3, 10, 20)[..., ::2]
    assert not native.usable(strided)
    fast = mixer(strided, torch.arange(6) % 4, generator=torch.Generator().manual_seed(1))
    slow = mixer(
        strided.contiguous(), torch.arange(6) % 4, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(fast[0], slow[0])


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


MIX_ONCE = """
    import warnings, torch
    from dcutmix.mixing import native
    from dcutmix.mixing import build_mixer
    mixer = build_mixer("dcutmix", num_classes=4)
    for _ in range(3):
        mixed, targets = mixer(torch.rand(8, 3, 16, 16), torch.arange(8) % 4)
    print("library", native.library() is not None, "rows", torch.allclose(targets.sum(1), torch.ones(8)))
"""


def test_without_a_compiler_the_mixers_warn_once_and_use_the_tensor_code(tmp_path):
    done = _python(
        MIX_ONCE, {"CC": "false", "PATH": "/nonexistent", "DCUTMIX_NATIVE_DIR": str(tmp_path)}
    )
    assert done.returncode == 0, done.stderr
    assert "library False rows True" in done.stdout
    assert done.stderr.count("could not be built") == 1
    assert "no C compiler" in done.stderr


def test_a_failing_compiler_and_the_off_switch_fall_back(tmp_path):
    false = shutil.which("false")
    done = _python(MIX_ONCE, {"CC": false, "DCUTMIX_NATIVE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "library False rows True" in done.stdout and "could not be built" in done.stderr
    assert not list(tmp_path.iterdir())  # no half-written library left behind
    done = _python(MIX_ONCE, {"DCUTMIX_NATIVE": "0", "DCUTMIX_NATIVE_DIR": str(tmp_path)})
    assert "library False rows True" in done.stdout and "could not be built" not in done.stderr


def test_processes_building_at_once_share_one_library(tmp_path):
    # Four processes start with an empty cache: each builds to a temporary name and renames it
    # into place, so all load a complete library and one file remains.
    env = {**os.environ, "DCUTMIX_NATIVE_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(MIX_ONCE)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "library True rows True" in out
    # one library and its record (size and hash)
    assert sorted(p.name.partition(".")[2] for p in tmp_path.iterdir()) == ["so", "so.sha256"]


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resizemix_paste_equals_the_full_frame_products(per_sample, dtype):
    # The C loop sums each patch pixel's band of partner pixels; the products sum the same
    # terms (and zeros) in another order, so they agree to rounding.
    from dcutmix.mixing import ResizeMix
    from dcutmix.mixing.resizemix import paste_resized, resize_matrix

    mixer = ResizeMix(num_classes=2, per_sample=per_sample)
    gen = torch.Generator().manual_seed(2)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    for trial, (height, width) in enumerate([(23, 19), (40, 64), (7, 130), (31, 31)] * 2):
        images = torch.rand(6, 3, height, width, generator=gen, dtype=dtype)
        plan = mixer._plan(6, 6 if per_sample else 1, height, width, images.device, gen)
        corner, side = plan.corner, plan.side
        if trial >= 4:
            plan = gate(plan, 0.5, images.device, gen)
        fast = paste_resized(images, plan, corner, side)
        rows = resize_matrix(corner[0], side[0], height, dtype)
        cols = resize_matrix(corner[1], side[1], width, dtype)
        full = rows.unsqueeze(1) @ images[plan.perms[0]] @ cols.transpose(1, 2).unsqueeze(1)
        expected = torch.where(plan.pixel_level.bool().unsqueeze(1), full, images)
        assert fast.dtype == dtype and fast.is_contiguous()
        torch.testing.assert_close(fast, expected, atol=tolerance, rtol=tolerance)
        box = plan.pixel_level.bool().unsqueeze(1).expand_as(images)
        assert torch.equal(fast[~box], images[~box])  # outside the patch: the image, exactly


def test_resizemix_bad_box_raises():
    images = torch.rand(2, 1, 8, 8)
    eye = torch.eye(8).unsqueeze(0)
    good = torch.tensor([[0], [0], [8], [8]])
    assert torch.equal(
        native.resize_paste(images, torch.tensor([1, 0]), eye, eye, good), images[[1, 0]]
    )
    with pytest.raises(RuntimeError, match="box falls outside the image"):
        native.resize_paste(
            images, torch.tensor([1, 0]), eye, eye, torch.tensor([[1], [0], [8], [8]])
        )
    with pytest.raises(RuntimeError, match="source index is outside the batch"):
        native.resize_paste(images, torch.tensor([2, 0]), eye, eye, good)


@pytest.mark.parametrize("mode", ["mixup", "naive_mixup", "dmixup", "manifold_mixup"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_blends_equal_the_tensor_code_to_the_last_bits(mode, layout):
    # The C loop rounds each product and sum on its own; the tensor code's addcmul_ may fuse
    # them, so the two agree to a few units in the last place, and the targets exactly.
    gen = torch.Generator().manual_seed(6)
    for per_sample in (False, True):
        mixer = build_mixer(mode, num_classes=5, per_sample=per_sample, prob=0.7)
        for dtype, ulps in ((torch.float32, 4e-7), (torch.float64, 1e-15)):
            images = torch.randn(10, 3, 9, 14, generator=gen, dtype=dtype)
            if layout == "channels_last":
                images = images.to(memory_format=torch.channels_last)
            labels = torch.randint(0, 5, (10,), generator=gen)
            for seed in range(3):
                fast = mixer(images, labels, generator=torch.Generator().manual_seed(seed))
                with native.disabled():
                    slow = mixer(images, labels, generator=torch.Generator().manual_seed(seed))
                torch.testing.assert_close(fast[0], slow[0], atol=ulps * 8, rtol=ulps)
                assert torch.equal(fast[1], slow[1])
                kept = fast[0].is_contiguous(memory_format=torch.channels_last)
                assert kept == (layout == "channels_last")
    # half precision keeps the tensor code
    half = torch.rand(4, 3, 5, 5, dtype=torch.bfloat16)
    mixed, _ = build_mixer(mode, num_classes=2)(half, torch.tensor([0, 1, 0, 1]))
    assert mixed.dtype == torch.bfloat16


def _cached_library(folder) -> tuple:
    (library,) = folder.glob("*.so")
    return library, library.with_name(library.name + ".sha256")


@pytest.mark.parametrize("damage", ["truncated", "another machine's file"])
def test_a_damaged_cached_library_is_built_again_not_loaded(tmp_path, damage):
    # Mapping a truncated library kills the process with a bus error and no message; a file that
    # is whole but not loadable here makes ctypes fail. Either way the mixers must go on.
    env = {"DCUTMIX_NATIVE_DIR": str(tmp_path)}
    first = _python(MIX_ONCE, env)
    assert first.returncode == 0 and "library True rows True" in first.stdout, first.stderr
    library, record = _cached_library(tmp_path)
    whole = library.read_bytes()
    if damage == "truncated":
        library.write_bytes(whole[:1000])
    else:
        # a matching record, so only the load itself can tell
        library.write_bytes(b"\x7fELF" + bytes(len(whole) - 4))
        record.write_text(f"{len(whole)} {hashlib.sha256(library.read_bytes()).hexdigest()}\n")
    again = _python(MIX_ONCE, env)
    assert again.returncode == 0, f"exit {again.returncode}: {again.stderr[-400:]}"
    assert "library True rows True" in again.stdout
    assert library.read_bytes() == whole  # rebuilt: the same compiler gives the same file
    assert record.read_text() == f"{len(whole)} {hashlib.sha256(whole).hexdigest()}\n"
