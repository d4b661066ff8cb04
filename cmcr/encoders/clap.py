"""CLAP (audio–text) through laion_clap, behind the :class:`~cmcr.encoders.base.EncoderSpace` interface.

The paper and the official release use ``630k-fusion-best.pt`` with ``enable_fusion=True``
(HTSAT-tiny audio branch, RoBERTa text branch), mono 48 kHz input and 10 s windows.

Offline behaviour, measured (see the environment notes):

- ``import laion_clap`` must happen with ``HF_HUB_OFFLINE=1`` (set here before importing it), or it
  retries the hub for minutes.
- ``CLAP_Module`` builds its text branch with ``RobertaModel.from_pretrained('roberta-base')``, which
  needs the hub or its cache. The CLAP checkpoint carries the text branch's weights anyway, so we build
  the same RoBERTa architecture from its configuration instead: no hub request, ever.
- laion_clap's fusion path computes log-mel features with torchaudio, which has no build for the torch
  pinned here; :mod:`cmcr.encoders.melspec` provides the same two transforms in torch (checked against
  librosa) and is plugged in when torchaudio is missing.
- Offline, laion_clap's tokenizer loads *empty* (a handful of tokens) and every text becomes the same
  ids — silent garbage. We check the vocabulary and refuse to embed text unless the real roberta-base
  tokenizer is available (``tokenizer``: a local folder, or the Hugging Face cache). Audio needs none.

Audio, as the official C-MCR inference prepares it (laion_clap's ``get_audio_embedding_from_filelist``):
any rate / channel count is read, mixed to mono and resampled to 48 kHz (librosa's soxr_hq, as
``librosa.load``), then quantised to int16 and back (``quantize``, on by default: CLAP was trained on
quantised audio, and laion_clap's file path does it; its tensor path does not). Each clip gets its own
laion_clap features — clips shorter than 10 s are repeat-padded, clips of 10 s are used as they are —
so a clip's embedding never depends on the batch it is in. Longer clips (``long_clips``):

- ``laion`` (default, what the official code does): laion_clap's own handling — for the fusion model a
  global down-sampled log-mel plus three 10 s chunks drawn from the front, middle and back thirds (a
  random 10 s crop for a non-fusion model). laion_clap draws them from numpy's global RNG; here the draw
  is seeded by the clip's samples (CRC-32), so the same clip always gets the same chunks and extraction
  stays reproducible, and the caller's numpy RNG state is left as it was.
- ``centre``: the centre 10 s only, a fixed window with no fusion.

Features (STFT, log-mel) are computed in fp32 outside autocast: with ``precision=fp16`` a loud clip's
power spectrum (up to ~2.6e5) would overflow half precision in the mel product; only the model runs under
autocast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcr.checkpoints import TRUST_SWITCH, load_state_dict_file
from cmcr.config import ConfigError
from cmcr.device import amp_settings, resolve_device, seeded_init
from cmcr.encoders import melspec
from cmcr.encoders.base import EncoderSpace, non_empty_text, register
from cmcr.items import file_of
from cmcr.sources.audio import read_audio

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
WINDOW = 10 * SAMPLE_RATE
LONG_CLIPS = ("laion", "centre")
WEIGHTS_HELP = "LAION-CLAP 630k-fusion-best.pt (huggingface.co/lukewys/laion_clap), used with enable_fusion=True"
#: roberta-base's configuration (what CLAP's text branch is), so it can be built without the hub
ROBERTA_BASE = dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, layer_norm_eps=1e-5)


def import_laion_clap():
    """Import laion_clap offline (HF_HUB_OFFLINE=1 first: otherwise the import retries the hub for minutes)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import laion_clap

    if melspec.install():
        log.info("torchaudio is not installed: laion_clap uses cmcr.encoders.melspec for its log-mel features")
    return laion_clap


@contextlib.contextmanager
def roberta_without_hub():
    """Within the block, ``RobertaModel.from_pretrained`` in laion_clap builds roberta-base from its config."""
    import_laion_clap()
    import clap_module.model as clap_model  # laion_clap puts its folder on sys.path; this is its module
    from transformers import RobertaConfig, RobertaModel

    class _Offline(RobertaModel):
        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            return RobertaModel(RobertaConfig(**ROBERTA_BASE))

    original = clap_model.RobertaModel
    clap_model.RobertaModel = _Offline
    try:
        yield
    finally:
        clap_model.RobertaModel = original


def centre_window(wave: np.ndarray, length: int = WINDOW) -> np.ndarray:
    """The centre ``length`` samples of a longer clip (deterministic); shorter clips are returned as they are."""
    if len(wave) <= length:
        return wave
    start = (len(wave) - length) // 2
    return wave[start:start + length]


