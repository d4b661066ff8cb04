"""ULIP-2 Point-BERT (3D) behind the :class:`~cmcr.encoders.base.EncoderSpace` interface, implemented here.

C-MCR connects CLIP with ULIP-2's Point-BERT encoder (``pointbert_ULIP-2.pt``, 512-d ``encode_pc``).
That model is ULIP's ``ULIP_PointBERT``: a Point-BERT transformer over xyz point patches followed by a
768→512 projection. (Public reports of loading the file agree: ULIP issue #60 quotes its
``pc_projection`` as 768×512 and ``point_encoder.encoder.first_conv.0.weight`` as 128×3×1 — xyz input,
not the later 10k-point xyzrgb ULIP-2 with a 1280-d projection; issue #78 loads it into
``ULIP_WITH_IMAGE``, the SLIP ViT-B/16 image tower used here.) The architecture is written here (no vendored ULIP tree, no CUDA-only ops) with
parameter names that match the checkpoint, so its ``point_encoder.*`` and ``pc_projection`` tensors
load with a strict check:

- grouping: ``num_group`` = 512 centres by farthest point sampling (starting from point 0, like
  pointnet2's op), each with its ``group_size`` = 32 nearest neighbours, expressed relative to the centre;
- ``point_encoder.encoder``: a mini-PointNet per patch (Conv1d 3→128, BN, ReLU, Conv1d 128→256; max;
  concat; Conv1d 512→512, BN, ReLU, Conv1d 512→256; max) → 256-d token;
- ``point_encoder.reduce_dim`` 256→384, ``cls_token`` / ``cls_pos``, ``pos_embed`` (3→128→384 MLP of
  the centres), 12 pre-norm blocks (6 heads, no qkv bias, MLP ×4, GELU) adding the position to the
  input of every block, final ``norm``;
- feature = [cls, max over patches] (768-d); embedding = feature @ ``pc_projection`` (768×512).

Input points as ULIP prepares them: xyz, ``npoints`` = 8192 by farthest point sampling when a cloud has
more; a cloud with fewer points goes in with all its points, unsampled (ULIP's ``ModelNet._get_item``
samples only ``if self.npoints < point_set.shape[0]``, so its 1,024–2,048-point ModelNet / ScanObjectNN
files pass through as they are); then centred and scaled into the unit sphere. The least a cloud may have
is Point-BERT's own ``num_group`` = 512 patch centres (fewer is a recorded per-item failure). ULIP's numpy sampler
starts from a random point; here it starts from point 0, so extraction is deterministic. Clouds are
checked where they are decoded (:func:`check_points`: shape, NaN, size) and sampled in batches on the
encoder's device (:func:`sample_and_normalise`) — the sampling's 8192 sequential steps dominate the
cost of a cloud, and one batched loop shares them across the batch.

``points_input`` chooses between the two ways clouds have reached this model: ``ulip`` (default) is
ULIP's data pipeline above — also ULIP's ModelNet40 protocol (8192 sampled points, unit sphere), which
the paper's Table 4 follows; ``official`` is the C-MCR release's inference code (``trunks.py``), which
feeds a ULIP-Objaverse file's stored ``xyz`` as it is: all 10,000 points, no sampling, no
re-normalisation (those files are already scaled into the unit sphere, centred on their box rather
than their mean). Use ``official`` to match the released inference embedding for embedding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cmcr.checkpoints import TRUST_SWITCH, load_state_dict_file
from cmcr.config import ConfigError
from cmcr.device import amp_settings, resolve_device, seeded_init
from cmcr.encoders.base import EncoderSpace, register
from cmcr.items import file_of
from cmcr.sources.images import load_image
from cmcr.sources.points import read_point_cloud

log = logging.getLogger(__name__)

WEIGHTS_HELP = "ULIP-2 Point-BERT pointbert_ULIP-2.pt (huggingface.co/datasets/SFXX/ulip)"


@dataclass(frozen=True)
class PointBertConfig:
    """ULIP's PointTransformer_8192point.yaml (the 512-d ULIP-2 Point-BERT)."""

    trans_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    group_size: int = 32
    num_group: int = 512
    encoder_dims: int = 256
    embed_dim: int = 512
    npoints: int = 8192


