"""The searching sweeper behind ``hydra/sweeper=dcutmix_optuna``: Optuna with a journal and pruning.

It reads ``hydra.sweeper.params`` and the command line as Hydra's sweepers do (``a,b`` and
``choice()`` are categorical, ``range()`` gives its values, ``interval()`` is searched, ``tag(log,
...)`` on a log scale, ``int(...)`` as whole numbers), asks Optuna's sampler for ``n_jobs`` trials
at a time and launches them with the configured launcher. The study lives in an Optuna journal
file in the sweep folder (``dcutmix.store.journal``), so every job reaches it: each job is told
its trial (``trial.number``, ``trial.journal``, ``trial.study``), reports its objective after
every evaluated epoch and stops when the study's pruner says so (``dcutmix.run.trial``). This
sweeper then tells the study how each trial ended: completed with the objective the task
returned, or pruned. A rerun of the sweep (``dcutmix-sweep resume``) reopens the journal: it
launches again the trials a kill left running, which resume from their run folders with their
reported values intact, and asks only for the trials still missing; pruned ones are never rerun.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dcutmix.errors import InputError
from dcutmix.store.files import atomic_write_text
from dcutmix.store.journal import JOURNAL_NAME, OWNER_ATTR, PRUNED_ATTR, PRUNER_ATTR, open_journal
from dcutmix.store.results import Status
from dcutmix.sweep.objective import run_status
from dcutmix.sweep.pruners import pruner_spec

log = logging.getLogger(__name__)

GRID_SAMPLER = "optuna.samplers.GridSampler"


def distribution(override: Override) -> Any:
    """The Optuna distribution of one swept key; None for a fixed value."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if not override.is_sweep_override():
        return None
    value = override.value()
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    if (
        isinstance(value, RangeSweep)
        and not value.shuffle
        and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        and len(values) > 1
    ):
        return IntDistribution(values[0], values[-1], step=values[1] - values[0])
    return CategoricalDistribution(values)


def search_lines(params: Any, arguments: Sequence[str]) -> dict[str, str]:
    """Each key's override line: the sweeper's params, then the command line, which wins."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    parsed = OverridesParser.create().parse_overrides(lines)
    return {o.get_key_element(): o.input_line for o in parsed}


def search_space(lines: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The searched keys with their distributions, and the fixed ones with their values."""
    space, fixed = {}, {}
    for key, o in zip(
        lines, OverridesParser.create().parse_overrides(list(lines.values())), strict=True
    ):
        found = distribution(o)
        if found is None:
            fixed[key] = o.get_value_element_as_str()
        else:
            space[key] = found
    return space, fixed


def grid_values(space: dict[str, Any]) -> dict[str, list]:
    """Every value of every key, for Optuna's grid sampler; intervals cannot be enumerated."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    grid = {}
    for key, found in space.items():
        if isinstance(found, CategoricalDistribution):
            grid[key] = list(found.choices)
        elif isinstance(found, IntDistribution) and not found.log:
            grid[key] = list(range(found.low, found.high + 1, found.step))
        else:
            raise InputError(
                key, "the grid sampler enumerates values; give them as a,b, choice() or range()"
            )
    return grid


def journal_path(storage: Any, sweep_dir: Path) -> Path:
    """The study's journal: ``hydra.sweeper.storage`` when set, else one in the sweep folder."""
    return Path(str(storage)).expanduser() if storage else sweep_dir / JOURNAL_NAME


def owner(sweep_dir: Path, lines: dict[str, str], spec: dict | None, direction: str) -> dict:
    """What makes a study this sweep's: its folder, its search space, pruner and direction."""
    return {
        "folder": str(sweep_dir.expanduser().absolute()),
        "search": sorted(lines.values()),
        "pruner": spec,
        "direction": str(direction),
    }


