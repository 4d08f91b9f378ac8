"""A search's Optuna study on disk: one journal file that the sweeper and every job open by path.

Optuna's JournalStorage with its file backend is the storage Optuna documents for many processes
on a shared file system; its open-based lock (``JournalFileOpenLock``) works on NFS, where sqlite's
``fcntl`` locks do not. The sweeper owns the study and its pruner; a job opens the same file to
report its objective and ask whether to stop (``dcutmix.run.trial``). What they share is plain
data: the file's path, the study's name, the trial's number, and the pruner's spec, which the
sweeper stores as a study attribute (``PRUNER_ATTR``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dcutmix.errors import InputError

#: the journal's file name in a sweep folder, unless ``hydra.sweeper.storage`` names another
JOURNAL_NAME = "optuna.journal"
#: the study attribute holding the pruner's spec: ``{"class": "MedianPruner", "kwargs": {...}}``
PRUNER_ATTR = "dcutmix.pruner"
#: the study attribute naming the sweep that owns the study (its folder and its search)
OWNER_ATTR = "dcutmix.sweep"
#: the trial attribute a job sets when its pruner stopped it: the epoch
PRUNED_ATTR = "dcutmix.pruned_epoch"


def check_journal(path: Path, key: str = "hydra.sweeper.storage") -> None:
    """Refuse a file that is not an Optuna journal (a missing or empty file is a new journal)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(key, f"{path} is a folder, not an Optuna journal file")
    if not path.is_file():
        return
    with path.open("rb") as handle:
        first = handle.readline(1 << 16)
    if not first.strip():
        return
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise InputError(
            key,
            f"{path} is not an Optuna journal (its first line is no journal record); "
            "name a new file or the journal of this same search",
        )


def open_journal(path: Path, key: str = "hydra.sweeper.storage") -> Any:
    """Optuna's JournalStorage over the file at ``path``, with the lock that works on NFS."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    check_journal(path, key)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    name = str(path)
    return JournalStorage(JournalFileBackend(name, lock_obj=JournalFileOpenLock(name)))


def pruner_from_spec(spec: dict | None) -> Any:
    """The Optuna pruner a spec names (``NopPruner`` for none); the sweep side checked the spec."""
    import optuna

    if not spec:
        return optuna.pruners.NopPruner()
    return getattr(optuna.pruners, spec["class"])(**spec.get("kwargs", {}))
