"""A pure-torch stand-in for the two torchaudio transforms laion_clap's fusion path uses.

laion_clap computes log-mel spectrograms with ``torchaudio.transforms.MelSpectrogram`` (HTK mel scale,
no filter normalisation, reflect-padded centred STFT, power 2) and ``AmplitudeToDB(top_db=None)``;
its own code notes this equals ``librosa.feature.melspectrogram(..., htk=True, norm=None,
pad_mode="reflect")``. torchaudio has no build for the torch this project pins, so without it the
fusion model (the paper's ``630k-fusion-best.pt``) cannot embed audio. :func:`install` plugs this
module in where laion_clap expected torchaudio; ``tests/test_encoders_real.py`` checks it against
librosa.
"""

from __future__ import annotations

import types

import torch
from torch import nn


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """(n_freqs × n_mels) triangular HTK filters, unnormalised."""
    freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m = torch.linspace(float(hz_to_mel(torch.tensor(float(f_min)))), float(hz_to_mel(torch.tensor(float(f_max)))),
                       n_mels + 2, dtype=torch.float64)
    f_pts = mel_to_hz(m)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0).float()


class MelSpectrogram(nn.Module):
    def __init__(self, sample_rate: int, n_fft: int, win_length: int | None = None, hop_length: int | None = None,
                 center: bool = True, pad_mode: str = "reflect", power: float = 2.0, norm: str | None = None,
                 onesided: bool = True, n_mels: int = 128, f_min: float = 0.0, f_max: float | None = None,
                 mel_scale: str = "htk") -> None:
        super().__init__()
        if norm is not None or mel_scale != "htk" or not onesided:
            raise NotImplementedError("only norm=None, mel_scale='htk', onesided=True (what laion_clap uses)")
        self.n_fft, self.win_length = n_fft, win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.center, self.pad_mode, self.power = center, pad_mode, power
        self.register_buffer("window", torch.hann_window(self.win_length))
        self.register_buffer("fb", mel_filterbank(n_fft // 2 + 1, f_min, f_max or sample_rate / 2, n_mels, sample_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, self.window, center=self.center,
                          pad_mode=self.pad_mode, normalized=False, onesided=True, return_complex=True)
        spec = spec.abs().pow(self.power)  # (..., freq, time)
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)  # (..., n_mels, time)


class AmplitudeToDB(nn.Module):
    def __init__(self, stype: str = "power", top_db: float | None = None) -> None:
        super().__init__()
        if top_db is not None:
            raise NotImplementedError("only top_db=None (what laion_clap uses)")
        self.multiplier = 10.0 if stype == "power" else 20.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.multiplier * torch.log10(torch.clamp(x, min=1e-10))  # ref 1.0: db offset log10(1) = 0


def install() -> bool:
    """Give laion_clap these transforms if torchaudio is missing; returns whether it was needed."""
    import laion_clap.training.data as clap_data  # the module laion_clap.hook takes get_audio_features from

    if getattr(clap_data, "torchaudio", None) is not None:
        return False
    clap_data.torchaudio = types.SimpleNamespace(
        transforms=types.SimpleNamespace(MelSpectrogram=MelSpectrogram, AmplitudeToDB=AmplitudeToDB))
    return True


