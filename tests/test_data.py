"""Datasets and loaders: exact epochs, crops and flips, seeded and resumable order, every dataset."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

from dcutmix.bench.data import run_data_benchmark
from dcutmix.config import CONF_DIR
from dcutmix.data import (
    DATASET_DEFAULTS,
    ArrayImageDataset,
    DeviceLoader,
    TorchLoader,
    build_data,
    classic_cifar_loader,
    crop_flip,
    parse_dataset,
    pil_transform,
)
from dcutmix.data.settings import CIFAR_MEAN, CIFAR_STD
from dcutmix.errors import ConfigError
from tests.helpers.cifar import write_cifar10, write_cifar100

CPU = torch.device("cpu")
LOADERS = ("device", "torch")
# With this normalisation outputs are x / 255, so the pixels can be read back exactly.
IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def make_loader(
    kind: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    crop_padding: int = 0,
    hflip: bool = False,
    num_workers: int = 0,
    mean: tuple[float, ...] = IDENTITY["mean"],
    std: tuple[float, ...] = IDENTITY["std"],
    **options,
):
    """A DeviceLoader or a TorchLoader (PIL transforms) over the same uint8 (N, C, H, W) images."""
    common = {"batch_size": 10, "shuffle": True, "device": CPU, **options}
    if kind == "device":
        return DeviceLoader(
            images, labels, crop_padding=crop_padding, hflip=hflip, mean=mean, std=std, **common
        )
    transform = pil_transform(tuple(images.shape[2:]), mean, std, crop_padding, hflip)
    dataset = ArrayImageDataset(images.permute(0, 2, 3, 1).numpy(), labels.tolist(), transform)
    return TorchLoader(dataset, num_workers=num_workers, **common)


def pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels back from a loader built with IDENTITY normalisation."""
    return (images * 255).round().to(torch.uint8)


def indexed_images(n: int, size: int = 16) -> torch.Tensor:
    """Constant images whose first two channels spell their index, so any crop still shows it."""
    index = torch.arange(n)
    planes = torch.stack([index // 255 + 1, index % 255 + 1, torch.full((n,), 7)], dim=1)
    return planes[:, :, None, None].expand(n, 3, size, size).to(torch.uint8).contiguous()


def decode_index(images: torch.Tensor) -> torch.Tensor:
    peak = pixels(images).amax(dim=(2, 3)).long()  # zero padding never exceeds the image's value
    return (peak[:, 0] - 1) * 255 + (peak[:, 1] - 1)


def random_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, 3, h, w), generator=generator, dtype=torch.uint8)


def normalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    """(x / 255 - mean) / std of uint8 (N, C, H, W) images, written out the plain way."""
    return (images.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(
        1, -1, 1, 1
    )


def collect(batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), labels.clone()) for images, labels in batches]


def same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, y) and torch.equal(i, j) for (x, i), (y, j) in zip(a, b, strict=True)
    )


# --- epochs: every image once, crops, flips, order, resume ------------------------------------------


