"""A run folder's storage: its files and where they are (``run_folder``), the one writer's lock
(``runlock``), what a run ends in (``results``: ``Status``, ``RunResult``, the objectives a search
minimises), crash-safe writes (``files``, the only module that renames files into place) and the
W&B run beside them (``tracking``), and a search's Optuna journal that its jobs share
(``journal``).

May import: the standard library, ``dcutmix.errors`` and, inside the functions that need them,
torch, wandb and optuna. Never Hydra, the run's steps or the sweep side: the report and the sweep tools
read run folders through this package alone.
"""
