"""`setup: paper` end to end — the path every real user runs — with `dvc repro` in a temporary git repo.

Checkpoint files of the real architectures at full size with random weights, saved in the formats the
project loads (open_clip ViT-B-32-quickgelu state dict; laion_clap `630k-fusion-best.pt` layout — a dict
with `state_dict` and `module.` prefixes — plus an offline roberta-base-shaped tokenizer folder; ULIP-2
Point-BERT with an `argparse.Namespace` under `args`, as the published file, loaded with
`trust_checkpoint`); tiny corpora in all six §4.1 formats; manifests for both connections; all four
benchmarks under the paper's dataset names; the official `ulip_clip.pt` as a variant. Built from the
official release's real photos, 32 kHz sounds and Objaverse clouds.

Checks: `dvc repro` finishes; every table has its paper-dataset blocks with the paper's numbers beside
ours; object proposals are embedded by the real CLIP (one row per box); a SIGKILL of `dvc repro` during
`extract@clap` followed by `dvc repro` resumes from the finished shards and gives the same bytes as a
fresh extraction. A few minutes on 2 CPU cores.
"""

import argparse
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import copy_project

ROOT = Path(__file__).resolve().parents[1]
PAPER_DATASETS = {"retrieval": ["AVE", "Flickr-SoundNet"], "localization": ["VGGSS", "MUSIC-Solo"],
                  "counterfactual": ["Ex-VGGSS", "Ex-FlickrNet"], "zeroshot3d": ["ModelNet40"]}
#: the graph family reads each task's sets where a dataset has them (README "The MCR graph")
GRAPH_DATASETS = ["AudioCaps", "AVE", "ModelNet40", "User-Audio3D"]

pytestmark = pytest.mark.slow


def run(cmd, cwd, env, check=True):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def roberta_tokenizer_folder(folder: Path) -> Path:
    """A tokenizer folder in roberta-base's format (vocab.json + merges.txt, 50,265 entries): the 256
    byte-level symbols, the special tokens and filler entries, no merges — every text tokenises byte by byte."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    # byte-level BPE's alphabet (GPT-2 / RoBERTa): printable bytes stand for themselves, the others for 256 + n
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    for b in range(256):
        vocab[chr(b if b in printable else next(extra))] = len(vocab)
    while len(vocab) < 50264:
        vocab[f"<filler_{len(vocab)}>"] = len(vocab)
    vocab["<mask>"] = 50264
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def write_checkpoints(folder: Path) -> dict[str, str]:
    """Random-weight checkpoints of the real architectures, in the published files' formats."""
    import open_clip

    from cmcr.encoders.base import build_space

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32-quickgelu")
    torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    clap = build_space("clap", allow_random=True, device="cpu")
    torch.save({"epoch": 45, "state_dict": {f"module.{k}": v for k, v in clap.module.model.state_dict().items()}},
               folder / "630k-fusion-best.pt")
    ulip = build_space("ulip", allow_random=True, device="cpu", seed=3)
    torch.save({"epoch": 10, "args": argparse.Namespace(model="ULIP2_PointBERT_Colored", npoints=8192),
                "state_dict": {f"module.{k}": v for k, v in ulip.model.state_dict().items()}},
               folder / "pointbert_ULIP-2.pt")
    return {"clip": str(folder / "open_clip_pytorch_model.bin"), "clap": str(folder / "630k-fusion-best.pt"),
            "ulip": str(folder / "pointbert_ULIP-2.pt"), "tokenizer": str(roberta_tokenizer_folder(folder / "roberta-base"))}


