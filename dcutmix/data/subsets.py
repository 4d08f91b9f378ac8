"""Training on a chosen subset of the training set: ``dataset.subset.*``.

A subset is chosen from per-image scores: ``by=random`` draws them uniformly from the run's seed,
``by=uncertainty`` and ``by=entropy`` read the columns of the same names from the
``uncertainty.csv`` that ``dcutmix-analyze uncertainty`` wrote into the run folder
``dataset.subset.scores`` (higher is more uncertain). ``round(fraction * N)`` images are then
kept by one of three rules:

- ``top``: the highest scores (ties go to the lower index);
- ``histogram``: proxy data after Na et al. (IJCAI 2021): a histogram of the log-scores over
  ``HISTOGRAM_BINS`` equal-width bins; each image is drawn, without replacement, with the weight
  ``max(count) - count + 1`` of its bin, so the rare tails are kept as well as the crowded middle;
- ``per_class``: the same fraction of every class (counts by largest remainder, so they add up
  to the total), the highest scores within each class.

Every random draw comes from a generator seeded with the run's seed, so the same seed gives the
same subset. ``fraction: 1`` (the default) trains on the whole set and chooses nothing.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dcutmix.errors import InputError

SUBSET_BY = ("random", "uncertainty", "entropy")
SUBSET_RULES = ("top", "histogram", "per_class")
SUBSET_DEFAULTS: dict[str, Any] = {"fraction": 1.0, "by": "random", "rule": "top", "scores": None}
#: bins of the histogram rule's log-score histogram
HISTOGRAM_BINS = 20
#: what ``dcutmix-analyze uncertainty`` writes into a run folder, and what a subset reads back
SCORES_FILE = "uncertainty.csv"
SCORES_META = "uncertainty.json"
SCORE_COLUMNS = ("index", "label", "uncertainty", "entropy", "margin")
#: the chosen images, written into the run folder of a subset run
SUBSET_FILE = "subset.json"
# a stream of its own, so a subset's draw does not depend on anything else seeded with the seed
_STREAM = 23


@dataclass(frozen=True)
class SubsetSettings:
    """``dataset.subset`` after checking."""

    fraction: float = 1.0
    by: str = "random"
    rule: str = "top"
    scores: Path | None = None

    @property
    def active(self) -> bool:
        return self.fraction < 1.0


@dataclass(frozen=True)
class SubsetChoice:
    """The chosen positions in the training set, and what results.json records about them."""

    positions: np.ndarray
    record: dict[str, Any]


def parse_subset(value: Any) -> SubsetSettings:
    """Check ``dataset.subset`` (a mapping of its four keys); errors name ``dataset.subset.<key>``."""
    if not isinstance(value, Mapping):
        raise InputError("dataset.subset", f"{value!r} must hold fraction, by, rule and scores")
    unknown = sorted(set(value) - set(SUBSET_DEFAULTS))
    if unknown:
        raise InputError(
            f"dataset.subset.{unknown[0]}", f"not a setting; valid: {', '.join(SUBSET_DEFAULTS)}"
        )
    raw = {**SUBSET_DEFAULTS, **value}
    fraction = raw["fraction"]
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 < fraction <= 1
    ):
        raise InputError("dataset.subset.fraction", f"{fraction!r} must be a number in (0, 1]")
    for key, choices in (("by", SUBSET_BY), ("rule", SUBSET_RULES)):
        if raw[key] not in choices:
            raise InputError(
                f"dataset.subset.{key}", f"{raw[key]!r} is not one of {', '.join(choices)}"
            )
    scores = Path(raw["scores"]).expanduser() if raw["scores"] else None
    settings = SubsetSettings(float(fraction), raw["by"], raw["rule"], scores)
    if settings.active and settings.by != "random":
        if scores is None:
            raise InputError(
                "dataset.subset.scores",
                f"not set; by={settings.by} needs the run folder whose {SCORES_FILE} "
                "dcutmix-analyze uncertainty wrote",
            )
        if not (scores / SCORES_FILE).is_file():
            raise InputError(
                "dataset.subset.scores",
                f"{scores} holds no {SCORES_FILE}; run dcutmix-analyze uncertainty on it first",
            )
    return settings


def subset_count(fraction: float, size: int) -> int:
    """How many of ``size`` images a fraction keeps: round half up, at least one."""
    return max(1, min(size, int(np.floor(fraction * size + 0.5))))


def histogram_weights(scores: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Each image's draw weight under the histogram rule: its log-score bin's max(count) - count + 1."""
    logs = np.log(np.maximum(np.asarray(scores, dtype=np.float64), 1e-12))
    counts, edges = np.histogram(logs, bins=bins)
    which = np.clip(np.searchsorted(edges, logs, side="right") - 1, 0, bins - 1)
    return (counts.max() - counts + 1)[which].astype(np.float64)


