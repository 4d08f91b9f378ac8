"""Manifold Mixup: the hidden state the next layer receives is the target-weighted blend."""

from __future__ import annotations

import pytest
import torch

from dcutmix.errors import ConfigError
from dcutmix.mixing import HiddenBlend, ManifoldMixup, build_mixer
from dcutmix.models import build_model, hidden_layers
from dcutmix.run.engine import mix_batch

# Small members of each family (same code paths as the published sizes), and for each hidden
# layer the module that receives it.
MODELS = {
    "tiny": (
        {"width": 8},
        {0: "features.0", 1: "features.1", 2: "features.2", 3: "features.3", 4: "avgpool"},
    ),
    "pyramidnet110": (
        {"depth": 20, "alpha": 24},
        {0: "conv1", 1: "layer2", 2: "layer3", 3: "bn_final"},
    ),
    "wrn28_10": (
        {"depth": 10, "widen_factor": 1},
        {0: "conv1", 1: "layer2", 2: "layer3", 3: "bn_final"},
    ),
    "resnet18": ({}, {0: "conv1", 1: "layer2", 2: "layer3", 3: "layer4", 4: "avgpool"}),
    "resnet20": ({}, {0: "conv1", 1: "layer2", 2: "layer3", 3: "avgpool"}),
    "preactresnet18": ({}, {0: "conv1", 1: "layer2", 2: "layer3", 3: "layer4", 4: "avgpool"}),
}


def _receiver_input(model: torch.nn.Module, name: str, run) -> torch.Tensor:
    """What module ``name`` receives while ``run()`` runs."""
    seen = []
    handle = model.get_submodule(name).register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().clone())
    )
    try:
        run()
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_next_layer_receives_the_target_weighted_blend(name):
    kwargs, receivers = MODELS[name]
    torch.manual_seed(0)
    model = build_model(name, num_classes=6, **kwargs).eval()
    assert tuple(sorted(receivers)) == hidden_layers(name) == model.hidden_layers
    batch = 6
    images = torch.randn(batch, 3, 16, 16)
    labels = torch.arange(batch)  # one class per image: the targets are the blend weights
    for layer in hidden_layers(name):
        mixer = ManifoldMixup(num_classes=batch, layers=(layer,))
        gen = torch.Generator().manual_seed(layer)
        targets, hidden = mixer.draw_hidden(images, labels, generator=gen)
        assert hidden.layer == layer
        with torch.no_grad():
            clean = model.forward_to(images, layer)  # the batch's own hidden states
            received = _receiver_input(
                model, receivers[layer], lambda hidden=hidden: model(images, hidden_mix=hidden)
            )
            logits = model(images, hidden_mix=hidden)
            expected = torch.einsum("bj,j...->b...", targets, clean)
            torch.testing.assert_close(received, expected, rtol=1e-5, atol=1e-5)
            # mixing happened: some rows are not their own image's state
            assert not torch.allclose(received, clean)
            torch.testing.assert_close(logits, model.forward_from(expected, layer))
            # and without a blend the parts compose to the plain network
            torch.testing.assert_close(
                model.forward_from(clean, layer), model(images), rtol=1e-5, atol=1e-5
            )
        # two sources per row, each image keeping the same lam (one lam per batch)
        assert ((targets > 0).sum(1) <= 2).all()
        mixed_rows = (targets > 0).sum(1) == 2
        own = targets.diag()[mixed_rows]
        assert mixed_rows.any() and torch.allclose(own, own[:1].expand_as(own))


def test_layers_are_drawn_uniformly_and_reproducibly():
    mixer = build_mixer("manifold_mixup", num_classes=4)
    assert (mixer.k, mixer.alpha, mixer.layers, mixer.per_sample) == (2, 2.0, (0, 1, 2), False)
    images, labels = torch.randn(4, 3, 8, 8), torch.arange(4)
    gen = torch.Generator().manual_seed(0)
    drawn = [mixer.draw_hidden(images, labels, generator=gen)[1].layer for _ in range(900)]
    counts = [drawn.count(layer) for layer in (0, 1, 2)]
    assert all(250 < c < 350 for c in counts), counts
    again = torch.Generator().manual_seed(0)
    assert drawn[:20] == [
        mixer.draw_hidden(images, labels, generator=again)[1].layer for _ in range(20)
    ]


def test_mix_batch_passes_other_mixers_through_and_defers_hidden_ones():
    images, labels = torch.randn(5, 3, 8, 8), torch.arange(5)
    mixed, targets, hidden = mix_batch(build_mixer("mixup", num_classes=5), images, labels)
    assert hidden is None and not torch.equal(mixed, images)
    gen = torch.Generator().manual_seed(1)
    same, targets, hidden = mix_batch(
        build_mixer("manifold_mixup", num_classes=5), images, labels, gen
    )
    assert same is images and isinstance(hidden, HiddenBlend)
    torch.testing.assert_close(targets.sum(1), torch.ones(5))
    # prob 0: nothing to blend, one-hot targets
    _, targets, hidden = mix_batch(
        build_mixer("manifold_mixup", num_classes=5, prob=0.0), images, labels
    )
    assert hidden is None and torch.equal(targets, torch.eye(5))


