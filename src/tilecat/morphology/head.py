"""The ``morphology`` inference head: conditional answer probabilities per question."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..infer.heads import Column, Head, LoadedHead, RawOutput, model_location
from .tree import QUESTIONS, column_name

__all__ = ["MorphologyHead", "HEAD", "COLUMNS"]

#: the head's output columns, in network output order
COLUMNS: tuple[Column, ...] = tuple(
    Column(column_name(q.name, a), "float32", "",
           f"raw P({q.name}={a} | question applies): {q.description}")
    for q in QUESTIONS for a in q.answers
)


class MorphologyHead(Head):
    """Spin-symmetrised morphology CNN (weights ``tilecat/data/models/morphology``)."""

    name = "morphology"

    def load(self, config: Mapping[str, Any], device: Any) -> LoadedHead:
        from ..models import load_model
        from .model import build
        from .net import fuse_all

        module, card = load_model(model_location(config, self.name), build, device)
        fuse_all(module)
        if device.type == "cpu":
            import torch

            module = module.to(memory_format=torch.channels_last)
        psf = bool((card.get("arch") or {}).get("psf_input", False))
        return LoadedHead(module=module, card=card, columns=COLUMNS,
                          inputs=("psf_fwhm",) if psf else ())

    def postprocess(self, raw: RawOutput, loaded: LoadedHead) -> dict[str, np.ndarray]:
        p = np.asarray(raw, dtype=np.float32)
        return {c.name: p[:, k] for k, c in enumerate(COLUMNS)}


HEAD = MorphologyHead()
