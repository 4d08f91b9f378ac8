"""Fashion-MNIST and the MNIST format: the real files as they are, both layouts, both encodings,
the default search, the downloader's layout, every bad file named in one line, and a run.

Tests on the real files need Debian's dataset-fashion-mnist: under CI=true they fail without it,
elsewhere they skip with one reason line (tests/helpers/provided.py). The others write full-size
synthetic sets.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dcutmix.data import DATASET_DEFAULTS, build_data, check_data_files, mnist, parse_dataset
from dcutmix.errors import InputError
from tests.helpers.idx import (
    COUNTS,
    DEBIAN_FASHION_MNIST,
    NAMES,
    decode_idx,
    idx_bytes,
    sha256,
    synthetic_set,
    write_idx,
)
from tests.helpers.provided import require
from tests.helpers.runs import cli, read_results

CPU = torch.device("cpu")
IDENTITY = {"mean": [0.0], "std": [1.0], "augment": False, "drop_last": False}


def require_real_files() -> Path:
    complete = all(
        (DEBIAN_FASHION_MNIST / f"{name}.gz").is_file() for pair in NAMES.values() for name in pair
    )
    require(
        "the Fashion-MNIST files",
        None
        if complete
        else f"none in {DEBIAN_FASHION_MNIST}; apt-get install dataset-fashion-mnist",
    )
    return DEBIAN_FASHION_MNIST


def loaded(name: str, root: Path | None, download: bool = False) -> dict[str, np.ndarray]:
    train_x, train_y, test_x, test_y, classes = mnist.load(name, root, download)
    assert classes == 10
    return {
        "train_images": train_x,
        "train_labels": train_y,
        "test_images": test_x,
        "test_labels": test_y,
    }


def assert_equals_files(arrays: dict, images: dict, labels: dict) -> None:
    """Count, shape and a checksum of the decoded bytes, split by split."""
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        assert x.shape == (COUNTS[split], 1, 28, 28) and x.dtype == torch.uint8
        assert y.shape == (COUNTS[split],) and y.dtype == torch.int64
        assert sha256(x.numpy()) == sha256(images[split])
        assert sha256(y.numpy().astype(np.uint8)) == sha256(labels[split])


# --- the real files -------------------------------------------------------------------------------


def test_the_real_files_load_exactly_as_the_idx_files_hold_them():
    root = require_real_files()
    decoded = {
        kind: {s: decode_idx(root / f"{NAMES[s][i]}.gz") for s in NAMES}
        for i, kind in enumerate(("images", "labels"))
    }
    assert_equals_files(loaded("fashion_mnist", root), decoded["images"], decoded["labels"])
    # the published split: 6,000 training and 1,000 test images of each of the 10 classes
    assert np.bincount(decoded["labels"]["train"]).tolist() == [6000] * 10
    assert np.bincount(decoded["labels"]["test"]).tolist() == [1000] * 10


def test_the_yaml_mean_and_std_are_the_train_splits():
    root = require_real_files()
    pixels = decode_idx(root / "train-images-idx3-ubyte.gz").astype(np.float64) / 255
    defaults = DATASET_DEFAULTS["fashion_mnist"]
    assert pixels.mean() == pytest.approx(defaults["mean"][0], abs=5e-5)
    assert pixels.std() == pytest.approx(defaults["std"][0], abs=5e-5)


def test_the_val_loader_is_the_test_file_in_order():
    root = require_real_files()
    data = build_data(
        {"name": "fashion_mnist", "root": str(root), **IDENTITY}, batch_size=500, device=CPU, seed=0
    )
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, (28, 28))
    batches = list(data.val.epoch(1))
    images = torch.cat([x for x, _ in batches])
    expected = decode_idx(root / "t10k-images-idx3-ubyte.gz").copy()
    assert torch.equal((images[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(expected))
    assert (
        torch.cat([y for _, y in batches]).tolist()
        == decode_idx(root / "t10k-labels-idx1-ubyte.gz").tolist()
    )


def test_with_root_null_the_distribution_folder_is_found(tmp_path, monkeypatch):
    root = require_real_files()
    monkeypatch.chdir(tmp_path)  # no ./data here
    found = mnist.locate("fashion_mnist", None)
    assert found is not None and {path.parent for path in found.values()} == {root}
    check_data_files(parse_dataset({"name": "fashion_mnist"}))


def test_training_on_the_real_files(train_in_process, tmp_path):
    require_real_files()
    code, run_dir = train_in_process(
        [
            "dataset=fashion_mnist",
            "model=resnet20",
            "mixing=dcutmix",
            "dataset.train_subset=256",
            "dataset.val_subset=200",
            "trainer.batch_size=64",
            "trainer.epochs=1",
        ],
        tmp_path / "run",
    )
    results = read_results(run_dir)
    assert code == 0 and results["status"] == "completed"
    assert results["config"]["dataset"] == "fashion_mnist"
    assert 0 <= results["top1_err_last"] <= 100


# --- layouts, encodings, search, download (full-size synthetic sets) -----------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic set written flat, plain and gzip-compressed."""
    data = synthetic_set()
    base = tmp_path_factory.mktemp("idx")
    return data, data.write(base / "plain"), data.write(base / "gz", gz=True)


