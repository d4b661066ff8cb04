"""ULIP-2 Point-BERT: checkpoint key names and shapes, ULIP's checkpoint format, the pickled
Objaverse .npy behind a trust switch, real point clouds from the official release."""

import numpy as np
import pytest
import torch

from cmcr.encoders.pointbert import (PointBertConfig, UlipPointBert, check_points, farthest_point_sample,
                                     load_ulip_weights, prepare_points)
from cmcr.sources.points import read_point_cloud
from cmcr.encoders.base import build_space
from cmcr.extraction import extract


def test_checkpoint_key_names_and_shapes():
    state = UlipPointBert().state_dict()
    expected = {
        "pc_projection": (768, 512),
        "point_encoder.cls_token": (1, 1, 384), "point_encoder.cls_pos": (1, 1, 384),
        "point_encoder.encoder.first_conv.0.weight": (128, 3, 1),
        "point_encoder.encoder.first_conv.1.running_mean": (128,),
        "point_encoder.encoder.first_conv.3.weight": (256, 128, 1),
        "point_encoder.encoder.second_conv.0.weight": (512, 512, 1),
        "point_encoder.encoder.second_conv.3.weight": (256, 512, 1),
        "point_encoder.reduce_dim.weight": (384, 256),
        "point_encoder.pos_embed.0.weight": (128, 3), "point_encoder.pos_embed.2.weight": (384, 128),
        "point_encoder.blocks.blocks.0.attn.qkv.weight": (1152, 384),
        "point_encoder.blocks.blocks.11.attn.proj.bias": (384,),
        "point_encoder.blocks.blocks.11.mlp.fc1.weight": (1536, 384),
        "point_encoder.blocks.blocks.11.norm2.weight": (384,),
        "point_encoder.norm.weight": (384,),
        "image_projection": (768, 512), "visual.patch_embed.proj.weight": (768, 3, 16, 16),
        "visual.blocks.11.attn.qkv.weight": (2304, 768), "visual.norm.weight": (768,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert "point_encoder.blocks.blocks.0.attn.qkv.bias" not in state  # ULIP: qkv_bias=False
    assert "point_encoder.blocks.blocks.12.norm1.weight" not in state  # depth 12
    points_only = UlipPointBert(with_image=False)
    assert sum(p.numel() for p in points_only.parameters()) == pytest.approx(22.3e6, rel=0.02)


def test_loads_ulip_format_and_refuses_mismatches(tmp_path):
    torch.manual_seed(0)
    source = UlipPointBert()
    payload = {"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}
    payload["state_dict"]["module.token_embedding.weight"] = torch.zeros(1)  # SLIP's text tower: not needed, ignored
    torch.save(payload, tmp_path / "pointbert_ULIP-2.pt")
    target = UlipPointBert()
    load_ulip_weights(target, tmp_path / "pointbert_ULIP-2.pt")
    assert torch.equal(target.pc_projection, source.pc_projection)
    assert torch.equal(target.visual.blocks[3].mlp.fc1.weight, source.visual.blocks[3].mlp.fc1.weight)
    bad = {"state_dict": {k: v for k, v in payload["state_dict"].items() if "norm.weight" not in k}}
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a 512-d ULIP-2 Point-BERT checkpoint"):
        load_ulip_weights(UlipPointBert(), tmp_path / "bad.pt")


def test_fps_is_deterministic_and_spread():
    xyz = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0], [1, 0, 0], [0.5, 0, 0], [0.9, 0, 0]]])
    assert farthest_point_sample(xyz, 3)[0].tolist() == [0, 2, 3]


def fps_reference(xyz: np.ndarray, n: int) -> list[int]:
    """ULIP's numpy farthest_point_sample, one point at a time, started from point 0 (float32)."""
    nearest, farthest, picked = np.full(len(xyz), np.inf, np.float32), 0, []
    for _ in range(n):
        picked.append(farthest)
        delta = xyz - xyz[farthest]
        dist = delta[:, 0] * delta[:, 0] + delta[:, 1] * delta[:, 1] + delta[:, 2] * delta[:, 2]
        nearest = np.minimum(nearest, dist)
        farthest = int(np.argmax(nearest))
    return picked


