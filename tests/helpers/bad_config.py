"""Settings that compose but that ``validate`` refuses, with the start of the line each must give.

One table for both layers that check them: ``config.validate`` in process (tests/test_config.py)
and the command line's precheck (tests/test_bad_inputs.py).
"""

from __future__ import annotations

# (overrides, message): the message starts with the offending key, which InputError.key holds.
SEMANTIC_CASES: list[tuple[list[str], str]] = [
    (["mixing.k=1"], "mixing.k: dcutmix needs an integer k in [2, 64], got 1"),
    (["mixing=dmixup", "mixing.k=0"], "mixing.k: dmixup needs an integer k in [2, 64], got 0"),
    (
        ["mixing=mixup", "mixing.k=3"],
        "mixing.k: mixup mixes exactly 2 images, so k must be 2 or omitted; got 3",
    ),
    (["mixing=cutmix", "mixing.k=5"], "mixing.k: cutmix mixes exactly 2 images"),
    (["mixing.alpha=0"], "mixing.alpha: must be a finite number > 0, got 0.0"),
    (["mixing.alpha=-1"], "mixing.alpha: must be a finite number > 0, got -1.0"),
    (["mixing.prob=1.5"], "mixing.prob: must be a number in [0, 1], got 1.5"),
    (["mixing.prob=-0.1"], "mixing.prob: must be a number in [0, 1], got -0.1"),
    (["mixing=cutout", "mixing.length=0"], "mixing.length: must be a whole number >= 1, got 0"),
    (["mixing=cutout", "mixing.length=-4"], "mixing.length: must be a whole number >= 1, got -4"),
    (
        ["mixing=cutout", "mixing.length=33"],
        "mixing.length: 33 is larger than the dataset's 32x32 images; use at most 32",
    ),
    (
        ["mixing=cutout", "dataset=fake", "dataset.image_size=[16,24]", "mixing.length=20"],
        "mixing.length: 20 is larger than the dataset's 16x24 images; use at most 16",
    ),
    (["mixing=fmix", "mixing.alpha=0"], "mixing.alpha: must be a finite number > 0, got 0.0"),
    (["mixing=fmix", "mixing.decay=0"], "mixing.decay: must be a finite number > 0, got 0.0"),
    (["mixing=fmix", "mixing.decay=-3"], "mixing.decay: must be a finite number > 0, got -3.0"),
    (
        ["mixing=resizemix", "mixing.scale=[0.8,0.1]"],
        "mixing.scale: must be a [low, high] pair with 0 < low <= high <= 1",
    ),
    (["mixing=mixup", "mixing.decay=3"], "mixing.decay: only fmix has this setting, not mixup"),
    (["optimizer.lr=0"], "optimizer.lr: must be a finite number > 0, got 0.0"),
    (["optimizer.lr=-0.1"], "optimizer.lr: must be a finite number > 0, got -0.1"),
    (["trainer.epochs=0"], "trainer.epochs: must be >= 1, got 0"),
    (["trainer.batch_size=0"], "trainer.batch_size: must be >= 1, got 0"),
    (
        ["scheduler.milestones=[5,40]", "trainer.epochs=20"],
        "scheduler.milestones: epoch 40 is after the run's last epoch (20)",
    ),
    (
        ["trainer.epochs=10", "scheduler.milestones=[5,20]"],
        "scheduler.milestones: epoch 20 is after the run's last epoch (10)",
    ),
    (
        ["scheduler.milestones=[1.5]"],
        "scheduler.milestones: 1.5 is neither a fraction in (0, 1) nor a whole epoch",
    ),
    (
        ["scheduler=cosine", "scheduler.warmup_epochs=20"],
        "scheduler.warmup_epochs: must be in [0, trainer.epochs=15)",
    ),
    (["eval_only=true"], "ckpt: eval_only=true needs ckpt=PATH to a checkpoint file"),
    (["eval_only=true", "ckpt=/no/such/model.pt"], "ckpt: /no/such/model.pt is not a file"),
    (["ckpt=/nonexistent/x.pt"], "ckpt: /nonexistent/x.pt is not a file"),
    (["trainer.amp=fp8"], "trainer.amp: 'fp8' is not one of auto, off, bf16, fp16"),
]