def _linked(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        (folder / path.name).symlink_to(path)
    return folder


def test_both_layouts_and_both_encodings_load_the_same_arrays(synthetic, tmp_path):
    data, plain, gz = synthetic
    torchvision_root = tmp_path / "tv"
    _linked(plain, torchvision_root / "FashionMNIST" / "raw")
    for root in (plain, gz, torchvision_root):
        assert_equals_files(loaded("fashion_mnist", root), data.images, data.labels)
    # the same files serve the other datasets of the format, under their own torchvision names
    _linked(plain, tmp_path / "km" / "KMNIST" / "raw")
    assert_equals_files(loaded("kmnist", tmp_path / "km"), data.images, data.labels)


def test_with_root_null_local_data_comes_before_the_distribution(synthetic, tmp_path, monkeypatch):
    _, plain, _ = synthetic
    _linked(plain, tmp_path / "data" / "FashionMNIST" / "raw")
    monkeypatch.chdir(tmp_path)
    found = mnist.locate("fashion_mnist", None)
    assert {path.parent for path in found.values()} == {Path("data/FashionMNIST/raw")}


def test_download_puts_the_files_in_torchvisions_layout(synthetic, tmp_path, monkeypatch):
    data, _, gz = synthetic
    fetched = []

    def fake_fetch(url, download_root, filename, md5):
        # stands in for the network: torchvision's downloader saves the .gz and extracts it
        fetched.append(filename)
        Path(download_root).mkdir(parents=True, exist_ok=True)
        shutil.copy(gz / filename, Path(download_root) / filename)
        (Path(download_root) / filename.removesuffix(".gz")).write_bytes(
            gzip.decompress((gz / filename).read_bytes())
        )

    import torchvision.datasets.mnist as tv_mnist

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake_fetch)
    root = tmp_path / "fresh"
    check_data_files(parse_dataset({"name": "fashion_mnist", "root": str(root), "download": True}))
    assert_equals_files(loaded("fashion_mnist", root, download=True), data.images, data.labels)
    assert sorted(fetched) == sorted(f"{n}.gz" for pair in NAMES.values() for n in pair)
    assert (root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()
    loaded("fashion_mnist", root, download=True)  # found now: nothing fetched again
    assert len(fetched) == 4


def test_a_balanced_subset_is_fixed_and_spread_over_the_classes(synthetic):
    data, plain, _ = synthetic
    cfg = {"name": "fashion_mnist", "root": str(plain), "train_subset": 1003, "val_subset": 50}
    built = [build_data({**cfg, **IDENTITY}, batch_size=100, device=CPU, seed=s) for s in (0, 5)]
    labels = built[0].train.labels
    counts = torch.bincount(labels, minlength=10)
    assert counts.sum() == 1003 and counts.max() - counts.min() <= 1
    assert torch.equal(labels, built[1].train.labels)  # the same subset for every seed
    keep = mnist.balanced_subset(torch.from_numpy(data.labels["train"]).long(), 1003)
    assert torch.equal(keep, keep.unique())  # in file order, no repeats
    assert torch.equal(built[0].train.images[:, 0], torch.from_numpy(data.images["train"])[keep])
    assert torch.bincount(built[0].val.labels, minlength=10).tolist() == [5] * 10


def test_the_torch_loader_gives_the_device_loaders_images(synthetic):
    _, plain, _ = synthetic
    cfg = {"name": "fashion_mnist", "root": str(plain), "val_subset": 100, **IDENTITY}
    batches = {
        loader: list(
            build_data({**cfg, "loader": loader}, batch_size=50, device=CPU, seed=0).val.epoch(1)
        )
        for loader in ("device", "torch")
    }
    for (x, y), (x2, y2) in zip(batches["device"], batches["torch"], strict=True):
        assert x.shape == x2.shape == (50, 1, 28, 28) and torch.equal(y, y2)
        torch.testing.assert_close(x, x2, atol=1e-6, rtol=0)


# --- bad input: one line naming the root or the file ---------------------------------------------


def test_a_root_without_the_files_names_them_and_both_ways_to_get_them(tmp_path):
    with pytest.raises(InputError) as error:
        check_data_files(parse_dataset({"name": "fashion_mnist", "root": str(tmp_path)}))
    line = str(error.value)
    assert (
        line.startswith(f"dataset.root: no Fashion-MNIST files in {tmp_path}") and "\n" not in line
    )
    assert all(name in line for pair in NAMES.values() for name in pair)
    assert "dataset.download=true" in line and "apt-get install dataset-fashion-mnist" in line


def test_a_partial_folder_lists_what_it_lacks(synthetic, tmp_path):
    _, plain, _ = synthetic
    folder = _linked(plain, tmp_path / "partial")
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError, match=r"lacks t10k-labels-idx1-ubyte\)"):
        check_data_files(parse_dataset({"name": "mnist", "root": str(folder)}))


