"""CLIP (open_clip) and CLAP (laion_clap) spaces: real architectures with random weights, offline,
on the official release's real photos and 32 kHz sounds."""

import json
import wave

import numpy as np
import pytest
import torch

from cmcr.config import ConfigError
from cmcr.encoders.base import build_space
from cmcr.extraction import extract


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("clipcfg")
    (folder / "cmcr-tiny-clip.json").write_text(json.dumps({
        "embed_dim": 32, "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    return build_space("clip", model_name="cmcr-tiny-clip", allow_random=True, device="cpu")


def test_clip_real_architecture_builds_offline():
    space = build_space("clip", allow_random=True, device="cpu")  # ViT-B-32-quickgelu, random weights
    assert space.dim == 512 and tuple(space.model.visual.conv1.weight.shape) == (768, 3, 32, 32)


def test_clip_encodes_real_photos_and_long_captions(tiny_clip, official_dir, tmp_path):
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 50), 128, np.uint8), mode="L").save(grey)  # converted to RGB, not crashed on
    images = [str(official_dir / f) for f in ("BBQ.jpeg", "toilet.jpeg", "train.jpeg")] + [str(grey)]
    out = extract(tiny_clip, "image", images, progress=False)
    assert out.embeddings.shape == (4, 32) and not out.failures
    np.testing.assert_allclose(np.linalg.norm(out.embeddings, axis=1), 1, atol=1e-5)
    texts = ["a dog", "word " * 300]  # far beyond the 77-token context: truncated
    emb = extract(tiny_clip, "text", texts, progress=False).embeddings
    assert emb.shape == (2, 32) and np.isfinite(emb).all()
    assert int(tiny_clip.load("text", texts[1])[-1]) == 49407  # ends with the end-of-text token


def test_clip_records_corrupt_images(tiny_clip, official_dir, tmp_path):
    data = (official_dir / "train.jpeg").read_bytes()
    (tmp_path / "cut.jpeg").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.jpeg").write_bytes(b"")
    items = [str(official_dir / "BBQ.jpeg"), str(tmp_path / "cut.jpeg"), str(tmp_path / "empty.jpeg"),
             str(tmp_path / "missing.jpeg")]
    out = extract(tiny_clip, "image", items, ids=["ok", "cut", "empty", "missing"], progress=False)
    assert out.kept == [0] and [f["id"] for f in out.failures] == ["cut", "empty", "missing"]
    assert all(f["reason"] for f in out.failures)


def test_clip_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CLIP weights not found: .*nope.pt.*encoders.clip.weights"):
        build_space("clip", weights=str(tmp_path / "nope.pt"), device="cpu")
    with pytest.raises(ConfigError, match="quickgelu"):
        build_space("clip", model_name="ViT-B-32", weights="openai", device="cpu")
    with pytest.raises(ConfigError, match="no CLIP weights"):
        build_space("clip", device="cpu")


@pytest.fixture(scope="module")
def clap():
    torch.manual_seed(0)
    return build_space("clap", allow_random=True, device="cpu")  # HTSAT-tiny + RoBERTa, fusion, no hub


def test_clap_resamples_32k_sounds_to_48k(clap, official_dir):
    from cmcr.encoders.clap import SAMPLE_RATE
    from cmcr.sources.audio import read_audio

    with wave.open(str(official_dir / "BBQ.wav")) as w:
        assert w.getframerate() == 32000
        seconds = w.getnframes() / 32000
    wave48 = read_audio(official_dir / "BBQ.wav", SAMPLE_RATE)
    assert len(wave48) == pytest.approx(seconds * SAMPLE_RATE, abs=2)
    out = extract(clap, "audio", [str(official_dir / f) for f in ("BBQ.wav", "toilet.wav", "train.wav")],
                  batch_size=2, progress=False)
    assert out.embeddings.shape == (3, 512) and not out.failures
    again = extract(clap, "audio", [str(official_dir / "BBQ.wav")], progress=False)
    np.testing.assert_allclose(again.embeddings[0], out.embeddings[0], atol=1e-5)  # deterministic


def test_clap_long_clips_use_the_centre_window():
    from cmcr.encoders.clap import WINDOW, centre_window

    x = np.arange(WINDOW + 1000, dtype=np.float32)
    assert centre_window(x)[0] == 500 and len(centre_window(x)) == WINDOW
    assert len(centre_window(x[:100])) == 100


def test_clap_embedding_of_a_clip_does_not_depend_on_its_batch(clap):
    rng = np.random.default_rng(0)
    short = torch.from_numpy(rng.normal(0, 0.1, 48000 * 3).astype(np.float32))  # repeat-padded to 10 s
    other = torch.from_numpy(rng.normal(0, 0.1, 48000 * 7).astype(np.float32))
    alone = clap.encode("audio", [short])
    np.testing.assert_allclose(clap.encode("audio", [short, other])[:1], alone, atol=1e-6)
    np.testing.assert_allclose(clap.encode("audio", [other, short])[1:], alone, atol=1e-6)