@pytest.mark.parametrize("kind", LOADERS)
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_image_exactly_once_per_epoch(kind, drop_last):
    n = 103
    loader = make_loader(
        kind, indexed_images(n), torch.arange(n), crop_padding=4, hflip=True, drop_last=drop_last
    )
    batches = collect(loader.epoch(1))
    seen = torch.cat([decode_index(images) for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    assert torch.equal(seen, labels)  # each label travels with its own image
    assert len(batches) == len(loader) == (10 if drop_last else 11)
    assert len(seen) == loader.num_samples == (100 if drop_last else n)
    assert len(set(seen.tolist())) == len(seen)
    if not drop_last:
        assert sorted(seen.tolist()) == list(range(n))
        assert [len(labels) for _, labels in batches] == [10] * 10 + [3]


def test_crop_flip_equals_windows_of_the_zero_padded_image():
    b, h, w, p = 64, 7, 9, 3
    images = random_images(b, h, w)
    generator = torch.Generator().manual_seed(1)
    top, left = torch.randint(0, 2 * p + 1, (2, b), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    out = crop_flip(images, top, left, flip, p)
    padded = F.pad(images, (p, p, p, p))
    for i in range(b):
        window = padded[i, :, top[i] : top[i] + h, left[i] : left[i] + w]
        assert torch.equal(out[i], window.flip(-1) if flip[i] else window)
    assert flip.any() and not flip.all()


def _find_window(
    source: torch.Tensor, out: torch.Tensor, padding: int
) -> tuple[int, int, bool] | None:
    _, h, w = source.shape
    padded = F.pad(source, (padding,) * 4)
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            window = padded[:, top : top + h, left : left + w]
            for flipped in (False, True):
                if torch.equal(out, window.flip(-1) if flipped else window):
                    return top, left, flipped
    return None


@pytest.mark.parametrize("kind", LOADERS)
def test_augmented_images_are_shifted_windows_of_the_padded_image_maybe_mirrored(kind):
    n = 60
    images = random_images(n, 12, 12)
    loader = make_loader(kind, images, torch.arange(n), crop_padding=4, hflip=True)
    found = []
    for batch, labels in loader.epoch(1):
        for out, label in zip(pixels(batch), labels, strict=True):
            found.append(_find_window(images[label], out, 4))
    assert None not in found
    assert len({(top, left) for top, left, _ in found}) > 20  # offsets are drawn per sample
    assert {flipped for *_, flipped in found} == {False, True}


@pytest.mark.parametrize("kind", LOADERS)
def test_without_augmentation_the_output_is_the_normalised_input(kind):
    n = 23
    images = random_images(n, 8, 8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    expected = normalised(images, mean, std)
    for shuffle in (False, True):
        loader = make_loader(
            kind, images, torch.arange(n), batch_size=5, shuffle=shuffle, mean=mean, std=std
        )
        batches = collect(loader.epoch(2))
        order = torch.cat([labels for _, labels in batches])
        assert (order.tolist() == list(range(n))) != shuffle
        out = torch.cat([images for images, _ in batches])
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, expected[order], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", LOADERS)
def test_an_epoch_is_a_pure_function_of_seed_and_epoch(kind):
    images, labels = random_images(40, 8, 8), torch.arange(40)

    def run(seed: int, epoch: int):
        return collect(
            make_loader(kind, images, labels, seed=seed, crop_padding=2, hflip=True).epoch(epoch)
        )

    assert same_batches(run(0, 3), run(0, 3))
    orders = {
        tuple(torch.cat([y for _, y in run(seed, epoch)]).tolist())
        for seed, epoch in ((0, 3), (0, 4), (1, 3))
    }
    assert len(orders) == 3


@pytest.mark.parametrize("kind", LOADERS)
def test_resuming_mid_epoch_yields_the_rest_of_the_same_epoch(kind):
    images, labels = random_images(47, 8, 8), torch.arange(47)
    loader = make_loader(kind, images, labels, crop_padding=4, hflip=True)
    full = collect(loader.epoch(5))
    for start in (1, 3, len(loader) - 1, len(loader)):
        assert same_batches(collect(loader.epoch(5, start_step=start)), full[start:])
    with pytest.raises(ValueError, match="start_step"):
        loader.epoch(5, start_step=len(loader) + 1)


def test_torch_loader_batches_do_not_depend_on_the_number_of_workers():
    images, labels = random_images(30, 8, 8), torch.arange(30)
    serial = collect(make_loader("torch", images, labels, crop_padding=4, hflip=True).epoch(1))
    workers = make_loader("torch", images, labels, crop_padding=4, hflip=True, num_workers=2)
    assert same_batches(collect(workers.epoch(1, start_step=1)), serial[1:])


@pytest.mark.parametrize("kind", LOADERS)
def test_loading_leaves_the_global_random_state_alone(kind):
    loader = make_loader(
        kind, random_images(20, 8, 8), torch.arange(20), crop_padding=4, hflip=True
    )
    before = torch.get_rng_state()
    collect(loader.epoch(1))
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("kind", LOADERS)
def test_channels_last_on_request(kind):
    images, labels = random_images(8, 8, 8), torch.arange(8)
    plain, _ = next(make_loader(kind, images, labels, batch_size=4).epoch(1))
    last, _ = next(make_loader(kind, images, labels, batch_size=4, channels_last=True).epoch(1))
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert not plain.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(last, plain)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_loader_on_cuda_resumes_exactly():
    cuda = torch.device("cuda")
    loader = DeviceLoader(
        random_images(300, 32, 32),
        torch.arange(300),
        batch_size=64,
        device=cuda,
        shuffle=True,
        crop_padding=4,
        hflip=True,
        **IDENTITY,
    )
    full = collect(loader.epoch(2))
    assert full[0][0].device.type == "cuda" and full[0][1].dtype == torch.int64
    assert same_batches(collect(loader.epoch(2, start_step=2)), full[2:])


# --- datasets --------------------------------------------------------------------------------------------


def all_batches(loader):
    batches = collect(loader.epoch(1))
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_digits_is_1797_images_of_10_classes_split_by_class():
    data = build_data({"name": "digits", "drop_last": False}, batch_size=64, device=CPU, seed=0)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 3, (32, 32))
    train_images, train_labels = all_batches(data.train)
    val_images, val_labels = all_batches(data.val)
    assert train_images.shape == (1437, 3, 32, 32) and val_images.shape == (360, 3, 32, 32)
    assert data.train.num_samples + data.val.num_samples == 1797
    totals = Counter(train_labels.tolist()) + Counter(val_labels.tolist())
    assert sorted(totals) == list(range(10))
    for label, count in Counter(val_labels.tolist()).items():
        assert abs(count - 0.2 * totals[label]) <= 1  # stratified
    # the split is the dataset's, not the run's
    other = build_data({"name": "digits"}, batch_size=64, device=CPU, seed=7)
    torch.testing.assert_close(all_batches(other.val), (val_images, val_labels))


def test_digits_normalisation_matches_its_train_split():
    data = build_data(
        {"name": "digits", "augment": False, "drop_last": False, **IDENTITY},
        batch_size=256,
        device=CPU,
        seed=0,
    )
    images, _ = all_batches(data.train)
    assert images.min() == 0 and images.max() == 1
    assert torch.equal(images[:, 0], images[:, 2])  # grey, replicated to three channels
    defaults = DATASET_DEFAULTS["digits"]
    assert images.mean(dim=(0, 2, 3)).tolist() == pytest.approx(defaults["mean"], abs=2e-4)
    assert images.std(dim=(0, 2, 3)).tolist() == pytest.approx(defaults["std"], abs=2e-4)


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(
    ("name", "write"), [("cifar10", write_cifar10), ("cifar100", write_cifar100)]
)
def test_cifar_loads_the_official_layout(tmp_path, name, write, loader):
    written = write(tmp_path)
    cfg = {"name": name, "root": str(tmp_path), "loader": loader, "drop_last": False}
    data = build_data(cfg, batch_size=16, device=CPU, seed=0, eval_batch_size=4)
    assert (data.num_classes, data.in_channels, data.image_size) == (
        written.num_classes,
        3,
        (32, 32),
    )
    assert data.mean == (0.4914, 0.4822, 0.4465) and data.std == (0.2023, 0.1994, 0.2010)
    val_images, val_labels = all_batches(data.val)  # the test set, in file order
    expected = normalised(
        torch.from_numpy(written.test_images).permute(0, 3, 1, 2), data.mean, data.std
    )
    torch.testing.assert_close(val_images, expected, atol=1e-5, rtol=0)
    assert val_labels.tolist() == written.test_labels.tolist()
    _, train_labels = all_batches(data.train)
    assert data.train.num_samples == 100
    assert sorted(train_labels.tolist()) == sorted(written.train_labels.tolist())


@pytest.mark.parametrize(
    ("name", "folder"), [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")]
)
def test_missing_cifar_without_download_names_the_root(tmp_path, name, folder):
    with pytest.raises(ConfigError, match=rf"^dataset\.root: .*{folder}.*dataset\.download=true"):
        build_data(
            {"name": name, "root": str(tmp_path / "nowhere")}, batch_size=8, device=CPU, seed=0
        )


def test_a_partial_cifar_folder_lists_what_is_missing(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="missing data_batch_3"):
        build_data({"name": "cifar10", "root": str(tmp_path)}, batch_size=8, device=CPU, seed=0)


def _write_image_folder(root: Path, classes: list[str], per_split: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels_hwc = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels_hwc).save(root / split / name / f"{i}.png")


def test_imagefolder_loads_class_folders_of_pngs(tmp_path):
    _write_image_folder(tmp_path, ["cat", "dog", "owl"], {"train": 5, "val": 2})
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 24, "resize": 28}
    data = build_data(cfg, batch_size=4, device=CPU, seed=0, num_workers=0)
    assert (data.num_classes, data.in_channels, data.image_size) == (3, 3, (24, 24))
    assert (len(data.train), data.train.num_samples) == (3, 12)  # 15 images, drop_last
    images, labels = all_batches(data.val)
    assert images.shape == (6, 3, 24, 24) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    full = collect(data.train.epoch(2))
    assert full[0][0].shape == (4, 3, 24, 24)
    assert same_batches(collect(data.train.epoch(2, start_step=1)), full[1:])


def test_imagefolder_needs_matching_train_and_val_classes(tmp_path):
    _write_image_folder(tmp_path, ["cat", "dog"], {"train": 2})
    _write_image_folder(tmp_path, ["cat"], {"val": 2})
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 16}
    with pytest.raises(ConfigError, match=r"^dataset\.root: .*same class folders"):
        build_data(cfg, batch_size=2, device=CPU, seed=0)


def test_fake_data_has_the_asked_shape_and_is_fixed():
    cfg = {
        "name": "fake",
        "num_train": 20,
        "num_val": 6,
        "num_classes": 4,
        "image_size": [6, 10],
        "channels": 1,
        "augment": False,
    }
    data = build_data(cfg, batch_size=8, device=CPU, seed=0)
    assert (data.num_classes, data.in_channels, data.image_size, data.mean) == (
        4,
        1,
        (6, 10),
        (0.5,),
    )
    images, labels = all_batches(data.val)
    assert images.shape == (6, 1, 6, 10) and labels.max() < 4
    again = build_data(cfg, batch_size=8, device=CPU, seed=3)
    torch.testing.assert_close(all_batches(again.val), (images, labels))


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"name": "emnist"}, r"^dataset\.name: 'emnist' is unknown; choose one of digits, cifar10"),
        (
            {"name": "digits", "crop_pad": 4},
            r"^dataset\.crop_pad: not a setting of dataset digits; valid: .*crop_padding",
        ),
        (
            {"name": "digits", "loader": "gpu"},
            r"^dataset\.loader: 'gpu' is not one of auto, device, torch",
        ),
        ({"name": "digits", "mean": [0.5, 0.5]}, r"^dataset\.mean: .* a list of 3"),
        ({"name": "digits", "std": 0}, r"^dataset\.std: 0 must be positive"),
        (
            {"name": "digits", "val_fraction": 1.5},
            r"^dataset\.val_fraction: 1\.5 must be a number strictly between",
        ),
        (
            {"name": "digits", "crop_padding": -1},
            r"^dataset\.crop_padding: -1 must be a whole number >= 0",
        ),
        (
            {"name": "fake", "num_train": 10},
            r"^trainer\.batch_size: 16 is more than the 10 training images",
        ),
        (
            {"name": "fake", "channels": 2, "loader": "torch"},
            r"^dataset\.loader: torch needs 1 or 3 channels",
        ),
        ({"name": "imagefolder"}, r"^dataset\.root: not set"),
        (
            {"name": "imagefolder", "root": "/nonexistent"},
            r"^dataset\.root: /nonexistent has no train/ folder",
        ),
    ],
)
def test_bad_settings_raise_one_line_config_errors(cfg, message):
    with pytest.raises(ConfigError, match=message) as caught:
        build_data(cfg, batch_size=16, device=CPU, seed=0)
    assert "\n" not in str(caught.value)


