"""The names under which Hydra finds dcutmix's launchers.

Hydra instantiates launchers only from the ``hydra_plugins`` namespace package, so the presets in
``conf/hydra/launcher/`` name these classes; the work is done in ``dcutmix.launcher``.
"""

from dcutmix import launcher


class FrozenSlurmLauncher(launcher.FrozenSlurmLauncher):
    """Slurm sweeps from frozen code; see ``dcutmix.launcher.FrozenSlurmLauncher``."""


class FrozenLocalLauncher(launcher.FrozenLocalLauncher):
    """Local sweeps from frozen code, as many jobs at once as cores allow; see dcutmix.launcher."""