def test_clap_quantizes_audio_like_laion_clap(clap, official_dir):
    from cmcr.encoders.clap import SAMPLE_RATE
    from cmcr.sources.audio import read_audio

    raw = read_audio(official_dir / "BBQ.wav", SAMPLE_RATE)
    loaded = clap.load("audio", str(official_dir / "BBQ.wav")).numpy()
    steps = loaded.astype(np.float64) * 32767
    assert np.abs(steps - np.round(steps)).max() < 1e-3  # int16 levels (up to float32 rounding of k / 32767)
    np.testing.assert_array_equal(loaded, (np.clip(raw, -1, 1) * 32767).astype(np.int16) / np.float32(32767))
    assert np.abs(loaded - raw).max() < 1 / 32767 and not np.array_equal(loaded, raw)


def test_clap_long_clips_use_laions_fusion_with_a_reproducible_draw(clap):
    from laion_clap.training.data import get_audio_features

    rng = np.random.default_rng(1)
    long_clip = torch.from_numpy(rng.normal(0, 0.1, 48000 * 25).astype(np.float32))
    np.random.seed(123)
    features = clap.audio_features(long_clip)
    after = np.random.random()
    assert features["longer"].tolist() == [True] and tuple(features["mel_fusion"].shape) == (4, 1001, 64)
    np.random.seed(123)
    np.random.random()  # a different global state: the draw must not depend on it
    again = clap.audio_features(long_clip)
    assert torch.equal(again["mel_fusion"], features["mel_fusion"])
    np.random.seed(123)
    clap.audio_features(long_clip)
    assert np.random.random() == after  # the caller's numpy RNG is left as it was
    import zlib

    np.random.seed(zlib.crc32(long_clip.numpy().tobytes()))  # laion_clap's own function with that seed
    reference = get_audio_features({}, long_clip, 480000, data_truncating="fusion", data_filling="repeatpad",
                                   audio_cfg=clap.module.model_cfg["audio_cfg"])
    assert torch.equal(reference["mel_fusion"], features["mel_fusion"])
    short = clap.audio_features(long_clip[:48000 * 4])
    assert short["longer"].tolist() == [False] and torch.equal(short["mel_fusion"][0], short["mel_fusion"][3])


def test_clap_centre_window_option(tmp_path):
    import soundfile

    from cmcr.encoders.clap import WINDOW

    with pytest.raises(ConfigError, match="long_clips"):
        build_space("clap", allow_random=True, device="cpu", long_clips="middle")
    centre = build_space("clap", allow_random=True, device="cpu", long_clips="centre")
    ramp = (np.arange(48000 * 14) / (48000 * 14) - 0.5).astype(np.float32)
    soundfile.write(tmp_path / "ramp.wav", ramp, 48000, subtype="FLOAT")
    loaded = centre.load("audio", str(tmp_path / "ramp.wav")).numpy()
    assert len(loaded) == WINDOW and loaded[0] == pytest.approx(ramp[2 * 48000], abs=1 / 32767)
    assert centre.audio_features(torch.from_numpy(loaded))["longer"].tolist() == [False]


def test_clap_bad_audio_is_recorded(clap, tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with wave.open(str(tmp_path / "silent.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(48000)
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))  # a video container
    items = [str(tmp_path / f) for f in ("empty.wav", "silent.wav", "clip.mp4")]
    out = extract(clap, "audio", items, progress=False)
    assert out.kept == [] and len(out.failures) == 3
    assert "no audio samples" in out.failures[1]["reason"]
    assert "clip.mp4" in out.failures[2]["reason"] and "ffmpeg -i clip.mp4" in out.failures[2]["reason"]


def test_clap_refuses_the_empty_offline_tokenizer(clap):
    if clap.vocab_size >= 50_000:
        pytest.skip("a real roberta-base tokenizer is cached on this machine")
    with pytest.raises(ConfigError, match="tokenizer is not available"):
        clap.encode("text", [clap.load("text", "a dog barks")])


def test_clap_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CLAP weights not found: .*630k.*encoders.clap.weights"):
        build_space("clap", weights=str(tmp_path / "630k-fusion-best.pt"), device="cpu")


def test_melspec_stand_in_matches_librosa():
    import librosa

    from cmcr.encoders.melspec import AmplitudeToDB, MelSpectrogram

    g = np.random.default_rng(0)
    x = (g.standard_normal(48000) * 0.1).astype(np.float32)
    cfg = dict(sr=48000, n_fft=1024, hop_length=480, win_length=1024, n_mels=64, fmin=50, fmax=14000)
    ref = librosa.feature.melspectrogram(y=x, sr=cfg["sr"], n_fft=cfg["n_fft"], hop_length=cfg["hop_length"],
                                         win_length=cfg["win_length"], center=True, pad_mode="reflect", power=2.0,
                                         n_mels=cfg["n_mels"], norm=None, htk=True, fmin=cfg["fmin"], fmax=cfg["fmax"])
    ours = MelSpectrogram(sample_rate=cfg["sr"], n_fft=cfg["n_fft"], win_length=cfg["win_length"],
                          hop_length=cfg["hop_length"], n_mels=cfg["n_mels"], f_min=cfg["fmin"], f_max=cfg["fmax"])(
        torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-6 * ref.max())
    db = AmplitudeToDB(top_db=None)(torch.from_numpy(ref)).numpy()
    np.testing.assert_allclose(db, librosa.power_to_db(ref, ref=1.0, amin=1e-10, top_db=None), atol=1e-3)