def farthest_point_sample(xyz: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (B×n) of farthest point sampling of B clouds of M points, starting from point 0 of every cloud.

    One loop over the n picks updates all B clouds at once (on the device ``xyz`` lives on), in six
    elementwise kernels per pick (gather, subtract, square, two adds, minimum) and an ``argmax`` — the
    loop is sequential, so on a GPU its cost is kernel launches, shared by the whole batch. Squared
    distances are ``(dx·dx + dy·dy) + dz·dz`` from separate multiplies and adds (no fused multiply-add,
    no reduction kernel), so a cloud gets the same indices whatever batch it is in; ties go to the
    lowest index.
    """
    b, m, _ = xyz.shape
    coords = xyz.permute(2, 0, 1).contiguous()  # 3×B×M: each coordinate contiguous
    index = torch.empty(b, n, dtype=torch.long, device=xyz.device)
    nearest = torch.full((b, m), float("inf"), dtype=xyz.dtype, device=xyz.device)
    farthest = torch.zeros(3, b, 1, dtype=torch.long, device=xyz.device)
    delta, dist = torch.empty_like(coords), torch.empty_like(nearest)
    for i in range(n):
        index[:, i:i + 1] = farthest[0]
        torch.sub(coords, coords.gather(2, farthest), out=delta)
        delta.mul_(delta)
        torch.add(delta[0], delta[1], out=dist).add_(delta[2])
        torch.minimum(nearest, dist, out=nearest)
        farthest = nearest.argmax(-1, keepdim=True).expand(3, -1, -1)
    return index


def group_points(xyz: torch.Tensor, num_group: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches (B×G×S×3, relative to their centre) and centres (B×G×3)."""
    centres = torch.gather(xyz, 1, farthest_point_sample(xyz, num_group).unsqueeze(-1).expand(-1, -1, 3))
    dist = torch.cdist(centres, xyz)  # B×G×N
    knn = dist.topk(group_size, dim=-1, largest=False).indices  # B×G×S
    patches = torch.gather(xyz.unsqueeze(1).expand(-1, num_group, -1, -1), 2, knn.unsqueeze(-1).expand(-1, -1, -1, 3))
    return patches - centres.unsqueeze(2), centres


class PatchEncoder(nn.Module):
    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.first_conv = nn.Sequential(nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
                                        nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                         nn.Conv1d(512, out_dim, 1))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        b, g, s, c = patches.shape
        x = self.first_conv(patches.reshape(b * g, s, c).transpose(1, 2))  # BG×256×S
        x = torch.cat([x.amax(dim=2, keepdim=True).expand(-1, -1, s), x], dim=1)
        x = self.second_conv(x).amax(dim=2)
        return x.reshape(b, g, self.out_dim)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head dim)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Blocks(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return x


class PointTransformer(nn.Module):
    def __init__(self, cfg: PointBertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = PatchEncoder(cfg.encoder_dims)
        self.reduce_dim = nn.Linear(cfg.encoder_dims, cfg.trans_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.trans_dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, cfg.trans_dim))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, cfg.trans_dim))
        self.blocks = Blocks(cfg.trans_dim, cfg.depth, cfg.num_heads)
        self.norm = nn.LayerNorm(cfg.trans_dim)

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        patches, centres = group_points(xyz, self.cfg.num_group, self.cfg.group_size)
        tokens = self.reduce_dim(self.encoder(patches))
        b = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(b, -1, -1), self.pos_embed(centres)], dim=1)
        x = self.norm(self.blocks(x, pos))
        return torch.cat([x[:, 0], x[:, 1:].amax(dim=1)], dim=-1)  # 2 × trans_dim


