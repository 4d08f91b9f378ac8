"""The name under which Hydra finds dcutmix's searching sweeper (``hydra/sweeper=dcutmix_optuna``).

Hydra instantiates sweepers only from the ``hydra_plugins`` namespace package; the work is done
in ``dcutmix.sweep.search``. The settings' schema is stored here; their values live in
``conf/hydra/sweeper/dcutmix_optuna.yaml`` and the samplers in ``conf/hydra/sweeper/sampler/``.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from dcutmix.sweep import search


class OptunaSweeper(search.OptunaSearch):
    """Optuna search with a journal and pruning; see ``dcutmix.sweep.search.OptunaSearch``."""


@dataclass
class PrunerConf:
    """One pruner and its main settings; null takes Optuna's default (dcutmix.sweep.pruners)."""

    name: str = MISSING
    n_startup_trials: Any = None
    n_warmup_steps: Any = None
    interval_steps: Any = None
    n_min_trials: Any = None
    min_resource: Any = None
    max_resource: Any = None
    reduction_factor: Any = None
    min_early_stopping_rate: Any = None
    bootstrap_count: Any = None
    lower: Any = None
    upper: Any = None


@dataclass
class DcutmixOptunaConf:
    """The sweeper's settings; their values are in conf/hydra/sweeper/dcutmix_optuna.yaml."""

    _target_: str = "hydra_plugins.dcutmix_sweeper.OptunaSweeper"
    sampler: Any = MISSING
    direction: str = MISSING
    storage: Any = MISSING
    study_name: str = MISSING
    n_trials: int = MISSING
    n_jobs: int = MISSING
    params: Any = None
    pruner: PrunerConf = field(default_factory=PrunerConf)


ConfigStore.instance().store(
    group="hydra/sweeper", name="dcutmix_optuna_schema", node=DcutmixOptunaConf, provider="dcutmix"
)
