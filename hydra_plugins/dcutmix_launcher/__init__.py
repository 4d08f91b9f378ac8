"""The names under which Hydra finds dcutmix's launchers.

Hydra instantiates launchers only from the ``hydra_plugins`` namespace package, so the presets in
``conf/hydra/launcher/`` name these classes; the work is done in ``dcutmix.sweep.launcher``.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
from omegaconf import MISSING

from dcutmix.sweep import launcher


class FrozenSlurmLauncher(launcher.FrozenSlurmLauncher):
    """Slurm sweeps from frozen code; see ``dcutmix.sweep.launcher.FrozenSlurmLauncher``."""


class FrozenLocalLauncher(launcher.FrozenLocalLauncher):
    """Local sweeps from frozen code, as many jobs at once as cores allow; see dcutmix.sweep.launcher."""


@dataclass
class DcutmixSlurmConf(SlurmQueueConf):
    """hydra-submitit-launcher's Slurm settings and dcutmix's own."""

    _target_: str = "hydra_plugins.dcutmix_launcher.FrozenSlurmLauncher"
    # Keep waiting on jobs whose pending reason cannot clear (a reminder every 10 minutes)
    # instead of cancelling them and ending the sweep. Its value is in conf/hydra/launcher/slurm.yaml.
    wait_on_unsatisfiable: bool = MISSING


ConfigStore.instance().store(
    group="hydra/launcher", name="dcutmix_slurm", node=DcutmixSlurmConf, provider="dcutmix"
)