class UlipPointBert(nn.Module):
    """The parts of a ULIP checkpoint C-MCR uses: ``point_encoder`` + ``pc_projection`` (``encode_pc``)
    and the image tower ``visual`` (timm ViT-B/16, no head) + ``image_projection`` (``encode_image``),
    whose embeddings of the shared images connect ULIP with CLIP."""

    def __init__(self, cfg: PointBertConfig = PointBertConfig(), with_image: bool = True) -> None:
        super().__init__()
        self.point_encoder = PointTransformer(cfg)
        self.pc_projection = nn.Parameter(torch.randn(2 * cfg.trans_dim, cfg.embed_dim) * cfg.embed_dim ** -0.5)
        if with_image:
            import timm

            self.visual = timm.create_model("vit_base_patch16_224", num_classes=0, pretrained=False)
            self.image_projection = nn.Parameter(torch.randn(768, cfg.embed_dim) * cfg.embed_dim ** -0.5)

    def encode_pc(self, xyz: torch.Tensor) -> torch.Tensor:
        return self.point_encoder(xyz) @ self.pc_projection

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image) @ self.image_projection


def load_ulip_weights(model: UlipPointBert, path: Path, trust: bool = False) -> None:
    """Load ``point_encoder.*`` and ``pc_projection`` from a ULIP checkpoint (``state_dict``, ``module.`` prefixes)."""
    state = load_state_dict_file(path, trust=trust, switch=TRUST_SWITCH.format("ulip"))
    own_roots = {k.split(".")[0] for k in model.state_dict()}
    state = {k: v for k, v in state.items() if k.split(".")[0] in own_roots}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: not a 512-d ULIP-2 Point-BERT checkpoint (missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}, wrong shapes {shapes[:4]})")
    model.load_state_dict(state)


def check_points(points: np.ndarray, npoints: int) -> np.ndarray:
    """The xyz (N×3 float32) of a cloud Point-BERT can take (at least ``npoints`` points: the encoder passes
    its ``num_group``); ``ValueError`` naming the problem otherwise. Takes what :func:`~cmcr.sources.points.read_point_cloud` returns (which has
    already refused bad shapes and NaN); runs where the cloud is decoded, before any compute.
    """
    xyz = np.ascontiguousarray(points[:, :3], dtype=np.float32)
    if len(xyz) < npoints:
        raise ValueError(f"point cloud has {len(xyz)} points, fewer than the {npoints} needed")
    if np.ptp(xyz, axis=0).max() == 0:
        raise ValueError("point cloud is a single point (all coordinates equal)")
    return xyz


def sample_and_normalise(xyz: torch.Tensor, npoints: int) -> torch.Tensor:
    """ULIP's input from B checked clouds of equal size (B×N×3): farthest point sampling to ``npoints``
    when N is larger (a smaller N stays as it is, as in ULIP), then ``pc_normalize`` (centred on the mean,
    scaled into the unit sphere). Returns B×min(N, npoints)×3."""
    if xyz.shape[1] > npoints:
        xyz = torch.gather(xyz, 1, farthest_point_sample(xyz, npoints).unsqueeze(-1).expand(-1, -1, 3))
    xyz = xyz - xyz.mean(dim=1, keepdim=True)
    return xyz / xyz.norm(dim=-1).amax(dim=1).view(-1, 1, 1)


def prepare_points(points: np.ndarray, npoints: int, least: int = PointBertConfig.num_group) -> np.ndarray:
    """One cloud as ULIP's encoder takes it: :func:`check_points` (at least ``least`` points) then
    :func:`sample_and_normalise` (min(N, ``npoints``) points)."""
    xyz = torch.from_numpy(check_points(points, least)).unsqueeze(0)
    return sample_and_normalise(xyz, npoints)[0].numpy()


#: how clouds reach Point-BERT: ULIP's data pipeline, or the official C-MCR release's inference code
POINTS_INPUT = ("ulip", "official")