def test_batched_fps_matches_ulips_loop_and_does_not_depend_on_the_batch():
    rng = np.random.default_rng(0)
    clouds = rng.normal(size=(5, 700, 3)).astype(np.float32) * np.float32([1, 2, 0.5])
    batched = farthest_point_sample(torch.from_numpy(clouds), 300)
    for k, cloud in enumerate(clouds):
        assert batched[k].tolist() == fps_reference(cloud, 300)
        assert torch.equal(farthest_point_sample(torch.from_numpy(cloud[None]), 300)[0], batched[k])
    assert len(set(batched[0].tolist())) == 300  # no point picked twice


def test_space_samples_mixed_sizes_in_batches_like_one_cloud_at_a_time():
    rng = np.random.default_rng(1)
    clouds = [rng.normal(size=(n, 3)).astype(np.float32) for n in (3000, 2048, 3000, 2500, 3000)]
    torch.manual_seed(0)
    space = build_space("ulip", allow_random=True, device="cpu", config=PointBertConfig(npoints=2048, num_group=64))
    groups = space.prepare_batch([torch.from_numpy(check_points(c, 2048)) for c in clouds])
    assert len(groups) == 1 and sorted(groups[0][0]) == [0, 1, 2, 3, 4]  # all sampled to 2048: one forward pass
    batch = groups[0][1][torch.argsort(torch.tensor(groups[0][0]))]
    for k, cloud in enumerate(clouds):
        np.testing.assert_allclose(batch[k].numpy(), prepare_points(cloud, 2048), atol=1e-6)
        # ULIP's order: sample, then centre and scale into the unit sphere
        picked = cloud[fps_reference(cloud, 2048)] if len(cloud) > 2048 else cloud
        centred = picked - picked.mean(0)
        np.testing.assert_allclose(batch[k].numpy(), centred / np.linalg.norm(centred, axis=1).max(), atol=1e-5)
    with pytest.raises(ValueError, match="single point"):
        check_points(np.ones((4096, 3), np.float32), 2048)


def test_pickled_objaverse_npy_needs_the_trust_switch(official_dir):
    with pytest.raises(ValueError, match="pickled .npy .*trust_pickled_points"):
        read_point_cloud(official_dir / "BBQ.npy")
    points = read_point_cloud(official_dir / "BBQ.npy", trust_pickle=True)
    assert points.shape == (10000, 6) and points.dtype == np.float32
    prepared = prepare_points(points, 8192)
    assert prepared.shape == (8192, 3)
    assert np.abs(prepared.mean(0)).max() < 1e-5 and np.sqrt((prepared ** 2).sum(1)).max() == pytest.approx(1, abs=1e-5)


def test_ulip_space_embeds_real_clouds_and_records_bad_ones(official_dir, tmp_path):
    np.save(tmp_path / "nan.npy", np.full((9000, 3), np.nan, np.float32))
    np.save(tmp_path / "flat.npy", np.zeros((9000, 2), np.float32))
    np.save(tmp_path / "few.npy", np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32))  # < 64 centres
    torch.manual_seed(0)
    space = build_space("ulip", allow_random=True, device="cpu", trust_pickled_points=True,
                        config=PointBertConfig(npoints=2048, num_group=64))
    items = [str(official_dir / f"{n}.npy") for n in ("BBQ", "toilet")] + [str(tmp_path / f) for f in ("nan.npy", "flat.npy", "few.npy")]
    out = extract(space, "points", items, ids=["BBQ", "toilet", "nan", "flat", "few"], progress=False)
    assert out.embeddings.shape == (2, 512) and out.kept == [0, 1]
    assert [f["id"] for f in out.failures] == ["nan", "flat", "few"]
    np.testing.assert_allclose(np.linalg.norm(out.embeddings, axis=1), 1, atol=1e-5)
    untrusting = build_space("ulip", allow_random=True, device="cpu", config=PointBertConfig(npoints=2048, num_group=64))
    refused = extract(untrusting, "points", items[:1], progress=False)
    assert "pickled" in refused.failures[0]["reason"]


def test_ulip_image_tower_embeds_real_photos(official_dir):
    from PIL import Image
    from torchvision import transforms

    torch.manual_seed(0)
    space = build_space("ulip", allow_random=True, device="cpu")
    slip_eval = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224), lambda x: x.convert("RGB"),
                                    transforms.ToTensor(),
                                    transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    with Image.open(official_dir / "train.jpeg") as img:  # SLIP's eval_zeroshot.py transform, written out
        assert torch.equal(space.load("image", str(official_dir / "train.jpeg")), slip_eval(img))
    out = extract(space, "image", [str(official_dir / "BBQ.jpeg"), str(official_dir / "train.jpeg")], progress=False)
    assert out.embeddings.shape == (2, 512) and not out.failures


