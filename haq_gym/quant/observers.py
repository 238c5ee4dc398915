"""Observers: calibration statistics kept apart from the quantizers that use them (as in ``torch.ao.quantization``).

An observer records statistics of the tensors it is shown and answers questions about
them; the quantizer that owns it turns the answers into its grid. Observers hold no
parameters or buffers, so composing one into a quantizer leaves the model's state dict as
it was.

- :class:`RandomSampleObserver` (HAQ's linear activations): a seeded random subsample of
  every batch observed, plus its extremes; clip values are MSE-optimal on that sample.
- :class:`StridedSampleObserver` (HAQ's linear weights): an evenly strided subsample of a
  weight plus its largest magnitude; clip values as above.
- :class:`MeanAbsObserver` (LSQ's initialisation): the minimum and the mean magnitude of
  the latest tensor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from haq_gym.quant.fake_quant import mse_optimal_clip

SAMPLE_SIZE = 1 << 14
"""Values an activation observer keeps per batch to choose clip ranges (a seeded random subsample)."""


class Observer(ABC):
    """Statistics of the tensors observed since the last :meth:`reset`."""

    @abstractmethod
    def observe(self, x: torch.Tensor) -> None:
        """Add ``x`` to the statistics."""

    @abstractmethod
    def reset(self) -> None:
        """Forget everything observed."""

    @property
    @abstractmethod
    def observed(self) -> bool:
        """Whether anything was observed since the last reset."""


class ClipObserver(Observer):
    """An observer that picks a symmetric clip value for an integer range."""

    @abstractmethod
    def clip(self, qmin: int, qmax: int) -> float:
        """Clip value ``c`` (step ``c / qmax``) for codes in ``[qmin, qmax]``; needs an observation."""

    @property
    @abstractmethod
    def minimum(self) -> float:
        """Smallest value observed (a negative one makes an activation grid signed)."""


class SampleObserver(ClipObserver):
    """Keeps a subsample of every tensor observed; clips minimise the mean squared quantization error on it."""

    def __init__(self) -> None:
        self.sample: torch.Tensor | None = None

    @abstractmethod
    def subsample(self, flat: torch.Tensor) -> torch.Tensor:
        """The values of the flattened tensor ``flat`` to keep."""

    def observe(self, x: torch.Tensor) -> None:
        new = self.subsample(x.detach().reshape(-1))
        self.sample = new if self.sample is None else torch.cat([self.sample, new])

    def reset(self) -> None:
        self.sample = None

    @property
    def observed(self) -> bool:
        return self.sample is not None

    def _sample(self) -> torch.Tensor:
        if self.sample is None:
            raise RuntimeError("the observer has seen no data; calibrate the model first")
        return self.sample

    @property
    def minimum(self) -> float:
        return float(self._sample().min())

    def clip(self, qmin: int, qmax: int) -> float:
        return mse_optimal_clip(self._sample(), qmin, qmax)


class RandomSampleObserver(SampleObserver):
    """Up to :data:`SAMPLE_SIZE` values of each batch drawn with a fixed seed, plus the batch's minimum and maximum."""

    def __init__(self, seed: int = 0, size: int = SAMPLE_SIZE) -> None:
        super().__init__()
        self.seed = seed
        self.size = size

    def subsample(self, flat: torch.Tensor) -> torch.Tensor:
        flat = flat.float()
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        idx = torch.randperm(flat.numel(), generator=gen)[: min(self.size, flat.numel())].to(flat.device)
        return torch.cat([flat[idx], torch.stack([flat.min(), flat.max()])])


class StridedSampleObserver(SampleObserver):
    """A tensor of more than ``size`` values is thinned to every k-th value plus its largest magnitude."""

    def __init__(self, size: int = 4 * SAMPLE_SIZE) -> None:
        super().__init__()
        self.size = size

    def subsample(self, flat: torch.Tensor) -> torch.Tensor:
        if flat.numel() <= self.size:
            return flat
        step = flat.numel() // self.size + 1
        return torch.cat([flat[::step], flat.abs().max().reshape(1)])


class MeanAbsObserver(Observer):
    """Minimum and mean magnitude of the latest tensor observed (what LSQ's step initialisation reads)."""

    def __init__(self) -> None:
        self.stats: tuple[float, float] | None = None

    def observe(self, x: torch.Tensor) -> None:
        v = x.detach().float()
        self.stats = (float(v.min()), float(v.abs().mean()))

    def reset(self) -> None:
        self.stats = None

    @property
    def observed(self) -> bool:
        return self.stats is not None

    @property
    def minimum(self) -> float:
        return self._stats()[0]

    @property
    def mean_abs(self) -> float:
        return self._stats()[1]

    def _stats(self) -> tuple[float, float]:
        if self.stats is None:
            raise RuntimeError("the observer has seen no data; calibrate the model first")
        return self.stats