def write_corpora(folder: Path) -> dict[str, str]:
    """The six §4.1 corpora, three captions each, in their published layouts."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "captions_train2017.json").write_text(json.dumps({"annotations": [
        {"caption": c} for c in ("a dog runs on a beach", "a red train at a station", "people at a barbecue")]}))
    (folder / "Train_GCC-training.tsv").write_text(
        "a bowl of fruit on a table\thttp://x/1.jpg\na white toilet in a bathroom\thttp://x/2.jpg\n"
        "a city street at night\thttp://x/3.jpg\n")
    (folder / "MSRVTT_data.json").write_text(json.dumps({"sentences": [
        {"caption": c} for c in ("a man is cooking meat", "a train passes by", "a woman sings a song")]}))
    (folder / "MAD_train.json").write_text(json.dumps({
        "1": {"sentence": "someone opens a door"}, "2": {"sentence": "a car drives away"},
        "3": {"sentence": "she walks into the kitchen"}}))
    pd.DataFrame({"caption": ["a dog barks twice", "a train horn blows", "meat sizzles on a grill"]}).to_csv(
        folder / "train.csv", index=False)
    pd.DataFrame({f"caption_{i}": [f"water flows {i}", f"a toilet flushes {i}"] for i in range(1, 6)}).to_csv(
        folder / "clotho_captions_development.csv", index=False)
    return {"coco": "captions_train2017.json", "cc3m": "Train_GCC-training.tsv", "msrvtt": "MSRVTT_data.json",
            "mad": "MAD_train.json", "audiocaps": "train.csv", "clotho": "clotho_captions_development.csv"}


def write_media(official: Path, folder: Path) -> dict[str, list[str]]:
    """Images, sounds and clouds: the release's real files plus variants of them (crops, parts, subsets)."""
    from PIL import Image

    from cmcr.sources.audio import read_audio

    folder.mkdir(parents=True, exist_ok=True)
    names = ("BBQ", "toilet", "train")
    images = [str(official / f"{n}.jpeg") for n in names]
    for n in names:
        with Image.open(official / f"{n}.jpeg") as img:
            img.convert("RGB").transpose(Image.FLIP_LEFT_RIGHT).save(folder / f"{n}_flipped.png")
        images.append(str(folder / f"{n}_flipped.png"))
    sounds = [str(official / f"{n}.wav") for n in names]
    import soundfile

    for n in names:
        wave = read_audio(official / f"{n}.wav", 32000)
        soundfile.write(folder / f"{n}_part.wav", wave[: len(wave) // 2], 32000)
        sounds.append(str(folder / f"{n}_part.wav"))
    clouds = [str(official / f"{n}.npy") for n in names]
    for i, n in enumerate(names):  # a plain N×3 .npy and a ModelNet-style .txt of the same shapes
        xyz = np.load(official / f"{n}.npy", allow_pickle=True).item()["xyz"].astype(np.float32)
        if i % 2:
            np.savetxt(folder / f"{n}.txt", xyz, delimiter=",")
            clouds.append(str(folder / f"{n}.txt"))
        else:
            np.save(folder / f"{n}_xyz.npy", xyz)
            clouds.append(str(folder / f"{n}_xyz.npy"))
    (folder / "broken.jpeg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "empty.wav").write_bytes(b"")
    touches = []  # a space of your own (tests/plugins/touch.py): one force signal per file, and one that is not 1-D
    for i in range(6):
        np.save(folder / f"touch{i}.npy", np.sin(np.linspace(0, 3 + i, 50 + 10 * i)).astype(np.float32))
        touches.append(str(folder / f"touch{i}.npy"))
    np.save(folder / "touch_bad.npy", np.zeros((4, 4), np.float32))
    return {"images": images, "sounds": sounds, "clouds": clouds, "broken": [str(folder / "broken.jpeg")],
            "broken_audio": [str(folder / "empty.wav")], "touches": touches, "broken_touch": [str(folder / "touch_bad.npy")]}


def write_manifests(media, folder: Path) -> dict[str, dict[str, dict[str, str]]]:
    """Parquet manifests of every set, under the paper's dataset names (README "Setups")."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)

    def manifest(name, **columns):
        path = folder / f"{name}.parquet"
        pd.DataFrame(columns).to_parquet(path)
        return {"manifest": str(path)}

    images, sounds, clouds = media["images"], media["sounds"], media["clouds"]
    sets = {"clip": {"image": manifest("imagenet", path=images + media["broken"])},
            "clap": {"audio": manifest("audioset", path=sounds)},
            "ulip": {"image": manifest("imagenet", path=images + media["broken"]),
                     "points": manifest("objaverse", path=clouds)}}
    sets["clip"]["eval_image@AVE"] = manifest("AVE_images", path=images[:4], pair_id=range(4))
    sets["clap"]["eval_audio@AVE"] = manifest("AVE_audio", path=sounds[:4], pair_id=range(4))
    # Flickr-SoundNet as real folders are: an unreadable image (pair 2) and an empty clip (pair 3)
    sets["clip"]["eval_image@Flickr-SoundNet"] = manifest(
        "Flickr_images", path=images[:2] + media["broken"] + images[3:5], pair_id=[100, 101, 102, 103, 104])
    sets["clap"]["eval_audio@Flickr-SoundNet"] = manifest(
        "Flickr_audio", path=sounds[:3] + media["broken_audio"] + sounds[4:5], pair_id=[100, 101, 102, 103, 104])
    for d in PAPER_DATASETS["localization"] + PAPER_DATASETS["counterfactual"]:
        negatives = d.startswith("Ex-")
        proposals, scenes = [], []
        for k, (image, sound) in enumerate(zip(images[:3], sounds[:3])):
            with Image.open(image) as img:
                w, h = img.size
            boxes = [(0, 0, w // 2, h // 2), (w // 4, h // 4, w, h), (w // 3, 0, w, h // 2)]
            proposals += [{"path": image, "scene_id": f"s{k}", "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]}
                          for b in boxes]
            positive = not (negatives and k == 2)
            scenes.append({"path": sounds[(k + 1) % 3] if not positive else sound, "scene_id": f"s{k}",
                           "positive": positive, "width": w, "height": h,
                           "gt_boxes": [[w // 4, h // 4, w - 1, h - 1]] if positive else []})
        sets["clip"][f"scene_proposals@{d}"] = manifest(f"{d}_proposals", **pd.DataFrame(proposals).to_dict("list"))
        sets["clap"][f"scene_audio@{d}"] = manifest(f"{d}_scenes", **pd.DataFrame(scenes).to_dict("list"))
    # true pairs for the paired-data references (e.g. VGGSound clips with their frames; captioned 3D models)
    sets["clip"]["paired_image@VGGSound"] = manifest("vggsound_frames", path=images[:4], pair_id=range(4))
    sets["clap"]["paired_audio@VGGSound"] = manifest("vggsound_audio", path=sounds[:4], pair_id=range(4))
    captions = ["a barbecue grill.", "a white toilet.", "a model train.", "a grill outdoors.", "a toilet seat.", "a train."]
    sets["clip"]["paired_text@Cap3D"] = {**manifest("cap3d_captions", caption=captions, pair_id=range(6)),
                                         "column": "caption"}
    sets["ulip"]["paired_points@Cap3D"] = manifest("cap3d_points", path=clouds, pair_id=range(6))
    classes = ["barbecue", "toilet", "train"]
    sets["ulip"]["eval_points@ModelNet40"] = manifest("modelnet40", path=clouds, concept=[0, 1, 2, 0, 1, 2])
    prompts = [(f"a point cloud of a {c}.", i) for i, c in enumerate(classes)] + [
        (f"a 3D model of a {c}.", i) for i, c in enumerate(classes)]
    sets["clip"]["prompts@ModelNet40"] = {**manifest("modelnet40_prompts", prompt=[p for p, _ in prompts],
                                                     label=[i for _, i in prompts]), "column": "prompt"}
    # the MCR graph's family: AudioCaps-style audio–caption pairs (no class columns: each pair its own class), a
    # user's audio–3D test set, and true audio–3D pairs for the paired-data reference graph
    sets["clap"]["graph_audio@AudioCaps"] = manifest("audiocaps_audio", path=sounds, pair_id=range(6))
    sets["clip"]["graph_text@AudioCaps"] = {**manifest("audiocaps_captions", caption=captions, pair_id=range(6)),
                                            "column": "caption"}
    sets["clap"]["graph_audio@User-Audio3D"] = manifest("audio3d_audio", path=sounds, pair_id=range(6),
                                                        concept=[0, 1, 2, 0, 1, 2])
    sets["ulip"]["graph_points@User-Audio3D"] = manifest("audio3d_points", path=clouds, pair_id=range(6))
    # a space of your own (plugins/touch.py): its images (shared with CLIP) and its memory of touch signals
    sets["touch"] = {"image": manifest("imagenet", path=images + media["broken"]),
                     "touch": manifest("touch_memory", path=media["touches"] + media["broken_touch"])}
    # a graph task of its own (graph_tasks.touch_image): Touch-and-Go-style touch–image pairs
    sets["touch"]["graph_touch@TouchAndGo"] = manifest("tag_touch", path=media["touches"], pair_id=range(6))
    sets["clip"]["graph_image@TouchAndGo"] = manifest("tag_images", path=images, pair_id=range(6))
    sets["clap"]["paired_audio_points@Audio3D-train"] = manifest("audio3d_train_audio", path=sounds, pair_id=range(6))
    sets["ulip"]["paired_points_audio@Audio3D-train"] = manifest("audio3d_train_points", path=clouds, pair_id=range(6))
    return sets


@pytest.fixture(scope="module")
def paper_repo(tmp_path_factory):
    from conftest import OFFICIAL as official_dir

    if not official_dir.is_dir():
        pytest.skip(f"official fixtures not found at {official_dir}")
    path = tmp_path_factory.mktemp("paper")
    user = tmp_path_factory.mktemp("user")  # the user's files live outside the repository
    copy_project(path)
    weights = write_checkpoints(user / "weights")
    corpora = write_corpora(user / "texts")
    media = write_media(official_dir, user / "media")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["setup"] = "paper"
    params["extraction"]["max_failure_rate"] = 0.2  # the broken JPEG: 1 of 7 memory images, 1 of 5 Flickr pairs
    params["paper"]["encoders"] = {
        "clip": {"weights": weights["clip"], "model_name": "ViT-B-32-quickgelu", "device": "cpu"},
        "clap": {"weights": weights["clap"], "tokenizer": weights["tokenizer"], "device": "cpu"},
        "ulip": {"weights": weights["ulip"], "trust_checkpoint": True, "trust_pickled_points": True, "device": "cpu"}}
    # a fourth space, the user's own: listed in spaces, its encoder from plugins/touch.py, linked to CLIP through
    # images (a declared link) and extended into CLIP by a graph — no code or dvc.yaml change
    shutil.copy(ROOT / "tests" / "plugins" / "touch.py", path / "plugins" / "touch.py")
    from cmcr.encoders.base import load_plugin

    load_plugin(path / "plugins" / "touch.py")[0].random_weights(str(user / "weights" / "touch.pt"), dim=32)
    params["spaces"] = ["clip", "clap", "ulip", "touch"]
    params["paper"]["encoders"]["touch"] = {"plugin": "plugins/touch.py", "weights": str(user / "weights" / "touch.pt"),
                                            "device": "cpu"}
    params["connections"]["clip_touch"] = {"link": {"spaces": ["clip", "touch"], "shared": "image",
                                                    "memory": {"clip": "text", "touch": "touch"}},
                                           "loss": {"intra_spaces": ["clip", "touch"]}}
    params["graphs"]["touch_into_clip"] = {"mode": "extend", "base": "clip", "spaces": ["clip", "touch"],
                                           "links": ["clip_touch"], "label": "Touch extended into CLIP"}
    # the closed form as a graph of its own (issue 30): CLAP and ULIP-2 into CLIP, centred Procrustes
    params["graphs"]["closed_into_clip"] = {"mode": "linear", "base": "clip", "spaces": ["clip", "clap", "ulip"],
                                            "links": ["clip_clap", "clip_ulip"], "map": "procrustes", "centre": True}
    params["graph_tasks"] = {"touch_image": {"query": {"space": "touch", "modality": "touch"},
                                             "gallery": {"space": "clip", "modality": "image"}}}
    params["paper"]["texts"]["files"] = {k: str(user / "texts" / v) for k, v in corpora.items()}
    params["paper"]["sets"] = write_manifests(media, user / "manifests")
    params["paper"]["extraction"] = {"batch_size": 2, "num_workers": 0, "shard_size": 2}
    params["benchmarks"] = PAPER_DATASETS | {"graph": GRAPH_DATASETS + ["TouchAndGo"]}
    params["graphs"]["paired_audio_3d"]["pairs"]["dataset"] = "Audio3D-train"
    params["seeds"] = [0, 1]
    params["projector"]["norm_stats"] = "modality"  # issue 30: each modality its own BatchNorm statistics (cmcr.norms)
    params["variants"] = {k: params["variants"][k] for k in ("K", "clip_ulip")}  # ablation rows: test_pipeline
    params["variants"]["paired"] = {"group": "reference", "paired": "VGGSound", "label": "Paired-data reference"}
    params["variants"]["paired_3d"] = {"group": "reference", "connection": "clip_ulip", "paired": "Cap3D",
                                       "label": "Paired-data reference (3D)"}
    params["variants"]["official"] = {"group": "table4", "label": "C-MCR (official release)",
                                      "official": {"release": "ulip_clip", "checkpoint": str(official_dir / "ulip_clip.pt")}}
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "HF_HUB_OFFLINE": "1", "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.com",
           # MKL's fast branch on purpose (a logged CMCR_ override): the real encoders' products are most of this
           # test's time, and MKL's cross-vendor COMPATIBLE branch halves their speed (~1 min of CI). This test
           # checks what the paper path does, not cross-machine bytes (tests/test_pipeline.py checks those)
           "CMCR_MKL_CBWR": "AUTO"}
    (path / ".gitignore").write_text("data/shards/\n")
    run(["git", "init", "-q"], path, env)
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", "paper setup"], path, env)

    # 1. `dvc repro`, killed with SIGKILL once extract@clap has finished its first shard
    proc = subprocess.Popen(["dvc", "repro"], cwd=path, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    first_shard = path / "data" / "shards" / "clap" / "text.shards"
    deadline = time.monotonic() + 600
    while not list(first_shard.glob("*/shard-00000.parquet")):
        assert proc.poll() is None, f"dvc repro ended before extract@clap wrote a shard:\n{proc.stdout.read()[-4000:]}"
        assert time.monotonic() < deadline, "no clap shard after 10 minutes"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    killed_log = proc.communicate()[0]
    done_before_resume = sorted(p.name for p in first_shard.glob("*/shard-*.parquet"))
    assert not (path / "data" / "embeddings" / "clap").exists()  # no half output for DVC to trust

    # 2. `dvc repro` again: resumes from the finished shards
    resumed = run(["dvc", "repro"], path, env)
    resumed_clap = {f.name: f.read_bytes() for f in sorted((path / "data" / "embeddings" / "clap").iterdir())}

    # 3. a fresh extraction of the same sets, from no shards, for comparison
    shutil.rmtree(path / "data" / "shards" / "clap")
    fresh = run(["dvc", "repro", "-f", "extract@clap"], path, env)
    fresh_clap = {f.name: f.read_bytes() for f in sorted((path / "data" / "embeddings" / "clap").iterdir())}
    return {"path": path, "env": env, "killed": killed_log, "shards_before_resume": done_before_resume,
            "resumed": resumed.stdout + resumed.stderr, "resumed_clap": resumed_clap, "fresh_clap": fresh_clap,
            "fresh": fresh.stdout + fresh.stderr, "params": params}


def test_resume_after_sigkill_reuses_shards_and_gives_the_same_bytes(paper_repo):
    assert "Running stage 'extract@clap'" in paper_repo["killed"]
    assert paper_repo["shards_before_resume"], "the kill left finished shards"
    resumed = paper_repo["resumed"]
    assert "Running stage 'extract@clip'" not in resumed  # finished before the kill, recorded in dvc.lock
    text_line = next(line for line in resumed.splitlines() if "text: " in line and "shards:" in line)
    skipped = int(re.search(r"(\d+) already done", text_line).group(1))
    assert skipped >= len(paper_repo["shards_before_resume"]) >= 1, text_line
    assert paper_repo["resumed_clap"].keys() == paper_repo["fresh_clap"].keys()
    for name, data in paper_repo["resumed_clap"].items():
        assert data == paper_repo["fresh_clap"][name], name
    assert "0 already done" in paper_repo["fresh"]


def test_every_table_has_its_paper_dataset_blocks(paper_repo):
    results = paper_repo["path"] / "results"
    expected = {"table1_retrieval.md": PAPER_DATASETS["retrieval"], "table2_localization.md": PAPER_DATASETS["localization"],
                "table3_counterfactual.md": PAPER_DATASETS["counterfactual"],
                "table4_zeroshot3d.md": PAPER_DATASETS["zeroshot3d"]}
    for table, datasets in expected.items():
        text = (results / table).read_text()
        for dataset in datasets:
            assert f"| {dataset} | C-MCR (ours)" in text, (table, dataset)
            assert f"| {dataset} | C-MCR (paper) |" in text, (table, dataset)
            assert f"| {dataset} | No connection" in text, (table, dataset)
        blocks = [text.index(f"| {dataset} |") for dataset in datasets]
        assert blocks == sorted(blocks), f"{table}: blocks not in the order params lists them"
    assert "| ModelNet40 | C-MCR (paper) | 64.90 | 87.00 | 92.80 |" in (results / "table4_zeroshot3d.md").read_text()
    assert "| ModelNet40 | C-MCR (official release) |" in (results / "table4_zeroshot3d.md").read_text()
    # the paired-data references, trained on the user's true pairs, are rows of every table; two seeds each
    assert "| ModelNet40 | Paired-data reference (3D) |" in (results / "table4_zeroshot3d.md").read_text()
    assert "| AVE | Paired-data reference |" in (results / "table1_retrieval.md").read_text()
    table5 = (results / "table5_ablations.md").read_text()
    assert "AVE A2I mAP" in table5 and "Flickr-SoundNet A2I mAP" in table5 and "paper AVE A2I" in table5
    # pairs are joined by pair_id: the two failed items (different rows) drop two pairs, the rest align
    retrieval = json.loads((paper_repo["path"] / "metrics" / "retrieval.json").read_text())
    assert set(retrieval["AVE"]["K"]["seeds"]) == set(retrieval["AVE"]["paired"]["seeds"]) == {"0", "1"}
    assert retrieval["Flickr-SoundNet"]["pairs"] == {"scored": 3, "listed": 5}
    assert retrieval["AVE"]["pairs"] == {"scored": 4, "listed": 4}
    assert "Flickr-SoundNet 3 of 5" in (results / "table1_retrieval.md").read_text()
    items = pd.read_parquet(paper_repo["path"] / "data" / "eval" / "retrieval_items.parquet")
    assert len(items[(items["dataset"] == "Flickr-SoundNet") & (items["variant"] == "K")]) == 2 * 2 * 3  # seeds, directions, pairs
    for benchmark, datasets in PAPER_DATASETS.items():
        metrics = json.loads((paper_repo["path"] / "metrics" / f"{benchmark}.json").read_text())
        assert set(metrics) == set(datasets) and not any("skipped" in m for m in metrics.values())


def test_real_encoders_embed_every_set_and_proposals_as_crops(paper_repo):
    emb = paper_repo["path"] / "data" / "embeddings"
    for d in PAPER_DATASETS["localization"] + PAPER_DATASETS["counterfactual"]:
        proposals = np.load(emb / "clip" / f"scene_proposals@{d}.npy")
        assert proposals.shape == (9, 512)  # one row per box, none failed
        assert np.linalg.matrix_rank(proposals) == 9  # nine different crops, not one image nine times
    failures = pd.read_parquet(emb / "clip" / "failures.parquet")
    assert failures["item"].str.endswith("broken.jpeg").tolist() == [True, True]
    assert failures["set"].tolist() == ["image", "eval_image@Flickr-SoundNet"]
    texts = pd.read_parquet(paper_repo["path"] / "data" / "texts.parquet")
    assert texts["source"].value_counts().to_dict() == {"image-text": 6, "video-text": 6, "audio-text": 13}
    assert np.load(emb / "clip" / "text.npy").shape == np.load(emb / "clap" / "text.npy").shape == (25, 512)
    assert pd.read_parquet(emb / "ulip" / "failures.parquet")["item"].str.endswith("broken.jpeg").tolist() == [True]
    assert np.load(emb / "ulip" / "points.npy").shape == (6, 512)
    assert pd.read_parquet(emb / "clap" / "scene_audio@Ex-VGGSS.parquet")["positive"].tolist() == [True, True, False]
    status = run(["dvc", "status"], paper_repo["path"], paper_repo["env"]).stdout
    assert "up to date" in status


def test_api_and_pages_on_the_paper_setup(paper_repo):
    """Issue 10 on the real user's path: the API with the real encoders of `paper.encoders` (random weights in the
    published file formats) embeds a file exactly as the pipeline extracted and projected it; examples.html is
    written for the paper datasets (and loads in headless Chromium where installed)."""
    import torch

    from cmcr.api import ConnectedModel
    from cmcr.pages import check_page
    from conftest import have_browser
    from cmcr.graph import load_unit

    path = paper_repo["path"]
    model = ConnectedModel.from_pipeline(path, "K")
    projectors = load_unit(path / "models" / "connections" / "K" / "seed0.pt").projectors
    for space, modality, name in (("clip", "image", "eval_image@AVE"), ("clap", "audio", "eval_audio@AVE")):
        table = pd.read_parquet(path / "data" / "embeddings" / space / f"{name}.parquet")
        raw = np.load(path / "data" / "embeddings" / space / f"{name}.npy")
        with torch.no_grad():
            pipeline = projectors[space].embed(torch.from_numpy(raw[:2]), modality).numpy()  # its own statistics
        api = model.embed(modality, table["path"].tolist()[:2])
        assert np.abs(api - pipeline).max() <= 1e-5, (space, np.abs(api - pipeline).max())
    examples = (path / "results" / "examples.html").read_text()
    assert "Audio–image retrieval (AVE)" in examples and "Zero-shot 3D classification (ModelNet40)" in examples
    if have_browser():
        assert check_page(path / "results" / "examples.html").ok


def test_the_graphs_train_and_score_on_the_users_sets(paper_repo):
    """Issue 22 on the real user's path: joint, extend and the audio–3D paired reference train from the real
    encoders' embeddings (random weights, published formats); each graph task runs on the listed datasets that
    have its sets (AudioCaps: audio↔text, no class columns → each pair its own class; the user's audio–3D set;
    AVE; ModelNet40) and is skipped, with its reason, on the others; a graph checkpoint embeds a sound and a point
    cloud through the API exactly as the pipeline projected them."""
    import torch

    from cmcr.api import ConnectedModel
    from cmcr.graph import load_unit

    path = paper_repo["path"]
    graph = json.loads((path / "metrics" / "graph.json").read_text())
    assert set(graph) == set(GRAPH_DATASETS) | {"TouchAndGo"}
    scored = {(d, t) for d, tasks in graph.items() for t, m in tasks.items() if "skipped" not in m}
    assert scored == {("AudioCaps", "audio_text"), ("AVE", "audio_image"), ("ModelNet40", "points_text"),
                      ("User-Audio3D", "audio_points"), ("TouchAndGo", "touch_image")}
    audio_text = graph["AudioCaps"]["audio_text"]
    assert audio_text["ceiling"]["A2T"]["mAP"] == 100.0  # no class columns: every caption its own class
    for name in ("joint", "extend"):
        assert set(audio_text[name]["seeds"]) == {"0", "1"}
    assert {"joint", "extend", "paired_audio_3d", "random", "ceiling"} <= set(graph["User-Audio3D"]["audio_points"])
    table = (path / "results" / "graph.md").read_text()
    assert "| AudioCaps | Ex-MCR extend: CLAP, ULIP into CLIP |" in table and "| User-Audio3D | Paired-data reference" in table
    model = ConnectedModel.from_pipeline(path, graph="extend")
    result = load_unit(path / "models" / "graphs" / "extend" / "seed0.pt")
    for space, modality, name in (("clap", "audio", "graph_audio@User-Audio3D"), ("ulip", "points", "graph_points@User-Audio3D")):
        table = pd.read_parquet(path / "data" / "embeddings" / space / f"{name}.parquet")
        raw = np.load(path / "data" / "embeddings" / space / f"{name}.npy")
        with torch.no_grad():
            pipeline = result.projectors[space].embed(torch.from_numpy(raw[:2]), modality).numpy()
        # the API's projection of the pipeline's own rows is the pipeline's, to the bit; encoding the files again
        # differs by the encoder's batch-size float noise (≤ 1e-5), which the leaves' per-modality statistics —
        # fitted on this test's handful of items, so with small variances — may amplify to a few 1e-5
        np.testing.assert_array_equal(model.project(space, modality, raw[:2]), pipeline)
        assert np.abs(model.encode_raw(space, modality, table["path"].tolist()[:2]) - raw[:2]).max() <= 1e-5, space
        assert np.abs(model.embed(modality, table["path"].tolist()[:2]) - pipeline).max() <= 1e-4, space
    assert model.spaces_for("text") == ["clip"] and model.spaces_for("points") == ["ulip"]
    # issue 30: the closed-form graph loads and embeds like any other (its centring told the modality by the API),
    # scored once (deterministic), beside the closed-form context rows every table carries
    closed = ConnectedModel.from_pipeline(path, graph="closed_into_clip")
    fitted = load_unit(path / "models" / "graphs" / "closed_into_clip" / "seed0.pt")
    assert fitted.projectors["clap"].kind == "linear" and fitted.projectors["clap"].modalities == ("text", "audio")
    table = pd.read_parquet(path / "data" / "embeddings" / "clap" / "graph_audio@User-Audio3D.parquet")
    raw = np.load(path / "data" / "embeddings" / "clap" / "graph_audio@User-Audio3D.npy")
    with torch.no_grad():
        pipeline = fitted.projectors["clap"].embed(torch.from_numpy(raw[:2]), "audio").numpy()
    assert np.abs(closed.embed("audio", table["path"].tolist()[:2]) - pipeline).max() <= 1e-5
    points = graph["User-Audio3D"]["audio_points"]
    # two link sets among the graphs (CLAP/ULIP into CLIP; the touch space into CLIP): a set of rows for each
    assert "seeds" not in points["closed_into_clip"] and points["closed_into_clip"] == points["linear_procrustes_centred@joint"]
    assert "linear_ridge@touch_into_clip" in graph["TouchAndGo"]["touch_image"]


def test_a_space_of_your_own_runs_through_the_pipeline(paper_repo):
    """Issue 22, a fourth space on the real user's path: `spaces` lists `touch`, plugins/touch.py registers its
    encoder (random weights in its own file format), a declared link connects it to CLIP through images and a graph
    extends it into CLIP — no code, no dvc.yaml change. Its items are extracted with per-item failures recorded;
    the graph trains; the API embeds a touch file through the plugin exactly as the pipeline projected it, and
    touch signals retrieve images in CLIP's space; an edit to the plugin makes extract@touch stale."""
    import torch

    from cmcr.api import ConnectedModel
    from cmcr.graph import load_unit

    path, env = paper_repo["path"], paper_repo["env"]
    emb = path / "data" / "embeddings" / "touch"
    assert np.load(emb / "touch.npy").shape == (6, 32) and np.load(emb / "image.npy").shape == (6, 32)
    failures = pd.read_parquet(emb / "failures.parquet")
    assert sorted(Path(i).name for i in failures["item"]) == ["broken.jpeg", "touch_bad.npy"]
    assert "1-D array" in failures.set_index("set").loc["touch", "reason"]
    result = load_unit(path / "models" / "graphs" / "touch_into_clip" / "seed1.pt")
    assert result.graph.modalities() == {"image": "clip", "text": "clip", "touch": "touch"}
    assert (result.projectors["touch"].in_dim, result.projectors["touch"].out_dim) == (32, 512)
    graph = json.loads((path / "metrics" / "graph.json").read_text())
    assert "touch_into_clip" in graph["AVE"]["audio_image"]["not_applicable"]  # it embeds no audio
    touch_image = graph["TouchAndGo"]["touch_image"]  # the task of its own: touch signals retrieve their images
    assert set(touch_image["touch_into_clip"]["seeds"]) == {"0", "1"} and touch_image["ceiling"]["touch2I"]["mAP"] == 100.0
    assert touch_image["not_applicable"]["extend"] == "embeds no touch (touch)"
    assert touch_image["pairs"] == {"scored": 6, "listed": 6}
    table_md = (path / "results" / "graph.md").read_text()
    assert "touch→I mAP" in table_md and "| TouchAndGo | Touch extended into CLIP |" in table_md
    model = ConnectedModel.from_pipeline(path, graph="touch_into_clip", seed=1)
    assert model.spaces_for("touch") == ["touch"] and model.spaces_for("image") == ["clip"]
    table = pd.read_parquet(emb / "touch.parquet")
    with torch.no_grad():
        pipeline = result.projectors["touch"].embed(torch.from_numpy(np.load(emb / "touch.npy")[:3]), "touch").numpy()
    assert result.projectors["touch"].norm_modalities() == ("image", "touch")  # projector.norm_stats: modality
    assert np.abs(model.embed("touch", table["path"].tolist()[:3]) - pipeline).max() <= 1e-5
    images = pd.read_parquet(path / "data" / "embeddings" / "clip" / "image.parquet")["path"].tolist()[:3]
    scores = model.embed("touch", table["path"].tolist()[:2]) @ model.embed("image", images).T
    assert scores.shape == (2, 3) and np.isfinite(scores).all()
    from typer.testing import CliRunner

    from cmcr.cli import app

    runner, out = CliRunner(), path.parent / "touch_index"
    common = ["--root", str(path), "--graph", "touch_into_clip", "--seed", "1"]
    res = runner.invoke(app, ["index", *common, "--out", str(out), "--modality", "touch", "--manifest",
                              str(paper_repo["params"]["paper"]["sets"]["touch"]["touch"]["manifest"]),
                              "--max-failure-rate", "0.2"])
    assert res.exit_code == 0 and "6 touch items indexed, 1 failed" in res.output, res.output
    res = runner.invoke(app, ["search", *common, "--index", str(out), "--query", table["path"][2],
                              "--query-modality", "touch", "-k", "1"])
    assert res.exit_code == 0 and Path(table["path"][2]).name in res.output, res.output  # a signal finds itself
    res = runner.invoke(app, ["index", *common, "--out", str(out), "--modality", "smell", "--manifest",
                              str(paper_repo["params"]["paper"]["sets"]["touch"]["touch"]["manifest"])])
    said = " ".join(res.output.replace("│", " ").split())  # typer's error panel wraps the line
    assert res.exit_code == 2 and "graph touch_into_clip embeds image, text, touch, not smell" in said, res.output
    plugin = path / "plugins" / "touch.py"
    original = plugin.read_text()
    try:
        plugin.write_text(original + "\n# edited\n")
        status = run(["dvc", "status", "extract@touch"], path, env).stdout
        assert "extract@touch" in status and "plugins" in status, status
    finally:
        plugin.write_text(original)