def _bad_folder(plain: Path, folder: Path, name: str, content: bytes) -> Path:
    _linked(plain, folder)
    (folder / name.removesuffix(".gz")).unlink()  # the plain file would be read first
    (folder / name).write_bytes(content)
    return folder / name


def _cases(data) -> dict[str, tuple[str, bytes, str]]:
    images, labels = data.images["test"], data.labels["test"]
    out_of_range = labels.copy()
    out_of_range[[5, 9]] = [10, 200]
    return {
        "bad magic": (
            NAMES["test"][1],
            idx_bytes(labels, magic=0x0803),
            "has magic number 0x00000803, not 0x00000801",
        ),
        "truncated": (
            NAMES["test"][0],
            idx_bytes(images)[:-1000],
            "is truncated: its header promises 10000 x 28 x 28",
        ),
        "too long": (
            NAMES["test"][1],
            idx_bytes(labels) + b"\0",
            "holds 1 bytes more than its header",
        ),
        "wrong size": (
            NAMES["test"][0],
            idx_bytes(images[:, :27, :27].copy()),
            "holds 27x27 images, not 28x28",
        ),
        "disagreeing": (
            NAMES["test"][1],
            idx_bytes(labels[:-1]),
            "holds 9999 labels but t10k-images-idx3-ubyte holds 10000",
        ),
        "labels out of range": (
            NAMES["test"][1],
            idx_bytes(out_of_range),
            "holds label 10 at index 5 (2 out of range); labels must be 0-9",
        ),
        "not gzip": (NAMES["test"][1] + ".gz", idx_bytes(labels), "is not a complete gzip file"),
        "truncated gzip": (
            NAMES["test"][1] + ".gz",
            gzip.compress(idx_bytes(labels))[:-100],
            "is not a complete gzip file",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "bad magic",
        "truncated",
        "too long",
        "wrong size",
        "disagreeing",
        "labels out of range",
        "not gzip",
        "truncated gzip",
    ],
)
def test_a_bad_file_is_one_line_naming_it(synthetic, tmp_path, case):
    data, plain, _ = synthetic
    name, content, message = _cases(data)[case]
    bad = _bad_folder(plain, tmp_path / "root", name, content)
    cfg = {"name": "fashion_mnist", "root": str(tmp_path / "root")}
    # both the check before a run and the full read name the file
    for attempt in (
        lambda: check_data_files(parse_dataset(cfg)),
        lambda: build_data(cfg, batch_size=64, device=CPU, seed=0),
    ):
        with pytest.raises(InputError) as error:
            attempt()
        assert error.value.key == str(bad) and "\n" not in str(error.value)
        assert message in str(error.value)


def test_a_wrong_count_is_named_against_the_official_split(synthetic, tmp_path):
    data, plain, _ = synthetic
    root = _linked(plain, tmp_path / "root")
    for split_name in NAMES["test"]:
        (root / split_name).unlink()
    write_idx(root / NAMES["test"][0], data.images["test"][:9000])
    write_idx(root / NAMES["test"][1], data.labels["test"][:9000])
    with pytest.raises(InputError) as error:
        check_data_files(parse_dataset({"name": "fashion_mnist", "root": str(root)}))
    assert str(error.value) == (
        f"{root / NAMES['test'][0]}: holds 9000 images; the official test split has 10000"
    )


def test_the_command_line_stops_before_writing_anything(synthetic, tmp_path):
    data, plain, _ = synthetic
    labels = data.labels["test"].copy()
    labels[0] = 11
    bad = _bad_folder(plain, tmp_path / "root", NAMES["test"][1], idx_bytes(labels))
    result = cli(
        [
            "dataset=fashion_mnist",
            f"dataset.root={tmp_path / 'root'}",
            "logger=none",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2
    assert lines == [
        f"error: {bad}: holds label 11 at index 0 (1 out of range); labels must be 0-9"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"train_subset": 60001}, r"^dataset\.train_subset: 60001 is more than the 60000 images"),
        ({"val_subset": 0}, r"^dataset\.val_subset: 0 must be a whole number >= 1"),
        ({"channels": 3}, r"^dataset\.channels: not a setting of dataset fashion_mnist"),
        ({"mean": [0.1, 0.2, 0.3]}, r"^dataset\.mean: .* a list of 1"),
    ],
)
def test_bad_settings_are_named(cfg, message):
    with pytest.raises(InputError, match=message):
        parse_dataset({"name": "fashion_mnist", **cfg})


def test_the_benchmarks_time_both_loaders_and_the_models_on_the_real_files():
    require_real_files()
    from dcutmix.bench.fmnist import run_loader_benchmark, run_model_benchmark

    loaders = run_loader_benchmark(num_images=1024, workers=0, rounds=1)
    assert loaders["images_per_second_device"] > 0 and loaders["images_per_second_classic"] > 0
    assert loaders["ratio"] == pytest.approx(
        loaders["images_per_second_device"] / loaders["images_per_second_classic"]
    )
    models = run_model_benchmark(batch_size=8, rounds=1, models=("tiny",))
    per_epoch = 60_000 // 8 * 8 / models["tiny_images_per_second"] / 60
    assert models["tiny_epoch_minutes"] == pytest.approx(per_epoch)
