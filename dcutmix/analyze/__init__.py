"""``dcutmix-analyze PATH...``: robustness, calibration and loss-landscape analyses of trained runs.

For every finished run folder (or every run found in a sweep folder) it rebuilds the model and the
validation data from ``.hydra/config.yaml``, loads ``checkpoints/last.pt`` (or ``best.pt``), takes
the first ``--max-images`` validation images in loader order, and writes ``analysis.json`` into the
run folder, atomically:

- ``clean``: top-1 and top-5 error (%) and negative log-likelihood (nats per image);
- ``fgsm``: top-1 error (%) under a one-step FGSM attack at epsilon 1, 2, 4 and 8 (/255). The step
  is taken in pixel space: the normalisation is undone, the image moved by epsilon times the sign
  of the loss gradient, clamped to [0, 1] and normalised again;
- ``calibration``: expected calibration error (%) over 15 equal-width confidence bins, and per
  bin its count, mean confidence and accuracy (a reliability diagram);
- ``loss_landscape``: validation loss (and top-1 error) against sigma for random Gaussian
  perturbations of the weights, averaged over ``--directions`` directions;
- ``predictive_entropy``: the entropy (nats) of each image's predicted distribution, summarised
  over all images and over correct and incorrect ones. This is plain predictive entropy; the
  paper's own uncertainty measure could not be checked, so none is claimed to match it.

Loss landscape choices. The perturbation is absolute, as in the paper's figure: every element of
every convolution's and linear layer's ``weight`` gets ``sigma * N(0, 1)`` added, with no scaling
by filter or parameter norm. Biases, BatchNorm's affine parameters and its running statistics are
left alone, and the model stays in eval mode. Because the scale is absolute, curves compare models
of one architecture (whose weight norms are alike), not architectures. The directions come from a
CPU generator seeded with ``--seed``, so they are the same on every device, and direction ``i``
does not depend on how many are drawn. Each point starts from a copy of the trained weights, which
are restored bit for bit afterwards.

Everything runs in float32 without autocast, and the image subset is held in memory on the device.
torch is imported only inside the functions that compute, so the report can read analyses
(``analysis_columns``, ``plot_analyses``) without loading it.
"""

from dcutmix.analyze.calibration import calibration
from dcutmix.analyze.cli import main
from dcutmix.analyze.common import (
    ANALYSIS_FILE,
    DEFAULT_SIGMAS,
    ECE_BINS,
    FGSM_EPSILONS,
    PLOT_FGSM,
    PLOT_LOSS_LANDSCAPE,
    PLOT_RELIABILITY,
)
from dcutmix.analyze.entropy import entropy_summary
from dcutmix.analyze.fgsm import Evaluation, evaluate_with_fgsm
from dcutmix.analyze.landscape import loss_landscape, perturbed_weights
from dcutmix.analyze.plots import plot_analyses
from dcutmix.analyze.runs import (
    analysis_columns,
    analyze_run,
    check_options,
    find_runs,
    skip_reason,
)

__all__ = [
    "ANALYSIS_FILE",
    "DEFAULT_SIGMAS",
    "ECE_BINS",
    "FGSM_EPSILONS",
    "PLOT_FGSM",
    "PLOT_LOSS_LANDSCAPE",
    "PLOT_RELIABILITY",
    "Evaluation",
    "analysis_columns",
    "analyze_run",
    "calibration",
    "check_options",
    "entropy_summary",
    "evaluate_with_fgsm",
    "find_runs",
    "loss_landscape",
    "main",
    "perturbed_weights",
    "plot_analyses",
    "skip_reason",
]
