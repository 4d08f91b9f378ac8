"""One run's life: its steps in order (``lifecycle``), the training and evaluation loops
(``engine``), losses, processes and ranks (``distributed``), seeds, checkpoints and progress lines, and a search's trial (``trial``: report the objective,
ask the pruner).

May import: torch, ``dcutmix.errors``, ``dcutmix.config`` (the schema it runs), ``dcutmix.data``,
``dcutmix.models``, ``dcutmix.mixing`` and ``dcutmix.store``; never Hydra (the entry point hands
it a composed config) nor the sweep side. ``engine`` imports only ``losses``, ``progress`` and
``seeding``, so a training loop can be reused without the rest.
"""