def test_called_on_images_alone_it_is_input_mixup():
    images, labels = torch.randn(6, 3, 8, 8), torch.arange(6)
    manifold = build_mixer("manifold_mixup", num_classes=6, alpha=0.7)
    mixup = build_mixer("mixup", num_classes=6, alpha=0.7)
    a = manifold(images, labels, generator=torch.Generator().manual_seed(3))
    b = mixup(images, labels, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([], "layers: expected a non-empty list"),
        ([0, -1], "layers: expected a non-empty list of layer indices >= 0"),
        ([1, 1], "layers: each layer may appear once"),
        ("0,1", "layers: expected a list of layer indices"),
    ],
)
def test_bad_layer_lists_are_named(layers, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        build_mixer("manifold_mixup", num_classes=3, layers=layers)


def test_a_layer_the_model_does_not_have():
    model = build_model("tiny", num_classes=3, width=4)
    blend = ManifoldMixup(num_classes=3, layers=(7,)).draw_hidden(
        torch.randn(2, 3, 8, 8), torch.arange(2)
    )[1]
    with pytest.raises(
        ValueError, match=r"^layer: TinyNet has no hidden layer 7; valid: 0, 1, 2, 3, 4"
    ):
        model(torch.randn(2, 3, 8, 8), hidden_mix=blend)
    with pytest.raises(ConfigError, match=r"^model\.name: 'vgg' is not a model"):
        hidden_layers("vgg")


@pytest.mark.slow
def test_training_on_digits_reaches_the_mixup_band(train_in_process, tmp_path):
    from tests.conftest import read_results

    errors = {}
    for mode in ("mixup", "manifold_mixup"):
        code, run = train_in_process(
            [f"mixing={mode}", "trainer.epochs=8", "logger=none", "trainer.device=cpu"],
            tmp_path / mode,
        )
        assert code == 0
        errors[mode] = read_results(run)["top1_err_last"]
    # the same band: a few points on digits' 360 validation images, and far from chance (90%)
    assert errors["manifold_mixup"] < 8.0, errors
    assert abs(errors["manifold_mixup"] - errors["mixup"]) < 4.0, errors


def test_gradients_flow_through_the_blend_to_both_sources():
    model = build_model("tiny", num_classes=4, width=4).train()
    images, labels = torch.randn(4, 3, 8, 8), torch.arange(4)
    mixer = ManifoldMixup(num_classes=4, layers=(2,))
    targets, hidden = mixer.draw_hidden(images, labels, generator=torch.Generator().manual_seed(0))
    loss = -(targets * model(images, hidden_mix=hidden).log_softmax(1)).sum(1).mean()
    loss.backward()
    # the layers before the blend get gradients through both the anchor and the partner
    assert model.features[0][0].weight.grad.abs().sum() > 0
    assert model.fc.weight.grad.abs().sum() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_drawing_a_hidden_blend_never_synchronises_on_cuda():
    images = torch.rand(32, 3, 32, 32, device="cuda")
    labels = torch.randint(0, 10, (32,), device="cuda")
    mixer = build_mixer("manifold_mixup", num_classes=10, prob=0.5)
    gen = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        layers = [mixer.draw_hidden(images, labels, generator=gen)[1].layer for _ in range(30)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert set(layers) == {0, 1, 2}  # the host draw follows the device generator as it advances


def test_results_config_records_the_layers_only_for_manifold_mixup():
    from dcutmix.config import validate
    from dcutmix.run.lifecycle import run_config
    from tests.helpers.runs import compose_config

    def recorded(overrides: list[str]) -> dict:
        cfg = compose_config(["trainer.device=cpu", *overrides])
        return run_config(cfg, validate(cfg))

    manifold = recorded(["mixing=manifold_mixup", "mixing.layers=[0,2]"])
    assert manifold["mixing"]["layers"] == [0, 2]
    # the report groups by these settings: different layer sets are different rows
    other = recorded(["mixing=manifold_mixup"])["mixing"]["layers"]
    assert other == [0, 1, 2]
    for mode in ("dcutmix", "mixup", "cutout"):
        assert "layers" not in recorded([f"mixing={mode}"])["mixing"]
    assert set(recorded(["mixing=dcutmix"])["mixing"]) == {
        "mode",
        "k",
        "alpha",
        "prob",
        "per_sample",
    }
