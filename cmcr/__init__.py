"""cmcr — Connecting Multi-modal Contrastive Representations (C-MCR, NeurIPS 2023): training and evaluation.

One concern per module; a reader finds Eq. N by searching for "Eq. N":

- :mod:`cmcr.memory`    Eq. 2  streamed memory aggregation (softmax / argmax / random)
- :mod:`cmcr.enhance`   Eq. 3  semantic completion (Gaussian noise of variance σ², re-normalisation)
- :mod:`cmcr.projector`        Table 6 projectors and the released variants
- :mod:`cmcr.loss`      Eq. 1, 5–10  InfoNCE, inter- and intra-MCR alignment, total loss
- :mod:`cmcr.train`            the trainer (device-resident data, AdamW + cosine)
- :mod:`cmcr.metrics`          retrieval mAP / R@k
"""

__version__ = "0.1.0"