def test_imagefolder_refuses_the_device_loader(tmp_path):
    _write_image_folder(tmp_path, ["cat"], {"train": 1, "val": 1})
    with pytest.raises(ConfigError, match=r"^dataset\.loader: device needs an in-memory dataset"):
        build_data(
            {"name": "imagefolder", "root": str(tmp_path), "loader": "device"},
            batch_size=1,
            device=CPU,
            seed=0,
        )


def test_settings_are_checked_without_reading_data_and_accept_omegaconf_values():
    listed = OmegaConf.load(Path(CONF_DIR) / "dataset" / "cifar100.yaml")
    settings = parse_dataset(
        {**listed, "root": "/not/mounted/here", "loader": "torch"}
    )  # lists stay ListConfig
    assert settings.mean == (0.4914, 0.4822, 0.4465) and settings.loader == "torch"
    fake = parse_dataset(
        {**OmegaConf.create({"name": "fake", "image_size": [8, 12], "mean": [0.1, 0.2, 0.3]})}
    )
    assert (fake.image_size, fake.mean, fake.std) == ((8, 12), (0.1, 0.2, 0.3), (0.29, 0.29, 0.29))


@pytest.mark.parametrize("name", sorted(DATASET_DEFAULTS))
def test_each_yaml_lists_exactly_the_code_defaults(name):
    listed = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "dataset" / f"{name}.yaml"))
    as_yaml = {
        key: list(v) if isinstance(v, tuple) else v for key, v in DATASET_DEFAULTS[name].items()
    }
    assert listed == {"name": name, **as_yaml}


