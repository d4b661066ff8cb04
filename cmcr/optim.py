"""AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019), the optimiser of sections 4.1
and 4.2, as the trainers step it: one learning rate per step (the cosine schedule sets it), β = (0.9, 0.999),
ε = 1e-8, decoupled weight decay.

Written out here rather than taken from ``torch.optim``: constructing or stepping a ``torch.optim.Optimizer``
imports ``torch._dynamo`` (about 1.4 s per process, for "never compile" marks this project never needs), once in
every training stage's process. The update is PyTorch's single-tensor AdamW operation for operation — the path
``torch.optim.AdamW`` takes for CPU tensors — so the parameters after each step are bit-identical to it on the CPU
(``tests/test_train.py`` checks it over 60 steps with a changing learning rate and a parameter without a gradient).
On a GPU ``torch.optim.AdamW`` defaults to its multi-tensor (foreach) kernels, which round differently; this class
takes the same single-tensor path on every device (a handful of parameter tensors: the launch count is small)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class AdamW:
    """AdamW over ``params`` (tensors that require grad). :meth:`step` applies one update with learning rate ``lr``
    to every parameter that has a gradient (as ``torch.optim.AdamW``: the others keep their state untouched);
    :meth:`zero_grad` drops the gradients (``set_to_none``)."""

    def __init__(self, params: Iterable[torch.Tensor], *, weight_decay: float = 0.01, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("AdamW: no parameters to optimise")
        self.weight_decay, (self.beta1, self.beta2), self.eps = float(weight_decay), betas, float(eps)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = [0] * len(self.params)  # per parameter, as torch counts (a parameter without a gradient waits)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """One AdamW update at learning rate ``lr``: m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g², θ ← θ·(1 − lr·λ) −
        lr/(1−β1^t) · m / (√v / √(1−β2^t) + ε)."""
        lr = float(lr)
        for i, param in enumerate(self.params):
            grad = param.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError("AdamW does not support sparse gradients")
            self.steps[i] += 1
            step = float(self.steps[i])
            if self.weight_decay != 0:
                param.mul_(1 - lr * self.weight_decay)
            exp_avg, exp_avg_sq = self.exp_avg[i], self.exp_avg_sq[i]
            exp_avg.lerp_(grad, 1 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            bias_correction1 = 1 - self.beta1 ** step
            bias_correction2 = 1 - self.beta2 ** step
            denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))
