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

__all__ = [
    "DATASET_DEFAULTS",
    "ArrayImageDataset",
    "DataBundle",
    "DatasetSettings",
    "DeviceLoader",
    "Loader",
    "TorchLoader",
    "build_data",
    "check_data_files",
    "classic_cifar_loader",
    "crop_flip",
    "parse_dataset",
    "pil_transform",
]