def per_class_counts(labels: np.ndarray, count: int) -> dict[int, int]:
    """``count`` spread over the classes in proportion to their sizes (largest remainder)."""
    classes, sizes = np.unique(labels, return_counts=True)
    exact = sizes * count / len(labels)
    taken = np.floor(exact).astype(int)
    order = np.lexsort((classes, -(exact - taken)))  # largest remainder first, then lower class
    taken[order[: count - taken.sum()]] += 1
    return {int(c): int(n) for c, n in zip(classes, taken, strict=True)}


def _top(scores: np.ndarray, count: int) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:count]


def select(
    scores: np.ndarray, labels: np.ndarray, count: int, rule: str, rng: np.random.Generator
) -> np.ndarray:
    """Sorted positions of ``count`` images chosen from ``scores`` by ``rule``."""
    if rule == "top":
        chosen = _top(scores, count)
    elif rule == "per_class":
        parts = []
        for label, n in per_class_counts(labels, count).items():
            members = np.flatnonzero(labels == label)
            parts.append(members[_top(scores[members], n)])
        chosen = np.concatenate(parts)
    else:
        weights = histogram_weights(scores)
        chosen = rng.choice(len(scores), size=count, replace=False, p=weights / weights.sum())
    return np.sort(chosen).astype(np.int64)


def read_scores(folder: Path, column: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The ``column`` scores, the labels and the metadata the scoring wrote into ``folder``."""
    key = "dataset.subset.scores"
    try:
        with open(folder / SCORES_FILE, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        meta = json.loads((folder / SCORES_META).read_text(encoding="utf-8"))
        scores = np.array([float(row[column]) for row in rows])
        labels = np.array([int(row["label"]) for row in rows])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(key, f"cannot read the {column} scores in {folder} ({error})") from None
    if not np.isfinite(scores).all():
        raise InputError(key, f"{folder / SCORES_FILE} holds {column} scores that are not finite")
    return scores, labels, meta


def choose_subset(
    settings: SubsetSettings,
    labels: np.ndarray,
    *,
    seed: int,
    dataset: dict[str, Any],
    batch_size: int,
) -> SubsetChoice:
    """The subset ``settings`` choose from a training set with ``labels`` (checked against the
    scores: the same dataset, pool and labels), for a run of ``dataset`` with ``seed``."""
    labels = np.asarray(labels)
    count = subset_count(settings.fraction, len(labels))
    if count < batch_size:
        raise InputError(
            "dataset.subset.fraction",
            f"{settings.fraction:g} keeps {count} of {len(labels)} images, fewer than one batch "
            f"of {batch_size}; raise it or lower trainer.batch_size",
        )
    rng = np.random.default_rng([seed, _STREAM])
    if settings.by == "random":
        scores = rng.random(len(labels))
    else:
        scores = _checked_scores(settings, labels, dataset)
    positions = select(scores, labels, count, settings.rule, rng)
    record = {
        "fraction": settings.fraction,
        "by": settings.by,
        "rule": settings.rule,
        "count": count,
        "pool": len(labels),
        "scores": str(settings.scores) if settings.by != "random" else None,
    }
    return SubsetChoice(positions, record)


def _checked_scores(
    settings: SubsetSettings, labels: np.ndarray, dataset: dict[str, Any]
) -> np.ndarray:
    folder = settings.scores
    assert folder is not None
    scores, score_labels, meta = read_scores(folder, settings.by)
    key = "dataset.subset.scores"
    pool = {"dataset": dataset.get("name"), "train_subset": dataset.get("train_subset")}
    scored = {name: meta.get(name) for name in pool}
    if scored != pool:
        raise InputError(
            key, f"{folder} scored {scored}, but this run trains on {pool}; score that data first"
        )
    if len(scores) != len(labels) or not np.array_equal(score_labels, labels):
        problem = (
            f"{len(scores)} images, not this run's {len(labels)}"
            if len(scores) != len(labels)
            else "labels that differ from this run's training set"
        )
        raise InputError(key, f"{folder / SCORES_FILE} holds {problem}")
    return scores
