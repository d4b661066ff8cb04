"""Audio files: any rate and channel count → mono float32 at the rate an encoder needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


#: video / AAC containers libsndfile cannot open (AudioSet and VGGSound are often kept as videos)
CONTAINERS = {".mp4", ".m4a", ".mkv", ".webm", ".avi", ".mov", ".aac"}


def read_audio(path: str | Path, target_rate: int) -> np.ndarray:
    """Mono float32 at ``target_rate``; ValueError for unreadable, empty or non-finite audio.

    Decoded by libsndfile (WAV, FLAC, OGG/Vorbis, MP3), mixed to mono by averaging the channels and
    resampled with librosa's ``soxr_hq`` — what ``librosa.load(path, sr=target_rate)`` does.
    """
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises its own LibsndfileError / RuntimeError types
        hint = ""
        if Path(path).suffix.lower() in CONTAINERS:
            hint = (f"; libsndfile reads WAV, FLAC, OGG and MP3, not {Path(path).suffix} containers: extract the "
                    "audio track first, e.g. `ffmpeg -i clip.mp4 -vn -ac 1 -ar 48000 clip.flac`")
        raise ValueError(f"{path}: unreadable audio ({exc}){hint}") from exc
    if data.shape[0] == 0:
        raise ValueError(f"{path}: no audio samples")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise ValueError(f"{path}: non-finite audio samples")
    if rate != target_rate:
        import librosa

        mono = librosa.resample(mono, orig_sr=rate, target_sr=target_rate, res_type="soxr_hq")
    return mono.astype(np.float32)