#: ULIP's image tower is SLIP's ViT-B/16; SLIP's evaluation transform (eval_zeroshot.py): Resize(224) with
#: torchvision's default bilinear interpolation, 224 px centre crop, RGB, ImageNet statistics. ULIP itself
#: only defines a training transform (RandomResizedCrop, bilinear, same statistics).
IMAGE_MEAN, IMAGE_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@register("ulip")
class UlipSpace(EncoderSpace):
    """ULIP-2 Point-BERT: 3D point clouds and images (its text tower is not needed by C-MCR)."""

    modalities = ("points", "image")

    def __init__(self, weights: str | None = None, device: str = "auto", allow_random: bool = False,
                 trust_checkpoint: bool = False, trust_pickled_points: bool = False,
                 config: PointBertConfig = PointBertConfig(), precision: str = "fp32", seed: int = 0,
                 points_input: str = "ulip", param: str = "encoders.ulip.weights") -> None:
        if points_input not in POINTS_INPUT:
            raise ConfigError(f"points_input must be one of {POINTS_INPUT}, got {points_input!r}")
        if weights is None and not allow_random:
            raise ConfigError(f"no ULIP weights given: set {param} to {WEIGHTS_HELP}")
        if weights is not None and not Path(weights).expanduser().is_file():
            raise FileNotFoundError(f"ULIP weights not found: {weights}. Expected {WEIGHTS_HELP}; set {param}")
        self.device = resolve_device(device)
        with seeded_init(seed):  # only matters without weights (allow_random)
            self.model = UlipPointBert(config)
        if weights is not None:
            load_ulip_weights(self.model, Path(weights).expanduser(), trust_checkpoint)
        self.model = self.model.to(self.device).eval()
        self.cfg, self.trust_pickled_points, self.points_input = config, trust_pickled_points, points_input
        self.name, self.dim = "ulip", config.embed_dim
        self.amp = amp_settings(precision, self.device)

    def load(self, modality: str, item: Any) -> torch.Tensor:
        if modality == "image":
            from torchvision import transforms

            if not hasattr(self, "_preprocess"):
                self._preprocess = transforms.Compose([
                    transforms.Resize(224, interpolation=transforms.InterpolationMode.BILINEAR),
                    transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize(IMAGE_MEAN, IMAGE_STD)])
            return self._preprocess(load_image(item))  # RGB, cropped to the item's box

        points = read_point_cloud(file_of(item, modality), trust_pickle=self.trust_pickled_points)
        # both modes: clouds smaller than npoints go in whole, so only Point-BERT's own 512 patch centres are needed
        return torch.from_numpy(check_points(points, self.cfg.num_group))

    def stacked_by_size(self, clouds: list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
        """Clouds grouped by point count: (their positions, G×N×3 float32 on the device) per count."""
        by_size: dict[int, list[int]] = {}
        for i, cloud in enumerate(clouds):
            by_size.setdefault(len(cloud), []).append(i)
        return [(rows, torch.stack([clouds[i] for i in rows]).to(self.device, torch.float32))
                for rows in by_size.values()]

    def prepare_batch(self, clouds: list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
        """Checked clouds of any sizes → ULIP's inputs grouped by their size after sampling: one group of
        G×npoints×3 for every cloud of ``npoints`` or more (sampled in batches of equal size), one group per
        size for the smaller clouds (centred and scaled, not sampled). (positions, tensor on the device) each."""
        prepared: dict[int, list[tuple[list[int], torch.Tensor]]] = {}
        for rows, xyz in self.stacked_by_size(clouds):
            ready = sample_and_normalise(xyz, self.cfg.npoints)
            prepared.setdefault(ready.shape[1], []).append((rows, ready))
        return [([r for rows, _ in parts for r in rows], torch.cat([x for _, x in parts]))
                for parts in prepared.values()]

    def encode_batch(self, modality: str, batch: list[torch.Tensor]) -> torch.Tensor:
        if modality == "image":
            with torch.autocast(self.device.type, **self.amp):
                return self.model.encode_image(torch.stack(batch).to(self.device)).float().cpu()
        if self.points_input == "ulip":  # clouds sampled to npoints (smaller ones whole): a forward pass per size
            groups = self.prepare_batch(batch)
        else:  # the clouds as stored: one forward pass per cloud size
            groups = self.stacked_by_size(batch)
        out = torch.empty(len(batch), self.dim)
        for rows, xyz in groups:
            with torch.autocast(self.device.type, **self.amp):
                out[rows] = self.model.encode_pc(xyz).float().cpu()
        return out
