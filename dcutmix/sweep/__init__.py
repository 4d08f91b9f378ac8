"""A sweep's life after ``dcutmix-train -m``: the command line's points and their precheck
(``points``, ``precheck``), the value a job hands the sweeper (``objective``), ``dcutmix-sweep
plan``/``status``/``resume`` (``plan``, ``status``, ``resume``, ``cli``), the launchers with frozen
code and requeue (``launcher``), Slurm jobs that can never start (``slurm_pending``), the searching sweeper with its
pruners (``search``, ``pruners``), and the one
adapter to Hydra's private API (``hydra_private``).

May import: Hydra (the modules tests/test_layout.py lists), ``dcutmix.config``, ``dcutmix.errors``,
``dcutmix.store`` and ``dcutmix.report``; never ``dcutmix.run`` or the mixing library: a job
reaches the sweep only through its run folder and the objective it returns.
"""
