"""A progress display for long loops (training epochs, analyses) that suits terminals and logs."""

from __future__ import annotations

import sys
import time


class Progress:
    """A one-line bar in a terminal; plain periodic lines otherwise (batch logs, Slurm)."""

    def __init__(
        self, total: int, desc: str, every: int, stream=sys.stderr, enabled: bool = True
    ) -> None:
        self.total, self.desc, self.every, self.stream = total, desc, every, stream
        self.tty = enabled and stream.isatty()
        self.enabled = enabled
        self.start = time.perf_counter()

    def update(self, done: int, loss: float | None) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        loss_text = "" if loss is None else f" loss {loss:.4f}"
        if self.tty:
            width = 30
            filled = int(width * done / max(1, self.total))
            self.stream.write(
                f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}{loss_text} {elapsed:.1f}s"
            )
            self.stream.flush()
        elif done % self.every == 0 and done < self.total:
            self.stream.write(f"{self.desc} step {done}/{self.total}{loss_text} {elapsed:.1f}s\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def log(message: str) -> None:
    """One progress line on stderr, where Hydra's and Slurm's logs collect it."""
    print(f"[dcutmix] {message}", file=sys.stderr, flush=True)