@register("clap")
class ClapSpace(EncoderSpace):
    """LAION-CLAP audio and text encoders."""

    modalities = ("audio", "text")

    def __init__(self, weights: str | None = None, enable_fusion: bool = True, amodel: str = "HTSAT-tiny",
                 tokenizer: str | None = None, device: str = "auto", allow_random: bool = False,
                 trust_checkpoint: bool = False, precision: str = "fp32", seed: int = 0, quantize: bool = True,
                 long_clips: str = "laion", param: str = "encoders.clap.weights") -> None:
        if long_clips not in LONG_CLIPS:
            raise ConfigError(f"long_clips must be one of {LONG_CLIPS}, got {long_clips!r}")
        laion_clap = import_laion_clap()
        if weights is None and not allow_random:
            raise ConfigError(f"no CLAP weights given: set {param} to {WEIGHTS_HELP}")
        if weights is not None and not Path(weights).expanduser().is_file():
            raise FileNotFoundError(f"CLAP weights not found: {weights}. Expected {WEIGHTS_HELP}; set {param}")
        self.device = resolve_device(device)
        with roberta_without_hub(), seeded_init(seed):  # the seed only matters without weights (allow_random)
            module = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel, tmodel="roberta",
                                            device=self.device)
        if weights is not None:
            load_clap_weights(module.model, Path(weights).expanduser(), trust_checkpoint)
        if tokenizer is not None:
            from transformers import RobertaTokenizer

            if not Path(tokenizer).is_dir():
                raise FileNotFoundError(f"roberta-base tokenizer folder not found: {tokenizer}")
            module.tokenize = RobertaTokenizer.from_pretrained(tokenizer)
        self.module = module
        self.module.model.eval()
        self.vocab_size = len(module.tokenize)
        self.amp = amp_settings(precision, self.device)
        self.name, self.dim = "clap", 512
        self.enable_fusion, self.quantize, self.long_clips = enable_fusion, quantize, long_clips
        log.info("CLAP %s fusion=%s (%s) on %s; tokenizer vocabulary %d", amodel, enable_fusion,
                 weights or "random init", self.device, self.vocab_size)

    def check_tokenizer(self) -> None:
        """laion_clap's offline import yields an empty tokenizer: refuse it instead of embedding garbage."""
        if self.vocab_size < 50_000:
            raise ConfigError(
                f"the roberta-base tokenizer is not available (vocabulary of {self.vocab_size} tokens — laion_clap "
                "loaded an empty one offline): every text would get the same ids. Pass tokenizer=<folder with "
                "roberta-base's vocab.json and merges.txt> or pre-fill the Hugging Face cache with roberta-base")

    def load(self, modality: str, item: Any) -> torch.Tensor:
        if modality == "text":
            return non_empty_text(item)  # tokenised in batches by laion_clap
        wave = read_audio(file_of(item, modality), SAMPLE_RATE)
        if self.quantize:
            wave = quantize_int16(wave)
        if self.long_clips == "centre":
            wave = centre_window(wave)
        return torch.from_numpy(np.ascontiguousarray(wave))

    def audio_features(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """laion_clap's input features of one loaded clip (fp32, on the device): ``mel_fusion``, ``longer``,
        ``waveform``. Chunks of clips longer than 10 s are drawn with numpy seeded by the clip's samples."""
        from laion_clap.training.data import get_audio_features

        wave = wave.float()
        with numpy_seed(zlib.crc32(wave.cpu().numpy().tobytes())), torch.autocast(self.device.type, enabled=False):
            return get_audio_features({}, wave.to(self.device), WINDOW,
                                      data_truncating="fusion" if self.enable_fusion else "rand_trunc",
                                      data_filling="repeatpad", audio_cfg=self.module.model_cfg["audio_cfg"])

    def encode_batch(self, modality: str, batch: list[Any]) -> torch.Tensor:
        if modality == "text":
            self.check_tokenizer()
            with torch.no_grad(), torch.autocast(self.device.type, **self.amp):
                return self.module.get_text_embedding(list(batch), use_tensor=True).float().cpu()
        with torch.no_grad():
            features = [self.audio_features(x) for x in batch]
            with torch.autocast(self.device.type, **self.amp):
                return self.module.model.get_audio_embedding(features).float().cpu()


def quantize_int16(wave: np.ndarray) -> np.ndarray:
    """laion_clap's quantisation: clip to [-1, 1], round towards zero to int16 steps of 1/32767, back to float32."""
    from laion_clap.training.data import float32_to_int16, int16_to_float32

    return int16_to_float32(float32_to_int16(wave))


@contextlib.contextmanager
def numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (which laion_clap draws from) inside the block; restore the caller's state after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def load_clap_weights(model: torch.nn.Module, path: Path, trust: bool = False) -> None:
    """Load a LAION-CLAP checkpoint into ``model`` with a strict key check.

    ``weights_only=True`` first; a checkpoint that pickles other objects needs ``trust=True`` (which
    runs code from the file: only for files from a source you trust).
    """
    state = load_state_dict_file(path, trust=trust, switch=TRUST_SWITCH.format("clap"))
    own = model.state_dict()
    # transformers versions differ on this buffer; it is derived, not learned
    state = {k: v for k, v in state.items() if not (k.endswith("position_ids") and k not in own)}
    missing = sorted(k for k in own if k not in state and not k.endswith("position_ids"))
    unexpected = sorted(k for k in state if k not in own)
    if missing or unexpected:
        raise ValueError(f"{path}: does not match the CLAP architecture (missing {missing[:5]}…, "
                         f"unexpected {unexpected[:5]}…); check enable_fusion / amodel")
    model.load_state_dict(state, strict=False)
