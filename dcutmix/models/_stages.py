"""Running a model in parts, so that a hidden state can be changed between two of them.

Manifold Mixup blends the hidden states at one layer. The models only say where their layers
are; what happens there is given from outside as ``hidden_mix``, any callable with a ``layer``
attribute, so the models never import the mixing code. Layer 0 is the input, layer i the input
of part i (the output of stage i); the last part ends with the logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

from torch import Tensor, nn

__all__ = ["HiddenMix", "StagedModel"]


class HiddenMix(Protocol):
    """What a model applies to its hidden state at ``layer`` before continuing."""

    layer: int

    def __call__(self, hidden: Tensor) -> Tensor: ...


class StagedModel(nn.Module):
    """A model made of parts; ``forward(x, hidden_mix=...)`` changes the state at one layer."""

    #: the layers a hidden state can be taken at: the input and the output of each stage
    hidden_layers: ClassVar[tuple[int, ...]]

    def parts(self) -> Sequence[Callable[[Tensor], Tensor]]:
        """The model's parts in order; part i reads layer i."""
        raise NotImplementedError

    def _check_layer(self, layer: int) -> None:
        if layer not in self.hidden_layers:
            valid = ", ".join(map(str, self.hidden_layers))
            raise ValueError(
                f"layer: {type(self).__name__} has no hidden layer {layer!r}; valid: {valid}"
            )

    def forward_to(self, x: Tensor, layer: int) -> Tensor:
        """The hidden state at ``layer`` (0 = the input itself)."""
        self._check_layer(layer)
        for part in self.parts()[:layer]:
            x = part(x)
        return x

    def forward_from(self, hidden: Tensor, layer: int) -> Tensor:
        """The logits, continuing from the hidden state at ``layer``."""
        self._check_layer(layer)
        for part in self.parts()[layer:]:
            hidden = part(hidden)
        return hidden

    def forward(self, x: Tensor, hidden_mix: HiddenMix | None = None) -> Tensor:
        """Logits of shape (batch, num_classes); ``hidden_mix`` changes the state at its layer."""
        if hidden_mix is None:
            for part in self.parts():
                x = part(x)
            return x
        layer = hidden_mix.layer
        return self.forward_from(hidden_mix(self.forward_to(x, layer)), layer)
