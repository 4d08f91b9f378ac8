"""Benchmarks that print figures, and the GPU check: ``python -m dcutmix.bench NAME`` and
``python -m dcutmix.bench.gpu_check`` (``make gpu-check``).

Every benchmark times through ``timing.timed_rounds``, which interleaves the compared functions
round by round so a busy machine slows them alike. Files: ``mixing``, ``data``, ``train``,
``report``, ``plan`` (``dcutmix-sweep plan`` on a 432-job grid), ``fmnist`` (the loaders and the
reference models on the real Fashion-MNIST files), ``gpu_check`` with the pipelines it times
(``gpu_pipelines``).

May import anything of the project; nothing imports it but its own modules and the tests. This
file imports only the standard library (nothing, in fact), because the GPU check runs on a bare
machine before it has installed its dependencies.
"""
