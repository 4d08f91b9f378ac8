"""A run that is a trial of a search: it reports its objective and asks whether to stop.

The sweeper (``dcutmix.sweep.search``) owns the study and its pruner; it tells the job which trial
it is through the ``trial`` config keys (``trial.journal``, ``trial.study``, ``trial.number``).
The run opens the same journal by path, reports its objective after every evaluated epoch
(``report``) and asks the study's pruner whether to go on (``should_prune``). A job that is
killed and run again opens the same trial: what it reported before is still in the journal.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dcutmix.errors import InputError
from dcutmix.store.journal import PRUNED_ATTR, PRUNER_ATTR, open_journal, pruner_from_spec
from dcutmix.store.results import errors_summary


class SearchTrial:
    """One trial of a study in an Optuna journal, as its job sees it."""

    def __init__(self, trial: Any, storage: Any, trial_id: int) -> None:
        self._trial = trial
        self._storage = storage
        self._trial_id = trial_id

    @classmethod
    def open(cls, settings: Any) -> SearchTrial | None:
        """The trial ``settings`` (the ``trial`` config group) names, or None outside a search."""
        if settings is None or settings.get("number") is None:
            return None
        import optuna

        journal, study_name = settings.get("journal"), settings.get("study")
        if not journal or not study_name:
            raise InputError(
                "trial", "trial.number needs trial.journal and trial.study (the sweeper sets them)"
            )
        storage = open_journal(Path(str(journal)), key="trial.journal")
        try:
            study_id = storage.get_study_id_from_name(str(study_name))
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                study_id, int(settings.number)
            )
        except KeyError:
            raise InputError(
                "trial.number",
                f"study {study_name!r} in {journal} has no trial {settings.number}",
            ) from None
        pruner = pruner_from_spec(storage.get_study_user_attrs(study_id).get(PRUNER_ATTR))
        study = optuna.load_study(study_name=str(study_name), storage=storage, pruner=pruner)
        return cls(optuna.trial.Trial(study, trial_id), storage, trial_id)

    def reported(self) -> dict[int, float]:
        """The values this trial has reported so far, by epoch (kept across restarts)."""
        return dict(self._storage.get_trial(self._trial_id).intermediate_values)

    def finished(self) -> bool:
        """Whether the sweeper has already told the study how this trial ended."""
        return self._storage.get_trial(self._trial_id).state.is_finished()

    def report(self, value: float, epoch: int) -> None:
        """Record the objective after ``epoch`` (once per epoch; a repeated epoch is kept as is)."""
        if self.finished() or epoch in self.reported():
            return
        self._trial.report(float(value), epoch)

    def should_prune(self) -> bool:
        """The pruner's verdict on the values reported so far."""
        return not self.finished() and self._trial.should_prune()

    def mark_pruned(self, epoch: int) -> None:
        """Note in the journal that this trial stopped after ``epoch``; the sweeper tells the study."""
        self._storage.set_trial_user_attr(self._trial_id, PRUNED_ATTR, epoch)

    def catch_up(self, history: list[dict], objective: str) -> None:
        """Report evaluated epochs of ``history`` the journal lacks (a kill between the two)."""
        reported = self.reported()
        for end in range(1, len(history) + 1):
            epoch = history[end - 1]["epoch"]
            if history[end - 1].get("val_top1_err") is None or epoch in reported:
                continue
            value = errors_summary(history[:end])[objective]
            if value is not None and math.isfinite(value):
                self.report(value, epoch)


def prune_now(trial: SearchTrial | None, dist: Any, value: float | None, epoch: int) -> bool:
    """Report ``value`` after ``epoch`` and ask the pruner (main process); every process agrees.

    Call it on every process of a trial's run: the main process holds ``trial``, the others None.
    """
    decision = False
    if trial is not None and value is not None and math.isfinite(value):
        trial.report(value, epoch)
        decision = trial.should_prune()
        if decision:
            trial.mark_pruned(epoch)
    return bool(dist.share(decision))
