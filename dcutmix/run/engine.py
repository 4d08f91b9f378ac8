"""The training and evaluation loops. The engine calls whatever mixer it is given; it knows no mode.

It depends only on torch and the leaf modules (losses, progress, seeding): nothing above it.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcutmix.run.losses import soft_target_cross_entropy
from dcutmix.run.progress import Progress
from dcutmix.run.seeding import derived_seed

Mixer = Callable[..., tuple[Tensor, Tensor]]


def mix_batch(
    mixer: Mixer, images: Tensor, labels: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Any]:
    """(model input, targets, hidden_mix): hidden_mix is None unless the mixer mixes hidden states.

    A mixer of hidden states (dcutmix.mixing.ManifoldMixup) has ``draw_hidden``, which gives the
    targets and the blend the model applies at its drawn layer; the images go in unmixed.
    """
    draw_hidden = getattr(mixer, "draw_hidden", None)
    if draw_hidden is None:
        mixed, targets = mixer(images, labels, generator=generator)
        return mixed, targets, None
    targets, hidden = draw_hidden(images, labels, generator=generator)
    return images, targets, hidden


class LRSchedule:
    """Learning rate as a pure function of the global step: warm-up, then multistep or cosine."""

    def __init__(
        self,
        base_lr: float,
        steps_per_epoch: int,
        epochs: int,
        name: str,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        min_lr: float = 0.0,
    ) -> None:
        self.base_lr = base_lr
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = self.steps_per_epoch * epochs
        self.name = name
        self.milestones = milestones or []
        self.gamma = gamma
        self.warmup_steps = round(warmup_epochs * self.steps_per_epoch)
        self.min_lr = min_lr

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.name == "multistep":
            epoch = step // self.steps_per_epoch
            return self.base_lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.name == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (
                1.0 + math.cos(math.pi * progress)
            )
        return self.base_lr


@dataclass
class StopRequest:
    """Set by SIGTERM/SIGINT: the loop finishes its current step, checkpoints and stops."""

    signum: int | None = None

    def __call__(self, signum, frame) -> None:
        self.signum = signum

    @contextlib.contextmanager
    def installed(self, signals: tuple[int, ...]) -> Iterator[StopRequest]:
        previous = {s: signal.signal(s, self) for s in signals}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


@dataclass
class EpochState:
    """Running totals of one training epoch, kept in the checkpoint so a resumed epoch adds up."""

    step: int = 0
    loss_sum: float = 0.0
    samples: int = 0
    seconds: float = 0.0
    skipped: int = 0

    def as_dict(self) -> dict:
        return {
            "step": self.step,
            "loss_sum": self.loss_sum,
            "samples": self.samples,
            "seconds": self.seconds,
            "skipped": self.skipped,
        }


class Diverged(Exception):
    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"non-finite training loss at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


@dataclass
class Engine:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    mixer: Mixer
    device: torch.device
    seed: int
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    label_smoothing: float = 0.0
    on_nonfinite: str = "stop"
    log_every: int = 50
    rank: int = 0
    world_size: int = 1
    progress: bool = True
    stop: StopRequest = field(default_factory=StopRequest)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_epoch(
        self, batches: Iterator[tuple[Tensor, Tensor]], epoch: int, steps: int, state: EpochState
    ) -> EpochState:
        """Train from ``state.step`` to ``steps`` (or until a stop is requested); returns the totals."""
        self.model.train()
        bar = Progress(
            steps, f"epoch {epoch}", self.log_every, enabled=self.progress and self.rank == 0
        )
        bad_step = torch.full((), -1, device=self.device, dtype=torch.long)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        start = time.perf_counter()
        step = state.step
        for images, labels in batches:
            if step >= steps:
                break
            global_step = (epoch - 1) * self.schedule.steps_per_epoch + step
            for group in self.optimizer.param_groups:
                group["lr"] = self.schedule.lr_at(global_step)
            generator = torch.Generator(device=self.device)
            generator.manual_seed(derived_seed(self.seed, epoch, step, self.rank, 1))
            # hidden is set only by mixers of hidden states (manifold_mixup); the model applies it
            mixed, targets, hidden = mix_batch(self.mixer, images, labels, generator)
            with self._autocast():
                logits = (
                    self.model(mixed) if hidden is None else self.model(mixed, hidden_mix=hidden)
                )
            loss = soft_target_cross_entropy(logits, targets, self.label_smoothing)
            finite = torch.isfinite(loss)
            if self.on_nonfinite == "skip" and not bool(finite):
                state.skipped += 1
                self.optimizer.zero_grad(set_to_none=True)
            else:
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    self.optimizer.step()
                bad_step = torch.where((bad_step < 0) & ~finite, step, bad_step)
                loss_sum += loss.detach().double() * labels.shape[0]
                state.samples += labels.shape[0]
            step += 1
            state.step = step
            logging_now = step % self.log_every == 0 or step == steps
            if logging_now or self.stop.signum is not None:
                self._check_finite(bad_step, epoch)
                state.loss_sum += float(loss_sum)
                loss_sum.zero_()
                bar.update(step, state.loss_sum / max(1, state.samples))
            if self.stop.signum is not None:
                break
        self._check_finite(bad_step, epoch)
        state.loss_sum += float(loss_sum)
        state.seconds += time.perf_counter() - start
        bar.close()
        return state

    def _check_finite(self, bad_step: Tensor, epoch: int) -> None:
        if self.on_nonfinite == "stop" and int(bad_step) >= 0:
            raise Diverged(epoch, int(bad_step))

    @torch.no_grad()
    def evaluate(
        self, batches: Iterator[tuple[Tensor, Tensor]], limit: int | None = None
    ) -> dict[str, float]:
        """Validation loss and top-1/top-5 error in %, reduced over ranks."""
        self.model.eval()
        totals = torch.zeros(4, device=self.device, dtype=torch.float64)  # loss, top1, top5, count
        for i, (images, labels) in enumerate(batches):
            if limit is not None and i >= limit:
                break
            with self._autocast():
                logits = self.model(images)
            logits = logits.float()
            totals[0] += F.cross_entropy(logits, labels, reduction="sum").double()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == labels.unsqueeze(1)
            totals[1] += hits[:, 0].sum()
            totals[2] += hits.any(dim=1).sum()
            totals[3] += labels.shape[0]
        if self.world_size > 1:
            torch.distributed.all_reduce(totals)
        loss, top1, top5, count = totals.tolist()
        count = max(count, 1.0)
        return {
            "val_loss": loss / count,
            "val_top1_err": 100.0 * (1.0 - top1 / count),
            "val_top5_err": 100.0 * (1.0 - top5 / count),
        }
