"""Datasets and loaders: ``build_data(cfg, ...)`` turns the ``dataset`` config into train and val loaders."""

from dcutmix.data.datasets import DataBundle, build_data, check_data_files
from dcutmix.data.loaders import (
    ArrayImageDataset,
    DeviceLoader,
    Loader,
    TorchLoader,
    classic_cifar_loader,
    crop_flip,
    pil_transform,
)
from dcutmix.data.settings import DATASET_DEFAULTS, DatasetSettings, parse_dataset
from dcutmix.data.subsets import (
    HISTOGRAM_BINS,
    SCORE_COLUMNS,
    SCORES_FILE,
    SCORES_META,
    SUBSET_FILE,
    SubsetChoice,
    SubsetSettings,
    choose_subset,
    histogram_weights,
    parse_subset,
    per_class_counts,
    select,
    subset_count,
)

__all__ = [
    "DATASET_DEFAULTS",
    "HISTOGRAM_BINS",
    "SCORES_FILE",
    "SCORES_META",
    "SCORE_COLUMNS",
    "SUBSET_FILE",
    "ArrayImageDataset",
    "DataBundle",
    "DatasetSettings",
    "DeviceLoader",
    "Loader",
    "SubsetChoice",
    "SubsetSettings",
    "TorchLoader",
    "build_data",
    "check_data_files",
    "choose_subset",
    "classic_cifar_loader",
    "crop_flip",
    "histogram_weights",
    "parse_dataset",
    "parse_subset",
    "per_class_counts",
    "pil_transform",
    "select",
    "subset_count",
]
