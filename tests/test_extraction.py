"""Sharded extraction: kill-and-resume gives identical bytes; ranks split the work; failures are recorded."""

import filecmp
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cmcr.encoders.demo import DemoSpace, DemoSpaceModel
from cmcr.extraction import EncoderError, FailureRateError, extract_sharded
from cmcr.items import Item
from cmcr.world import render_image


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(23):
        path = folder / f"{i:03d}.png"
        Image.fromarray(render_image(i % 12, i % 3, rng)).save(path)
        paths.append(str(path))
    (folder / "bad.png").write_bytes(b"not a png")
    paths.insert(7, str(folder / "bad.png"))
    return paths


@pytest.fixture(scope="module")
def space():
    torch.manual_seed(0)
    return DemoSpace(DemoSpaceModel("clip", 16, ["a", "b"]))


def outputs(folder):
    return [folder / f for f in ("clip_image.npy", "clip_image.parquet", "clip_image.failures.parquet")]


def run(space, images, folder, **kw):
    ids = [f"img{i}" for i in range(len(images))]
    return extract_sharded(space, "image", images, ids, folder, "clip_image", shard_size=5, batch_size=2,
                           progress=False, max_failure_rate=0.1, **kw)


def test_kill_and_resume_is_byte_identical(space, images, tmp_path):
    full = run(space, images, tmp_path / "full")
    assert full.items == 24 and full.embedded == 23 and full.failed == 1 and full.shards_done == 5

    class Killed(RuntimeError):
        pass

    calls = {"n": 0}
    original = space.encode

    def dying(modality, batch):
        calls["n"] += 1
        if calls["n"] == 8:  # shards 0 and 1 took 3 batches each; die in the middle of shard 2
            raise Killed()
        return original(modality, batch)

    space.encode = dying
    with pytest.raises(EncoderError, match="demo_clip image encoder failed on clip_image items .*Killed"):
        run(space, images, tmp_path / "resumed")
    space.encode = original
    assert not (tmp_path / "resumed" / "clip_image.npy").exists()  # nothing merged from a partial run
    resumed = run(space, images, tmp_path / "resumed")
    assert resumed.shards_skipped == 2 and resumed.shards_done == 3
    for a, b in zip(outputs(tmp_path / "full"), outputs(tmp_path / "resumed")):
        assert filecmp.cmp(a, b, shallow=False), a.name


def test_ranks_share_shards_and_merge_to_the_same_bytes(space, images, tmp_path):
    run(space, images, tmp_path / "single")
    first = run(space, images, tmp_path / "multi", rank=0, world_size=2)
    assert not first.merged and first.shards_done == 3  # shards 0, 2, 4
    second = run(space, images, tmp_path / "multi", rank=1, world_size=2)
    assert second.merged and second.shards_done == 2
    for a, b in zip(outputs(tmp_path / "single"), outputs(tmp_path / "multi")):
        assert filecmp.cmp(a, b, shallow=False), a.name


def test_failures_are_recorded_and_the_rate_enforced(space, images, tmp_path):
    import pandas as pd

    run(space, images, tmp_path / "f")
    failures = pd.read_parquet(tmp_path / "f" / "clip_image.failures.parquet")
    assert failures["id"].tolist() == ["img7"] and "bad.png" in failures["reason"][0]
    kept = pd.read_parquet(tmp_path / "f" / "clip_image.parquet")
    assert len(kept) == np.load(tmp_path / "f" / "clip_image.npy").shape[0] == 23 and 7 not in kept["position"].tolist()
    # Finding 8 (issue 13): a run stopped by its failure rate leaves no merged embeddings (even stale ones),
    # only the failures table
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "x.npy").write_bytes(b"from an earlier run")
    with pytest.raises(FailureRateError, match=r"1 of 24 items failed .* > 1.0%.*nothing merged; to keep going "
                                               r"without them, raise --rate \(e.g. to 0.042\)$"):
        extract_sharded(space, "image", images, [f"i{i}" for i in range(24)], tmp_path / "g", "x", shard_size=50,
                        progress=False, max_failure_rate=0.01, rate_option="--rate")
    assert sorted(p.name for p in (tmp_path / "g").iterdir() if p.is_file()) == ["x.failures.parquet"]
    assert pd.read_parquet(tmp_path / "g" / "x.failures.parquet")["position"].tolist() == [7]