def check_owner(storage: Any, study_name: str, wanted: dict, path: Path) -> None:
    """Refuse a journal whose study of this name belongs to another sweep."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return
    found = storage.get_study_user_attrs(study_id).get(OWNER_ATTR)
    # the folder is None while Hydra has not named it (a precheck with only a storage path)
    keys = [k for k in wanted if not (k == "folder" and wanted[k] is None)]
    differs = ", ".join(k for k in keys if found is not None and found.get(k) != wanted[k])
    if differs:
        raise InputError(
            "hydra.sweeper.storage",
            f"study {study_name!r} in {path} belongs to another sweep ({differs} differ: "
            f"{found.get('folder')}); give this sweep its own hydra.sweep.dir or study_name",
        )


def check_search(sweeper: DictConfig, lines: dict[str, str], sweep_dir: Path | None) -> None:
    """Everything that can be checked before a job starts: pruner, grid, journal, its owner."""
    spec = pruner_spec(sweeper.get("pruner"))
    if OmegaConf.select(sweeper, "sampler._target_") == GRID_SAMPLER:
        grid_values(search_space(lines)[0])
    storage = sweeper.get("storage")
    if sweep_dir is None and not storage:
        return  # a new, timestamped sweep folder: no journal there yet
    path = journal_path(storage, sweep_dir or Path("."))
    if path.is_file() and path.stat().st_size:
        journal = open_journal(path)
        wanted = owner(sweep_dir or Path("."), lines, spec, sweeper.get("direction"))
        if sweep_dir is None:
            wanted["folder"] = None  # unknown until Hydra names it; compared at launch
        check_owner(journal, str(sweeper.study_name), wanted, path)


def _quoted(text: Any) -> str:
    return "'" + str(text).replace("'", "\\'") + "'"


class OptunaSearch(Sweeper):
    """Optuna's ask-and-tell over the configured launcher, with a journal every job reaches."""

    def __init__(
        self,
        sampler: Any,
        direction: str,
        storage: str | None,
        study_name: str,
        n_trials: int,
        n_jobs: int,
        params: DictConfig | None,
        pruner: DictConfig | None,
    ) -> None:
        self.sampler = sampler
        self.direction = str(direction)
        self.storage = storage
        self.study_name = str(study_name)
        self.n_trials = int(n_trials)
        self.n_jobs = max(1, int(n_jobs))
        self.params = params
        self.pruner = pruner
        self.job_idx = 0

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()

    def _open_study(self, lines: dict[str, str], spec: dict | None) -> Any:
        """The study in the journal, created or reopened, with this sweep's sampler and pruner."""
        import optuna

        space, _ = search_space(lines)
        # Hydra has instantiated the sampler already; the grid sampler waits for its grid.
        sampler = self.sampler
        if isinstance(sampler, DictConfig):
            sampler = instantiate(sampler)
        if isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler:
            grid = grid_values(space)
            sampler = sampler(grid)
            self.n_trials = min(self.n_trials, _product(len(v) for v in grid.values()))
        path = journal_path(self.storage, self.sweep_dir)
        storage = open_journal(path)
        wanted = owner(self.sweep_dir, lines, spec, self.direction)
        check_owner(storage, self.study_name, wanted, path)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=sampler,
            pruner=optuna.pruners.NopPruner(),  # the jobs prune; this process only tells
            direction=self.direction,
            load_if_exists=True,
        )
        study.set_user_attr(OWNER_ATTR, wanted)
        study.set_user_attr(PRUNER_ATTR, spec)
        log.info("study %s in %s (pruner %s)", self.study_name, path, (spec or {}).get("name"))
        return study, path

    def sweep(self, arguments: list[str]) -> None:
        """Run the search to ``n_trials`` finished trials (fewer when a trial is interrupted)."""
        import optuna

        lines = search_lines(self.params, arguments)
        spec = pruner_spec(self.pruner)
        try:
            study, path = self._open_study(lines, spec)
        except InputError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        space, fixed = search_space(lines)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        resumed = [optuna.trial.Trial(study, t._trial_id) for t in running]
        if resumed:
            log.info("resuming %d trials a kill left running", len(resumed))
        while True:
            finished = len(study.get_trials(deepcopy=False)) - len(resumed)
            new = max(0, min(self.n_jobs - len(resumed), self.n_trials - finished - len(resumed)))
            batch = resumed + [study.ask(space) for _ in range(new)]
            resumed = []
            if not batch:
                break
            overrides = [self._overrides(trial, fixed, path) for trial in batch]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            told = [
                self._tell(study, trial, ret) for trial, ret in zip(batch, returns, strict=True)
            ]
            if not all(told):
                log.warning("a trial was interrupted; rerun the sweep to resume it")
                return
        self._write_best(study)

    def _overrides(self, trial: Any, fixed: dict[str, str], path: Path) -> list[str]:
        params = [f"{key}={value}" for key, value in trial.params.items()]
        return [
            *params,
            *(f"{key}={value}" for key, value in fixed.items()),
            f"trial.number={trial.number}",
            f"trial.study={_quoted(self.study_name)}",
            f"trial.journal={_quoted(path)}",
        ]

    def _tell(self, study: Any, trial: Any, ret: Any) -> bool:
        """Tell the study how ``trial`` ended; False when it was interrupted (left running)."""
        import optuna

        state = optuna.trial.TrialState
        output_dir = OmegaConf.select(ret.hydra_cfg or {}, "hydra.runtime.output_dir")
        status = run_status(Path(str(output_dir))) if output_dir else Status.UNKNOWN
        frozen = study._storage.get_trial(trial._trial_id)
        try:
            if status == Status.INTERRUPTED:
                return False
            if status == Status.PRUNED or PRUNED_ATTR in frozen.user_attrs:
                study.tell(trial, state=state.PRUNED, skip_if_finished=True)
            else:
                # A failed, diverged or unevaluated run returns inf: it ranks last, the search goes on.
                study.tell(trial, float(ret.return_value), skip_if_finished=True)
        except RuntimeError as error:
            # The grid sampler stops the study when its grid is done: outside optimize(), an error.
            if "Study.stop" not in str(error):
                raise
        except Exception as error:
            log.warning("trial %d failed: %s", trial.number, error)
            study.tell(trial, state=state.FAIL, skip_if_finished=True)
        return True

    def _write_best(self, study: Any) -> None:
        """optimization_results.yaml: the best completed trial's params and value, and counts."""
        import optuna

        counts: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
        result: dict[str, Any] = {"name": "optuna", "trials": counts}
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if complete:
            best = study.best_trial
            result.update(best_params=best.params, best_value=best.value)
            log.info("best parameters: %s, value %s", best.params, best.value)
        else:
            result.update(best_params=None, best_value=None)
        text = OmegaConf.to_yaml(OmegaConf.create(result))
        atomic_write_text(self.sweep_dir / "optimization_results.yaml", text)


def _product(numbers: Any) -> int:
    total = 1
    for n in numbers:
        total *= n
    return total