def test_official_points_input_feeds_the_stored_cloud_as_it_is(official_dir):
    """points_input=official: the release's trunks.py path — all stored points, no sampling, no re-centring."""
    from cmcr.config import ConfigError

    cfg = PointBertConfig(npoints=2048, num_group=64, depth=2)
    torch.manual_seed(0)
    official = build_space("ulip", allow_random=True, device="cpu", trust_pickled_points=True, config=cfg,
                           points_input="official")
    path = official_dir / "BBQ.npy"
    stored = np.load(path, allow_pickle=True).item()["xyz"]
    loaded = official.load("points", str(path))
    assert loaded.dtype == torch.float32 and torch.equal(loaded, torch.from_numpy(stored.astype(np.float32)))
    with torch.no_grad():  # the release: model.encode_pc(xyz[None].float()), normalised
        expected = torch.nn.functional.normalize(official.model.encode_pc(loaded[None]), dim=-1)
    np.testing.assert_allclose(official.encode("points", [loaded]), expected, atol=1e-6)

    smaller = loaded[:9000]  # clouds of other sizes share a batch: each still embeds as alone
    together = official.encode("points", [loaded, smaller, loaded])
    np.testing.assert_allclose(together[1:2], official.encode("points", [smaller]), atol=1e-5)
    np.testing.assert_allclose(together[0], together[2], atol=1e-6)

    ulip = build_space("ulip", allow_random=True, device="cpu", trust_pickled_points=True, config=cfg)
    assert torch.equal(ulip.model.pc_projection, official.model.pc_projection)  # same seeded weights
    assert not np.allclose(ulip.encode("points", [ulip.load("points", str(path))]), expected, atol=1e-3)
    assert official.identity()["settings"]["points_input"] == "official" != ulip.identity()["settings"]["points_input"]
    with pytest.raises(ValueError, match="fewer than the 64 needed"):
        check_points(stored[:10], 64)
    with pytest.raises(ConfigError, match="points_input"):
        build_space("ulip", allow_random=True, device="cpu", points_input="raw")


@pytest.mark.parametrize("points_input", ["ulip", "official"])
def test_clouds_smaller_than_npoints_go_in_whole(points_input, tmp_path):
    """Issue 23, point 2: 1,000- and 2,048-point clouds (ModelNet / ScanObjectNN sizes) were refused in the ulip
    mode. ULIP samples only clouds larger than npoints; smaller ones go in whole (centred and scaled in the ulip
    mode, as stored in the official mode). Checked against Point-BERT run on each cloud alone, by hand."""
    cfg = PointBertConfig(depth=2)  # the real npoints = 8192 and num_group = 512; 2 blocks for speed
    rng = np.random.default_rng(3)
    sizes = {"small": 1000, "scan": 2048, "big": 9000, "tiny": 400}
    for name, n in sizes.items():
        np.save(tmp_path / f"{name}.npy", (rng.normal(size=(n, 3)) * [1.0, 0.5, 2.0] + [3, 0, -1]).astype(np.float32))
    torch.manual_seed(0)
    space = build_space("ulip", allow_random=True, device="cpu", config=cfg, points_input=points_input)
    items = [str(tmp_path / f"{name}.npy") for name in sizes]
    out = extract(space, "points", items, ids=list(sizes), progress=False, batch_size=8)
    assert out.kept == [0, 1, 2] and [f["id"] for f in out.failures] == ["tiny"]  # 400 < 512 patch centres
    assert "fewer than the 512 needed" in out.failures[0]["reason"]
    for k, name in enumerate(["small", "scan", "big"]):
        cloud = np.load(tmp_path / f"{name}.npy")
        if points_input == "ulip":
            picked = cloud[fps_reference(cloud, 8192)] if len(cloud) > 8192 else cloud  # ULIP: FPS only if larger
            centred = picked - picked.mean(0)
            xyz = centred / np.linalg.norm(centred, axis=1).max()
        else:
            xyz = cloud
        with torch.no_grad():
            alone = torch.nn.functional.normalize(space.model.encode_pc(torch.from_numpy(xyz[None].astype(np.float32))),
                                                  dim=-1)[0].numpy()
        np.testing.assert_allclose(out.embeddings[k], alone, atol=2e-5, err_msg=name)
    if points_input == "ulip":
        np.testing.assert_allclose(prepare_points(np.load(tmp_path / "small.npy"), 8192).shape, (1000, 3))