def test_workers_give_the_same_result(space, images, tmp_path):
    run(space, images, tmp_path / "w0")
    run(space, images, tmp_path / "w2", num_workers=2)
    assert filecmp.cmp(tmp_path / "w0" / "clip_image.npy", tmp_path / "w2" / "clip_image.npy", shallow=False)


def test_cli_extract_with_the_demo_space(space, images, tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from cmcr.artifacts import save_torch
    from cmcr.cli import app

    save_torch(tmp_path / "space.pt", space.checkpoint())
    pd.DataFrame({"path": images, "key": [f"k{i}" for i in range(len(images))]}).to_parquet(tmp_path / "items.parquet")
    res = CliRunner().invoke(app, ["extract", "--space", "demo_clip", "--modality", "image", "--items",
                                   str(tmp_path / "items.parquet"), "--column", "path", "--id-column", "key",
                                   "--out-dir", str(tmp_path / "out"), "--name", "clip_image", "--weights",
                                   str(tmp_path / "space.pt"), "--shard-size", "10", "--max-failure-rate", "0.1"])
    assert res.exit_code == 0, res.output
    assert "23 embedded, 1 failed of 24" in res.output
    kept = pd.read_parquet(tmp_path / "out" / "clip_image.parquet")
    assert kept["id"].tolist()[:8] == ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k8"]
    # --devices 2: two worker processes (no GPU here), the same bytes
    res = CliRunner().invoke(app, ["extract", "--space", "demo_clip", "--modality", "image", "--items",
                                   str(tmp_path / "items.parquet"), "--column", "path", "--id-column", "key",
                                   "--out-dir", str(tmp_path / "two"), "--name", "clip_image", "--weights",
                                   str(tmp_path / "space.pt"), "--shard-size", "10", "--max-failure-rate", "0.1",
                                   "--devices", "2"])
    assert res.exit_code == 0 and "23 embedded, 1 failed of 24" in res.output, res.output
    assert filecmp.cmp(tmp_path / "out" / "clip_image.npy", tmp_path / "two" / "clip_image.npy", shallow=False)


def test_mixed_precision_only_on_cuda():
    from cmcr.device import amp_settings

    assert amp_settings("bf16", torch.device("cpu"))["enabled"] is False
    gpu = amp_settings("bf16", torch.device("cuda"))
    assert gpu == {"dtype": torch.bfloat16, "enabled": True}
    assert amp_settings("fp32", torch.device("cuda"))["enabled"] is False
    with pytest.raises(ValueError, match="precision"):
        amp_settings("int8", torch.device("cpu"))


def test_shards_of_another_run_are_never_reused(space, images, tmp_path, caplog):
    """Other weights, other items or another shard size → a new run folder, not stale shards."""
    import json
    import logging

    first = run(space, images, tmp_path)
    reference = np.load(tmp_path / "clip_image.npy")
    assert first.shards_done == 5
    again = run(space, images, tmp_path)
    assert again.shards_skipped == 5 and again.shards_done == 0  # same run: resumed, nothing recomputed

    torch.manual_seed(1)
    other = DemoSpace(DemoSpaceModel("clip", 16, ["a", "b"]))  # same architecture, other weights
    with caplog.at_level(logging.WARNING, logger="cmcr.extraction"):
        changed = run(other, images, tmp_path)
    assert changed.shards_done == 5 and changed.shards_skipped == 0
    assert "other run(s)" in caplog.text
    expected = other.encode("image", [other.load("image", p) for p in images if not p.endswith("bad.png")]).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "clip_image.npy"), expected, atol=1e-6)
    assert not np.allclose(np.load(tmp_path / "clip_image.npy"), reference)

    fewer = run(space, images[:-4], tmp_path)  # other items
    assert fewer.shards_done == 4 and np.load(tmp_path / "clip_image.npy").shape[0] == 19
    ids = [f"img{i}" for i in range(len(images))]
    resized = extract_sharded(space, "image", images, ids, tmp_path, "clip_image", shard_size=7, batch_size=2,
                              progress=False, max_failure_rate=0.1)
    assert resized.shards_done == 4  # other batches: equal up to float rounding, so not the same run
    np.testing.assert_allclose(np.load(tmp_path / "clip_image.npy"), reference, atol=1e-6)
    folders = sorted((tmp_path / "clip_image.shards").iterdir())
    assert len(folders) == 4
    described = [json.loads((f / "run.json").read_text()) for f in folders]
    assert sorted(d["shard_size"] for d in described) == [5, 5, 5, 7]
    assert len({d["space"]["weights"] for d in described}) == 2


