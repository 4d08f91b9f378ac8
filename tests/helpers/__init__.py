"""Helpers shared by the tests: running the trainer (``runs``), bad-config tables (``bad_config``),
tiny CIFAR files (``cifar``) and reading the W&B client's files (``wandb_files``)."""