# --- the benchmark's baseline ------------------------------------------------------------------------


def test_classic_loader_yields_normalised_crops_of_its_images():
    images = random_images(32, 32, 32).permute(0, 2, 3, 1).numpy()
    loader = classic_cifar_loader(images, list(range(32)), batch_size=8, num_workers=0, **IDENTITY)
    batch, labels = next(iter(loader))
    assert batch.shape == (8, 3, 32, 32) and batch.dtype == torch.float32
    source = torch.from_numpy(images).permute(0, 3, 1, 2)
    assert all(
        _find_window(source[y], out, 4) is not None
        for out, y in zip(pixels(batch), labels, strict=True)
    )


def _images_per_second(epochs: dict, rounds: int = 3) -> dict[str, float]:
    """Images/s of each ``epochs`` function (it returns the images it yielded), timed here.

    The functions alternate round by round and each keeps its median, so a machine that gets
    busier during the test slows both alike.
    """
    samples: dict[str, list[float]] = {name: [] for name in epochs}
    for _ in range(rounds):
        for name, epoch in epochs.items():
            start = time.perf_counter()
            images = epoch()
            samples[name].append(images / (time.perf_counter() - start))
    return {name: statistics.median(rates) for name, rates in samples.items()}


@pytest.fixture
def one_thread():
    """Time on one thread: threads of torch that spin-wait on a busy machine make rates erratic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_data_benchmark_reports_the_rates_and_ratio_an_independent_timing_finds(one_thread):
    num_images, batch_size = 2048, 64
    result = run_data_benchmark(num_images=num_images, batch_size=batch_size, workers=0, rounds=3)
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (num_images, 3, 32, 32), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 100, (num_images,), generator=generator)
    device_loader = DeviceLoader(
        images, labels, batch_size=batch_size, device=torch.device("cpu"), mean=CIFAR_MEAN,
        std=CIFAR_STD, shuffle=True, crop_padding=4, hflip=True, drop_last=True,
    )  # fmt: skip
    classic = classic_cifar_loader(
        images.permute(0, 2, 3, 1).numpy(), labels.tolist(), batch_size=batch_size, num_workers=0
    )
    rates = _images_per_second(
        {
            "device": lambda: sum(len(y) for _, y in device_loader.epoch(0)),
            "classic": lambda: sum(len(y) for _, y in classic),
        }
    )
    # Timings differ from run to run, but not by a factor of 4: a rate per batch rather than per
    # image, or a ratio turned upside down (the device loader is several times faster), would.
    assert rates["device"] > 2 * rates["classic"], rates
    for name in ("device", "classic"):
        assert 1 / 4 < result[f"images_per_second_{name}"] / rates[name] < 4, (result, rates)
    assert 1 / 3 < result["ratio"] / (rates["device"] / rates["classic"]) < 3, (result, rates)