def test_space_identity_covers_weights_and_settings():
    from cmcr.encoders.pointbert import PointBertConfig
    from cmcr.encoders.base import build_space

    torch.manual_seed(0)
    a = DemoSpace(DemoSpaceModel("clip", 16, ["a", "b"]))
    torch.manual_seed(0)
    b = DemoSpace(DemoSpaceModel("clip", 16, ["a", "b"]))
    assert a.identity() == b.identity()
    with torch.no_grad():
        b.model.logit_scale += 1e-6
    b._identity = None
    assert a.identity()["weights"] != b.identity()["weights"]
    torch.manual_seed(0)
    small = build_space("ulip", allow_random=True, device="cpu", config=PointBertConfig(npoints=2048, num_group=64, depth=1))
    settings = small.identity()["settings"]
    assert settings["cfg"]["npoints"] == 2048 and settings["amp"]["enabled"] is False
    assert small.identity()["class"] == "cmcr.encoders.pointbert.UlipSpace"


def test_cli_lists_and_prunes_shard_runs(space, images, tmp_path):
    from typer.testing import CliRunner

    from cmcr.cli import app
    from cmcr.extraction import shard_runs

    run(space, images[:-4], tmp_path)  # an older run (fewer items)…
    ids = [f"img{i}" for i in range(len(images))]
    extract_sharded(space, "image", images, ids, tmp_path, "clip_image", shard_size=5, batch_size=2, progress=False,
                    max_failure_rate=0.1, rank=0, world_size=2)  # …and a current one, half done (rank 0 of 2)
    runs = shard_runs(tmp_path).sort_values("items")
    assert runs["items"].tolist() == [20, 24] and runs["shards"].tolist() == [4, 5]
    assert runs["shards_done"].tolist() == [4, 3] and runs["merged_here"].tolist() == [True, False]
    extract_sharded(space, "image", images, ids, tmp_path, "clip_image", shard_size=5, batch_size=2, progress=False,
                    max_failure_rate=0.1, rank=1, world_size=2)  # the last rank merges
    runs = shard_runs(tmp_path).sort_values("items")
    assert runs["shards_done"].tolist() == [4, 5] and runs["merged_here"].tolist() == [False, True]
    old = runs["key"].iloc[0]
    res = CliRunner().invoke(app, ["shards", str(tmp_path), "--prune"])
    assert res.exit_code == 0, res.output
    assert f"removed {tmp_path / 'clip_image.shards' / old}" in res.output
    assert shard_runs(tmp_path)["items"].tolist() == [24]
    assert np.load(tmp_path / "clip_image.npy").shape == (23, 16)
    res = CliRunner().invoke(app, ["shards", str(tmp_path), "--remove", "feedbeef"])
    assert res.exit_code != 0 and "no run ['feedbeef']" in res.output


def test_object_proposals_are_crops_for_every_image_encoder(space, images, tmp_path):
    """One item type: an Item with a box is the crop of its image for the demo, CLIP and ULIP's image tower."""
    import json

    import open_clip

    from cmcr.encoders.base import build_space
    from cmcr.encoders.pointbert import PointBertConfig

    path, box = images[0], (4, 2, 30, 28)
    cropped = tmp_path / "crop.png"
    with Image.open(path) as img:
        img.convert("RGB").crop(box).save(cropped)
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "cmcr-tiny-clip-crop.json").write_text(json.dumps({
        "embed_dim": 16, "quick_gelu": True, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(folder)
    clip = build_space("clip", model_name="cmcr-tiny-clip-crop", allow_random=True, device="cpu")
    ulip = build_space("ulip", allow_random=True, device="cpu", config=PointBertConfig(npoints=256, num_group=8, depth=1))
    for encoder in (space, clip, ulip):
        as_item = encoder.load("image", Item(path, box))
        assert torch.equal(as_item, encoder.load("image", str(cropped))), encoder.name
        assert not torch.equal(as_item, encoder.load("image", path))
    out = extract_sharded(clip, "image", [Item(path, box), Item(path, (0, 0, 99, 99)), Item(path)], ["a", "b", "c"],
                          tmp_path / "x", "proposals", shard_size=2, progress=False, max_failure_rate=0.5)
    assert (out.embedded, out.failed) == (2, 1)
    import pandas as pd

    failures = pd.read_parquet(tmp_path / "x" / "proposals.failures.parquet")
    assert failures["id"].tolist() == ["b"] and "is not inside the 32×32 image" in failures["reason"][0]


def test_any_loader_exception_is_a_per_item_failure_but_encoder_errors_stop(space, images, tmp_path):
    import pandas as pd

    class Flaky(DemoSpace):
        def load(self, modality, item):
            if str(item).endswith("003.png"):
                raise AttributeError("'tuple' object has no attribute 'seek'")  # e.g. a loader bug on one item
            return super().load(modality, item)

    flaky = Flaky(space.model)
    out = extract_sharded(flaky, "image", images, [f"i{i}" for i in range(len(images))], tmp_path, "x",
                          shard_size=50, progress=False, max_failure_rate=0.2)
    failures = pd.read_parquet(tmp_path / "x.failures.parquet")
    assert out.failed == 2 and sorted(failures["id"]) == ["i3", "i7"]
    assert "AttributeError: 'tuple' object has no attribute 'seek'" in failures["reason"].tolist()

    class Broken(DemoSpace):
        def encode_batch(self, modality, batch):
            raise RuntimeError("CUDA out of memory")

    with pytest.raises(EncoderError, match=r"demo_clip image encoder failed on y items 0–1 \(2 items\): RuntimeError: CUDA out"):
        extract_sharded(Broken(space.model), "image", images[:2], ["a", "b"], tmp_path, "y", progress=False)


def test_item_type():
    from cmcr.items import as_item, file_of, manifest_items

    assert str(Item("a.png", (1, 2, 3, 4))) == "a.png#box=1,2,3,4" and str(Item("a.png")) == "a.png"
    assert as_item("a.png") == Item("a.png")
    with pytest.raises(ValueError, match="four finite numbers"):
        Item("a.png", (1, 2, 3))
    with pytest.raises(ValueError, match="crops images only"):
        file_of(Item("a.wav", (0, 0, 1, 1)), "audio")
    import pandas as pd

    table = pd.DataFrame({"path": ["s.png", "s.png"], "x1": [0, 5], "y1": [0, 5], "x2": [4, 9], "y2": [4, 9]})
    assert manifest_items(table, "path", "image") == [Item("s.png", (0, 0, 4, 4)), Item("s.png", (5, 5, 9, 9))]
    assert manifest_items(table, "path", "audio") == [Item("s.png"), Item("s.png")]
    with pytest.raises(ValueError, match="no column 'file'"):
        manifest_items(table, "file", "image")


def test_a_changed_file_re_embeds_its_shard_only(space, images, tmp_path):
    """A file replaced in place re-embeds its shard (and only it); a failed item is retried once fixed."""
    import os
    import shutil

    folder = tmp_path / "imgs"
    folder.mkdir()
    local = []
    for p in images:
        shutil.copy2(p, folder / Path(p).name)
        local.append(str(folder / Path(p).name))
    first = run(space, local, tmp_path / "out")
    assert first.shards_done == 5 and first.failed == 1
    changed = Path(local[12])  # shard 2 (items 10–14)
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))  # a later mtime
    second = run(space, local, tmp_path / "out")
    assert (second.shards_done, second.shards_changed, second.shards_skipped) == (1, 1, 4)
    fresh = run(space, local, tmp_path / "fresh")
    for a, b in zip(outputs(tmp_path / "out"), outputs(tmp_path / "fresh")):
        assert filecmp.cmp(a, b, shallow=False), a.name
    # the unreadable file (item 7, shard 1) is fixed: its shard is embedded again and the item kept
    shutil.copy2(local[0], local[7])
    third = run(space, local, tmp_path / "out")
    assert (third.shards_done, third.shards_skipped, third.failed, third.embedded) == (1, 4, 0, 24)
    again = run(space, local, tmp_path / "out")
    assert (again.shards_done, again.shards_skipped) == (0, 5)


def test_a_stage_stopped_by_its_failure_rate_prints_one_line(tmp_path):
    """Issue 23, point 7, for the stages: `run()` of stages/common.py prints a FailureRateError as one line."""
    import subprocess
    import sys

    script = tmp_path / "stage.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / "stages")!r})
from common import run
from cmcr.extraction import check_failure_rate

def main() -> None:
    check_failure_rate("clap_audio", 3, 40, 0.01, "see x.failures.parquet; nothing merged",
                       "extraction.max_failure_rate in params.yaml")

run(main)
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [
        "stage: error: clap_audio: 3 of 40 items failed (7.5% > 1.0%); see x.failures.parquet; nothing merged; "
        "to keep going without them, raise extraction.max_failure_rate in params.yaml (e.g. to 0.075)"]


def test_workers_on_several_devices_merge_to_the_bytes_of_one_process(space, images, tmp_path):
    """Issue 23, point 4: one `dvc repro` uses every device. The stage starts one worker per device itself
    (PyTorch's launcher, spawn), each taking its shards; merged once. On the CPU: two worker processes."""
    import pandas as pd

    from cmcr.artifacts import save_torch
    from cmcr.extraction import ExtractionJob, extract_on_devices

    save_torch(tmp_path / "space.pt", space.checkpoint())
    ids = [f"img{i}" for i in range(len(images))]
    texts = [f"a {w} bell" for w in ("red", "blue", "small", "big", "old", "new")] + [" "]  # a blank text fails
    jobs = [ExtractionJob("clip_image", "image", images, ids),
            ExtractionJob("clip_text", "text", texts, [f"t{i}" for i in range(len(texts))])]
    options = dict(shard_size=4, batch_size=2, progress=False, max_failure_rate=0.2)
    kwargs = {"checkpoint": str(tmp_path / "space.pt")}
    one = extract_on_devices("demo_clip", kwargs, jobs, tmp_path / "one", [None], **options)
    two = extract_on_devices("demo_clip", kwargs, jobs, tmp_path / "two", ["cpu", "cpu"], **options)
    for name in ("clip_image", "clip_text"):
        assert two[name].merged and (two[name].embedded, two[name].failed) == (one[name].embedded, one[name].failed)
        for suffix in (".npy", ".parquet", ".failures.parquet"):
            assert filecmp.cmp(tmp_path / "one" / f"{name}{suffix}", tmp_path / "two" / f"{name}{suffix}",
                               shallow=False), name + suffix
    assert (one["clip_image"].failed, one["clip_text"].failed) == (1, 1)  # bad.png and the empty text
    # both ranks wrote shards: rank 1 (the spawned process) took the odd ones
    run_dir = next((tmp_path / "two" / "clip_image.shards").iterdir())
    assert len(list(run_dir.glob("shard-*.parquet"))) == 6
    assert pd.read_parquet(tmp_path / "two" / "clip_image.parquet")["id"].tolist() == [i for i in ids if i != "img7"]


def test_a_failed_worker_stops_the_run_naming_it(space, images, tmp_path):
    from cmcr.artifacts import save_torch
    from cmcr.encoders.base import register
    from cmcr.encoders.demo import DemoSpace
    from cmcr.extraction import ExtractionJob, extract_on_devices

    save_torch(tmp_path / "space.pt", space.checkpoint())
    register("only_in_this_process")(lambda checkpoint: DemoSpace.from_checkpoint(checkpoint))  # unknown to workers
    jobs = [ExtractionJob("clip_image", "image", images[:6], [f"i{i}" for i in range(6)])]
    with pytest.raises(EncoderError, match=r"only_in_this_process: extraction worker 1 \(cpu\) failed: "
                                           r"KeyError: \"unknown encoder space 'only_in_this_process'"):
        extract_on_devices("only_in_this_process", {"checkpoint": str(tmp_path / "space.pt")}, jobs, tmp_path / "x",
                           ["cpu", "cpu"], shard_size=2, batch_size=2, progress=False)
    assert not (tmp_path / "x" / "clip_image.npy").exists()  # nothing merged


def test_devices_setting_is_resolved_and_checked(monkeypatch):
    from cmcr.config import ConfigError
    from cmcr.extraction import resolve_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_devices("auto") == [None] and resolve_devices(1) == [None]
    assert resolve_devices(3) == ["cpu", "cpu", "cpu"]  # no GPU: N processes on the CPU
    with pytest.raises(ConfigError, match=r"paper.extraction.devices lists GPU\(s\) \[0\], but 0 GPU"):
        resolve_devices([0])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_devices("auto") == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert resolve_devices(2) == ["cuda:0", "cuda:1"] and resolve_devices([3, 1]) == ["cuda:3", "cuda:1"]
    for bad, message in ((5, "= 5 but only 4 GPU"), (0, "got 0"), ("all", "got 'all'"), ([1, 1], "distinct"),
                         (True, "got True"), ([], "got \\[\\]")):
        with pytest.raises(ConfigError, match=message):
            resolve_devices(bad)
