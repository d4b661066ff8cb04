"""The ``cmcr`` command line: one subcommand per step, each a few lines over the library.

Configuration comes from a params file (``params.yaml`` layout, see README) plus ``-S group.key=value``
overrides, exactly like ``dvc exp run -S``.
"""

from __future__ import annotations

import json
import logging
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything can import transformers / laion_clap

import typer

from cmcr.config import GROUPS, ConfigError, ConnectionConfig, connection_config_from_params, deep_merge
from cmcr.params import load_params
from cmcr.params import parse_overrides

app = typer.Typer(
    help="C-MCR: connect two frozen multi-modal contrastive spaces through their shared modality.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from cmcr import __version__

        typer.echo(f"cmcr {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print cmcr's version and exit")] = False) -> None:
    """C-MCR: connect two frozen multi-modal contrastive spaces through their shared modality."""

#: choices shown in --help and checked by the parser
SpaceName = Enum("SpaceName", {n: n for n in ("clip", "clap", "ulip")}, type=str)
EncoderName = Enum("EncoderName", {n: n for n in ("clip", "clap", "ulip", "demo_clip", "demo_clap", "demo_ulip")}, type=str)
ModalityName = Enum("ModalityName", {n: n for n in ("image", "text", "audio", "points")}, type=str)
ReleaseName = Enum("ReleaseName", {n: n for n in ("ulip_clip", "clap_clip")}, type=str)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file (params.yaml layout)")]
ConnOpt = Annotated[str, typer.Option("--connection", "-c", help="a link the params declare (connections.<name>.link), "
                                                                 "e.g. clip_clap (audio–visual) or clip_ulip (3D–language)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-S", help="override, e.g. -S noise.var=0.002 (repeatable)")]


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def resolve_config(params: Path, connection: str, overrides: list[str] | None) -> ConnectionConfig:
    return connection_config_from_params(load_params(params), connection, parse_overrides(overrides))


@app.command("config")
def show_config(params: ParamsOpt = Path("params.yaml"), connection: ConnOpt = "clip_clap",
                set_: SetOpt = None,
                variant: Annotated[Optional[str], typer.Option(
                    "--variant", "-v", help="a variant of params.yaml (e.g. K): exactly what train@<variant> trains "
                                            "with, training scale included")] = None) -> None:
    """Print the fully resolved, validated config as JSON: of a connection's base groups, or of a variant."""
    if variant is None:
        typer.echo(json.dumps(resolve_config(params, connection, set_).to_dict(), indent=2))
        return
    from cmcr.experiments import resolve_variant, scale_of, seeds_of, setup_of, training_scale, variant_connection

    p = deep_merge(load_params(params), parse_overrides(set_))
    v = resolve_variant(p, variant)
    # the pipeline trains this config once per seed (train.seed = each of `seeds`)
    spec = {"name": v.name, "config": v.config.to_dict(), "exclude_sources": list(v.exclude_sources),
            "official": v.official, "paired": v.paired, "group": v.group, "label": v.label, "setup": setup_of(p),
            "seeds": seeds_of(p)}
    applied, notes = training_scale(p, variant_connection(p, variant))
    spec["scale"] = {"mode": scale_of(p), "applied": applied.get("train", {}), "not_applied": notes}
    typer.echo(json.dumps(spec, indent=2))


@app.command()
def aggregate(
    queries: Annotated[Path, typer.Option(help="N×d .npy of L2-normalised query embeddings (e.g. clip_text.npy)")],
    memory: Annotated[Path, typer.Option(help="M×d .npy of L2-normalised memory embeddings (e.g. clip_image memory)")],
    out: Annotated[Path, typer.Option(help="N×d .npy to write (e.g. clip_image_from_text.npy)")],
    params: ParamsOpt = Path("params.yaml"),
    connection: ConnOpt = "clip_clap",
    set_: SetOpt = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:i]")] = "auto",
) -> None:
    """Eq. 2: aggregate a memory for every query (streamed softmax / argmax / random, per memory.mode)."""
    from cmcr.artifacts import load_npy, npy_writer
    from cmcr.memory import aggregate_memory

    _setup_logging()
    config = resolve_config(params, connection, set_).memory
    q = load_npy(queries)
    m = load_npy(memory, dim=q.shape[1])
    with npy_writer(out, q.shape) as dest:
        aggregate_memory(q, m, config, device=device, out=dest, progress=True)


@app.command()
def train(
    embeddings: Annotated[Path, typer.Option(help="the pipeline's data/embeddings (with --aggregated), or a flat folder "
                                                  "with {space}_{shared}.npy and {space}_{memory}_from_{shared}.npy")],
    out: Annotated[Path, typer.Option(help="checkpoint to write (.pt)")],
    aggregated: Annotated[Optional[Path], typer.Option(
        help="the pipeline's Eq. 2 folder, e.g. data/aggregated/clip_clap/softmax: read the pipeline layout "
             "(<embeddings>/<space>/<shared>.npy + .parquet, pairs joined by id)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    connection: ConnOpt = "clip_clap",
    set_: SetOpt = None,
    history: Annotated[Optional[Path], typer.Option(help="also write per-epoch losses as JSON here")] = None,
) -> None:
    """Train the two projectors of a connection (Eq. 3–10, AdamW + cosine) from pre-extracted embeddings, at
    params' training scale (``scale``: demo small, byo auto, paper paper; ``-S scale.mode=auto``)."""
    from cmcr.artifacts import save_torch, write_json
    from cmcr.experiments import training_scale
    from cmcr.graph import train_connection
    from cmcr.train import ConnectionData

    _setup_logging()
    overrides = parse_overrides(set_)  # a config group's -S is the connection's own (as `cmcr config -c`); others params
    p = deep_merge(load_params(params), {k: v for k, v in overrides.items() if k not in GROUPS})
    config = connection_config_from_params(p, connection, deep_merge(training_scale(p, connection)[0],
                                                                     {k: v for k, v in overrides.items() if k in GROUPS}))
    if aggregated is not None:
        data = ConnectionData.from_pipeline(embeddings, aggregated, config)
    else:
        data = ConnectionData.from_folder(embeddings, config)
    result = train_connection(data, config)  # a one-link graph (load_unit reads it)
    save_torch(out, result.checkpoint())
    if history is not None:
        write_json(history, result.history["joint"])


@app.command()
def project(
    space: Annotated[str, typer.Option(help="which space's embeddings these are (any space of the checkpoint or graph, "
                                            "a space of your own included)")],
    embeddings: Annotated[Path, typer.Option(help="N×d .npy of that space's L2-normalised embeddings (a Parquet "
                                                  "beside it, same name, is carried to --out's)")],
    out: Annotated[Path, typer.Option(help="N×out_dim .npy to write (L2-normalised, in the connected space)")],
    modality: Annotated[Optional[str], typer.Option(help="the embeddings' modality, checked against what the space "
                                                         "embeds here (default: the space's first)")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="a projector or graph checkpoint (default: the "
                                                             "pipeline's, from --root / --variant / --graph)")] = None,
    root: RootOpt = Path("."),
    variant: VariantOpt = "K",
    graph: GraphOpt = None,
    seed: SeedOpt = None,
) -> None:
    """Map one space's precomputed embeddings into the connected space (projector + L2 normalisation): any space
    of a connection or an MCR graph, in any setup (byo included: no encoder is built)."""
    from cmcr.artifacts import load_npy, read_parquet, save_npy, write_parquet

    _setup_logging()
    model = _model(root, variant, seed, checkpoint, "mean", graph, encoders=False)
    modality = modality or _space_modality(model, space)
    x = load_npy(embeddings, mmap=False)
    save_npy(out, model.project(space, modality, x))
    table = embeddings.with_suffix(".parquet")
    if table.is_file():
        write_parquet(out.with_suffix(".parquet"), read_parquet(table, rows=x.shape[0]))
    typer.echo(f"{out}: {x.shape[0]} {space} {modality} embeddings projected to {model.dim}-d"
               + (f" (+ {out.with_suffix('.parquet').name})" if table.is_file() else ""))


def _space_modality(model: Any, space: str) -> str:
    """The first modality ``space`` embeds in ``model`` (a one-line error listing the model's spaces if none)."""
    found = [m for m, owners in model.modalities().items() if space in owners]
    if not found:
        raise typer.BadParameter(f"{space!r} is not a space of {model._what()}: its spaces are "
                                 f"{', '.join(sorted({s for o in model.modalities().values() for s in o}))}",
                                 param_hint="--space")
    return found[0]


@app.command("evaluate-retrieval")
def evaluate_retrieval(
    checkpoint: Annotated[Path, typer.Option(help="projector checkpoint from `cmcr train`")],
    first_space: Annotated[SpaceName, typer.Option(help="space of the first side, e.g. clap")],
    first: Annotated[Path, typer.Option(help=".npy of the first side (e.g. clap_audio of the benchmark)")],
    second_space: Annotated[SpaceName, typer.Option(help="space of the second side, e.g. clip")],
    second: Annotated[Path, typer.Option(help=".npy of the second side (e.g. clip_image); row i matches row i of first")],
    out: Annotated[Path, typer.Option(help="metrics JSON to write")],
    names: Annotated[str, typer.Option(help="direction letters, e.g. A,I → A2I and I2A")] = "A,I",
    first_modality: Annotated[Optional[str], typer.Option(help="the first side's modality (e.g. audio): a checkpoint "
                                                               "with per-modality BatchNorm statistics uses its own")] = None,
    second_modality: Annotated[Optional[str], typer.Option(help="the second side's modality (e.g. image)")] = None,
) -> None:
    """Retrieval mAP / R@1 / R@5 (percent) in both directions, item i matching item i."""
    import torch

    from cmcr.artifacts import load_npy, write_json
    from cmcr.checks import check_same_rows
    from cmcr.metrics.retrieval import bidirectional_retrieval
    from cmcr.graph import load_unit

    _setup_logging()
    result = load_unit(checkpoint)
    a = torch.from_numpy(load_npy(first, mmap=False)).float()
    b = torch.from_numpy(load_npy(second, mmap=False)).float()
    check_same_rows(a, str(first), b, str(second))
    with torch.no_grad():
        for side in (first_space.value, second_space.value):
            if side not in result.projectors:
                raise typer.BadParameter(f"{checkpoint} has projectors for {list(result.projectors)}, not {side!r}")
        pa = result.projectors[first_space.value].embed(a, first_modality)  # per-modality statistics (cmcr.norms)
        pb = result.projectors[second_space.value].embed(b, second_modality)
    letters = tuple(x.strip() for x in names.split(","))
    metrics = bidirectional_retrieval(pa, pb, letters)  # type: ignore[arg-type]
    write_json(out, metrics)
    typer.echo(json.dumps(metrics, indent=2))


@app.command()
def manifest(
    folder: Annotated[Path, typer.Option(help="folder to list recursively (e.g. ImageNet's train/)")],
    out: Annotated[Path, typer.Option(help="Parquet to write: path, id, parent")],
    pattern: Annotated[Optional[list[str]], typer.Option(help="glob(s), e.g. '*.JPEG' (repeatable)")] = None,
) -> None:
    """List files into a manifest for `cmcr extract` / `paper.sets` (sorted, so reruns are identical)."""
    from cmcr.artifacts import write_parquet
    from cmcr.sources.files import list_files

    _setup_logging()
    table = list_files(folder, pattern or ["*"])
    write_parquet(out, table)
    typer.echo(f"{len(table)} files → {out}")


@app.command("collect-texts")
def collect_texts_cmd(
    out: Annotated[Path, typer.Option(help="Parquet to write: text_id, text, source, dataset")],
    coco: Annotated[Optional[Path], typer.Option(help="COCO captions_train2017.json")] = None,
    cc3m: Annotated[Optional[Path], typer.Option(help="CC3M Train_GCC-training.tsv")] = None,
    msrvtt: Annotated[Optional[Path], typer.Option(help="MSR-VTT train_val_videodatainfo.json")] = None,
    mad: Annotated[Optional[Path], typer.Option(help="MAD MAD_train.json")] = None,
    audiocaps: Annotated[Optional[Path], typer.Option(help="AudioCaps train.csv")] = None,
    clotho: Annotated[Optional[Path], typer.Option(help="Clotho clotho_captions_development.csv")] = None,
    cc3m_subset: Annotated[int, typer.Option(help="random CC3M subset size (the paper: 1,000,000)")] = 1_000_000,
    seed: int = 0,
) -> None:
    """Collect the §4.1 text corpora into one de-duplicated table with a source column."""
    from cmcr.artifacts import write_parquet
    from cmcr.sources.texts import collect_texts

    _setup_logging()
    files = {k: v for k, v in dict(coco=coco, cc3m=cc3m, msrvtt=msrvtt, mad=mad, audiocaps=audiocaps,
                                   clotho=clotho).items() if v is not None}
    write_parquet(out, collect_texts(files, cc3m_subset=cc3m_subset, seed=seed))


@app.command()
def extract(
    space: Annotated[EncoderName, typer.Option(help="real encoders (clip, clap, ulip) or the demo stand-ins")],
    modality: Annotated[ModalityName, typer.Option(help="what the items are")],
    items: Annotated[Path, typer.Option(help="Parquet listing the items, one per row")],
    column: Annotated[str, typer.Option(help="column holding the file path (or the text itself)")],
    out_dir: Annotated[Path, typer.Option(help="folder for <name>.npy / .parquet / .failures.parquet")],
    name: Annotated[str, typer.Option(help="output name, e.g. clip_image")],
    id_column: Annotated[Optional[str], typer.Option(help="unique id column (default: the row number)")] = None,
    weights: Annotated[Optional[str], typer.Option(help="encoder weights (CLIP: file or 'openai'; CLAP: 630k-fusion-best.pt; ULIP: pointbert_ULIP-2.pt)")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option(help="CLAP only: local roberta-base tokenizer folder")] = None,
    long_clips: Annotated[str, typer.Option(help="CLAP only: clips > 10 s — laion (fusion, seeded) | centre")] = "laion",
    quantize: Annotated[bool, typer.Option(help="CLAP only: int16 round trip of the audio, as the official code")] = True,
    trust_pickled_points: Annotated[bool, typer.Option(help="ULIP only: allow pickled ULIP-Objaverse .npy files")] = False,
    trust_checkpoint: Annotated[bool, typer.Option(help="load weights that run code when loaded (a pickle such as "
                                                       "ULIP-2's pointbert_ULIP-2.pt, or a TorchScript archive such as "
                                                       "OpenAI's ViT-B-32.pt): only files you trust; or convert "
                                                       "them once with `cmcr convert-weights`")] = False,
    points_input: Annotated[str, typer.Option(help="ULIP only: ulip (8192 FPS points, unit sphere) | official "
                                                   "(stored xyz as is, as the release's inference)")] = "ulip",
    device: str = "auto",
    precision: Annotated[str, typer.Option(help="fp32 | bf16 | fp16 (autocast on CUDA only)")] = "fp32",
    batch_size: int = 256,
    num_workers: Annotated[int, typer.Option(help="DataLoader workers for decoding")] = 0,
    shard_size: int = 50_000,
    max_failure_rate: float = 0.01,
    devices: Annotated[Optional[str], typer.Option(
        help="start one worker per device and merge once: auto (every visible GPU) | N (first N GPUs; N CPU "
             "processes without a GPU) | 0,2,5 (those GPUs). Not under torchrun (which starts the ranks itself)")] = None,
) -> None:
    """Embed items with an encoder space: sharded, resumable, split across devices (--devices) or torchrun ranks."""
    from cmcr.artifacts import read_parquet
    from cmcr.extraction import ExtractionJob, extract_on_devices, extract_sharded, resolve_devices
    from cmcr.encoders.base import build_space

    _setup_logging()
    space, modality = space.value, modality.value
    table = read_parquet(items, columns=[column] + ([id_column] if id_column else []))
    kwargs: dict[str, Any] = {}
    if space.startswith("demo_"):
        kwargs["checkpoint"] = weights
    else:
        kwargs.update(weights=weights, device=device, precision=precision, trust_checkpoint=trust_checkpoint)
        if space == "clap":
            kwargs.update(long_clips=long_clips, quantize=quantize)
            if tokenizer is not None:
                kwargs["tokenizer"] = str(tokenizer)
        if space == "ulip":
            kwargs.update(trust_pickled_points=trust_pickled_points, points_input=points_input)
    ids = table[id_column].astype(str).tolist() if id_column else [str(i) for i in range(len(table))]
    options = dict(shard_size=shard_size, batch_size=batch_size, num_workers=num_workers,
                   max_failure_rate=max_failure_rate, rate_option="--max-failure-rate")
    if devices is not None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise typer.BadParameter("not under torchrun: either --devices or torchrun's ranks", param_hint="--devices")
        spec: Any = devices if devices == "auto" else (int(devices) if devices.isdigit() else
                                                        [int(i) for i in devices.split(",") if i.strip().isdigit()])
        if isinstance(spec, list) and len(spec) != len(devices.split(",")):
            raise typer.BadParameter(f"auto, a number or GPU ids like 0,2,5; got {devices!r}", param_hint="--devices")
        job = ExtractionJob(name, modality, table[column].tolist(), ids)
        summary = extract_on_devices(space, kwargs, [job], out_dir, resolve_devices(spec, "--devices"), **options)[name]
    else:
        summary = extract_sharded(build_space(space, **kwargs), modality, table[column].tolist(), ids, out_dir, name,
                                  **options)
    if summary.merged:
        typer.echo(f"{summary.name}: {summary.embedded} embedded, {summary.failed} failed of {summary.items}")
    else:
        typer.echo(f"{summary.name}: this rank's {summary.shards_done + summary.shards_skipped} shard(s) done; "
                   "merged when every rank has finished (the last rank to finish merges)")


@app.command()
def shards(
    out_dir: Annotated[Path, typer.Argument(help="an extraction --out-dir (the stages use data/shards/<space>)")],
    remove: Annotated[Optional[list[str]], typer.Option(help="delete this run's shards (a key; repeatable)")] = None,
    prune: Annotated[bool, typer.Option(help="delete every run whose shards are not behind the merged files "
                                             "(never while an extraction is writing here)")] = False,
) -> None:
    """List the extraction runs kept in OUT_DIR (progress, weights, which one the merged files come from)."""
    import shutil

    from cmcr.extraction import shard_runs

    runs = shard_runs(out_dir)
    if runs.empty:
        typer.echo(f"{out_dir}: no extraction runs")
        return
    typer.echo(runs.to_string(index=False))
    unknown = sorted(set(remove or []) - set(runs["key"]))
    if unknown:
        raise typer.BadParameter(f"no run {unknown} in {out_dir}", param_hint="--remove")
    doomed = runs[runs["key"].isin(remove or []) | (prune & ~runs["merged_here"])]
    for name, key in doomed[["name", "key"]].itertuples(index=False):
        shutil.rmtree(out_dir / f"{name}.shards" / key)
        typer.echo(f"removed {out_dir / f'{name}.shards' / key}")


@app.command("convert-weights")
def convert_weights(
    src: Annotated[Path, typer.Argument(help="a published checkpoint: pointbert_ULIP-2.pt, OpenAI's ViT-B-32.pt, …")],
    dst: Annotated[Path, typer.Argument(help="tensors-only file to write (loads with weights_only=True)")],
    trust: Annotated[bool, typer.Option(help="load SRC even if that runs code from it (pickle / TorchScript): "
                                             "only for files from a source you trust")] = False,
) -> None:
    """Convert a checkpoint once into a tensors-only state dict, so it loads without any trust switch."""
    from cmcr.checkpoints import convert_checkpoint

    _setup_logging()
    if not src.is_file():
        raise typer.BadParameter(f"checkpoint not found: {src}", param_hint="SRC")
    try:
        count = convert_checkpoint(src, dst, trust=trust)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SRC") from None
    typer.echo(f"{src} → {dst}: {count} tensors (loads with weights_only=True; point the encoder's weights at it)")


@app.command("import-official")
def import_official(
    checkpoint: Annotated[Path, typer.Option(help="ulip_clip.pt or clap_clip.pt from the official C-MCR release")],
    release: Annotated[ReleaseName, typer.Option(help="which release (decides which head serves which space)")],
    out: Annotated[Path, typer.Option(help="our checkpoint format, usable by `project` / `evaluate-retrieval`")],
) -> None:
    """Convert an official release checkpoint (Head_A/Head_B) into projectors named by space."""
    from cmcr.artifacts import save_torch
    from cmcr.graph import connection_unit
    from cmcr.official import load_official

    _setup_logging()
    release = release.value
    projectors, config = load_official(checkpoint, release)
    save_torch(out, connection_unit(projectors, config, release).checkpoint())
    typer.echo(f"{release}: projectors for {', '.join(projectors)} ({config.projector.kind}) → {out}")


def _model(root: Path, variant: str, seed: Optional[int], checkpoint: Optional[Path], shared_space: str,
           graph: Optional[str] = None, encoders: bool = True):
    """The model a command works with: the pipeline's (``root``'s params say the setup and seeds), or ``checkpoint``.
    Without ``encoders`` (precomputed embeddings) a checkpoint needs no project around it."""
    from cmcr.api import ConnectedModel

    if checkpoint is not None and not encoders:
        return ConnectedModel.load(checkpoint, {}, shared_space=shared_space)
    return ConnectedModel.from_pipeline(root, variant, seed=seed, checkpoint=checkpoint, shared_space=shared_space,
                                        graph=graph, encoders=encoders)


RootOpt = Annotated[Path, typer.Option("--root", help="the project whose params.yaml says the setup (demo stand-ins "
                                                      "or paper.encoders) and whose models/ hold the checkpoints")]
VariantOpt = Annotated[str, typer.Option("--variant", "-v", help="which trained variant: models/connections/<variant>/")]
SeedOpt = Annotated[Optional[int], typer.Option(help="which of its training seeds (default: the first of params.yaml's "
                                                     "seeds): models/connections/<variant>/seed<seed>.pt")]
CheckpointOpt = Annotated[Optional[Path], typer.Option(help="another projector checkpoint (e.g. `cmcr import-official`'s)")]
GraphOpt = Annotated[Optional[str], typer.Option(help="a trained MCR graph instead of a variant (models/graphs/<graph>/): "
                                                      "every modality of the graph in one space, e.g. sounds and point clouds")]
SharedOpt = Annotated[str, typer.Option(help="the shared modality (text for CLIP–CLAP, images for CLIP–ULIP) from one "
                                             "space (clip / clap / ulip) or both averaged (mean)")]


def _check_modality(model: Any, modality: str, option: str) -> None:
    """``modality`` is one the model embeds (a connection's two spaces' modalities; a graph's, any space's)."""
    try:
        model.spaces_for(modality)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


@app.command()
def index(
    out: Annotated[Path, typer.Option(help="index folder to write (embeddings.npy, items.parquet, index.json, raw/)")],
    modality: Annotated[str, typer.Option(help="what the items are: image, text, audio, points — or, with --graph, "
                                               "any modality of the graph's spaces (a space of your own's, e.g. touch)")],
    folder: Annotated[Optional[Path], typer.Option(help="index every file under this folder (see --pattern)")] = None,
    pattern: Annotated[Optional[list[str]], typer.Option(help="with --folder: glob(s), e.g. '*.jpg' (repeatable)")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="or a Parquet listing the items (its other columns are "
                                                         "kept and shown with search results)")] = None,
    embeddings: Annotated[Optional[Path], typer.Option(help="or a space's precomputed N×d embeddings (.npy; with "
                                                           "--space; setup byo) — no encoder needed")] = None,
    items: Annotated[Optional[Path], typer.Option(help="with --embeddings: the Parquet describing its rows "
                                                       "(default: the .npy's sibling .parquet)")] = None,
    space: Annotated[Optional[str], typer.Option(help="with --embeddings: which space computed them")] = None,
    column: Annotated[str, typer.Option(help="with --manifest: the column holding paths (or texts)")] = "path",
    id_column: Annotated[Optional[str], typer.Option(help="with --manifest / --embeddings: unique id column "
                                                          "(default: the path; the row number)")] = None,
    root: RootOpt = Path("."),
    variant: VariantOpt = "K",
    graph: GraphOpt = None,
    seed: SeedOpt = None,
    checkpoint: CheckpointOpt = None,
    shared_space: SharedOpt = "mean",
    batch_size: int = 64,
    shard_size: int = 50_000,
    num_workers: int = 0,
    max_failure_rate: float = 0.01,
) -> None:
    """Embed a folder or a manifest into an index in the connected space (sharded and resumable), or index a
    space's precomputed embeddings (--embeddings, --space)."""
    from cmcr.artifacts import load_npy, read_parquet
    from cmcr.search import build_index, index_embeddings
    from cmcr.sources.files import list_files

    _setup_logging()
    if sum(x is not None for x in (folder, manifest, embeddings)) != 1:
        raise typer.BadParameter("give --folder, --manifest or --embeddings (one of them)")
    if embeddings is not None:
        if space is None:
            raise typer.BadParameter("--embeddings needs --space (which space computed them)", param_hint="--space")
        x = load_npy(embeddings)
        table = read_parquet(items or embeddings.with_suffix(".parquet"), rows=x.shape[0])
        model = _model(root, variant, seed, checkpoint, shared_space, graph, encoders=False)
        _check_modality(model, modality, "--modality")
        info = index_embeddings(model, space, modality, x, table, out, id_column=id_column)
        typer.echo(f"{out}: {info['rows']} {space} {modality} embeddings indexed (precomputed, projected)")
        return
    if folder is not None:
        if not folder.is_dir():
            raise typer.BadParameter(f"{folder}: not a folder", param_hint="--folder")
        table = list_files(folder, pattern or ["*"])
        things, ids, more = table["path"].astype(str).tolist(), table["id"].astype(str).tolist(), None
    else:
        table = read_parquet(manifest, columns=[column] + ([id_column] if id_column else []))
        things, ids = table[column].tolist(), table[id_column or column].astype(str).tolist()
        more = table.drop(columns=[column])  # the manifest's other columns, kept with the items
    model = _model(root, variant, seed, checkpoint, shared_space, graph)
    _check_modality(model, modality, "--modality")
    info = build_index(model, modality, things, ids, out, shard_size=shard_size, batch_size=batch_size,
                       num_workers=num_workers, max_failure_rate=max_failure_rate, rate_option="--max-failure-rate",
                       columns=more)
    typer.echo(f"{out}: {info['rows']} {modality} items indexed, {info['failed']} failed "
               f"(see {out / 'failures.parquet'})")


@app.command()
def search(
    index_dir: Annotated[Path, typer.Option("--index", help="an index folder from `cmcr index`")],
    query: Annotated[Optional[Path], typer.Option(help="a query file (image, audio, point cloud)")] = None,
    query_modality: Annotated[Optional[str], typer.Option(help="the query file's modality (image, audio, points; with "
                                                                "--graph any of the graph's)")] = None,
    text: Annotated[Optional[str], typer.Option(help="or a text query")] = None,
    query_embeddings: Annotated[Optional[Path], typer.Option(help="or precomputed query embeddings of a space (.npy, "
                                                                  "one row or Q rows; with --space and "
                                                                  "--query-modality)")] = None,
    space: Annotated[Optional[str], typer.Option(help="with --query-embeddings: which space computed them")] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="how many results")] = 5,
    root: RootOpt = Path("."),
    variant: VariantOpt = "K",
    graph: GraphOpt = None,
    seed: SeedOpt = None,
    checkpoint: CheckpointOpt = None,
    shared_space: SharedOpt = "mean",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the results as JSON")] = None,
    parquet_out: Annotated[Optional[Path], typer.Option("--parquet", help="also write the results as Parquet")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="also write a page with the query and its results")] = None,
    chunk: Annotated[int, typer.Option(help="index rows scored at a time (bounds memory)")] = 65_536,
) -> None:
    """Top-k items of an index for a query file, a text or precomputed query embeddings, by cosine similarity in the
    connected space; printed with the index's item columns (its manifest's, e.g. class columns)."""
    from cmcr.artifacts import load_npy
    from cmcr.search import search as run_search
    from cmcr.search import write_results

    _setup_logging()
    if sum(x is not None for x in (query, text, query_embeddings)) != 1:
        raise typer.BadParameter("give --query FILE (with --query-modality), --text TEXT or --query-embeddings NPY "
                                 "(with --space and --query-modality)")
    if k < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--k")
    if query_embeddings is not None:
        if space is None or query_modality is None:
            raise typer.BadParameter("--query-embeddings needs --space and --query-modality", param_hint="--space")
        model = _model(root, variant, seed, checkpoint, shared_space, graph, encoders=False)
        modality, item = query_modality, load_npy(query_embeddings, mmap=False)
    else:
        if query is not None and query_modality is None:
            raise typer.BadParameter("--query-modality is needed with --query (image, audio or points)")
        if query is not None and not query.is_file():
            raise typer.BadParameter(f"{query}: no such file", param_hint="--query")
        modality, item = (query_modality, str(query)) if query is not None else ("text", text)
        model = _model(root, variant, seed, checkpoint, shared_space, graph)
    _check_modality(model, modality, "--query-modality")
    results = run_search(model, index_dir, item, modality, k=k, chunk=chunk, space=space if query_embeddings else None)
    typer.echo(results.to_string(index=False, formatters={"score": "{:.4f}".format}))
    for path in (json_out, parquet_out):
        if path is not None:
            write_results(results, path)
    if html_out is not None and query_embeddings is None:
        from cmcr.examples import search_page

        search_page(html_out, modality, item, results, index_dir)
        typer.echo(f"page: {html_out}")


@app.command()
def experiments(
    root: Annotated[Path, typer.Option("--root", help="the DVC project")] = Path("."),
    width: Annotated[int, typer.Option(help="the widest line to print")] = 200,
    all_commits: Annotated[bool, typer.Option(help="experiments of every commit, not only HEAD's")] = False,
) -> None:
    """DVC experiments, readable: the params that differ between them and the headline metrics
    (metrics/summary.json) — what `dvc exp show` buries among ~190 columns."""
    from cmcr.exps import show_experiments

    if width < 40:
        raise typer.BadParameter("must be >= 40", param_hint="--width")
    typer.echo(show_experiments(root, width, all_commits), nl=False)


@app.command()
def clean(
    stale: Annotated[bool, typer.Option("--stale", help="remove checkpoints and training histories of variants, "
                                                      "graphs or seeds no longer in params.yaml (the validate stage's warning)")] = False,
    root: Annotated[Path, typer.Option("--root", help="the DVC project")] = Path("."),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what would be removed")] = False,
) -> None:
    """Remove outputs nothing reads any more (DVC keeps a removed stage's outputs in the workspace)."""
    from cmcr.experiments import describe_stale, seeds_of, stale_outputs, variant_names

    if not stale:
        raise typer.BadParameter("say what to clean: --stale", param_hint="--stale")
    p = load_params(root / "params.yaml")
    variants, graphs = variant_names(p), list(p.get("graphs") or {})
    doomed = stale_outputs(root, variants, seeds_of(p), graphs)
    if not doomed:
        typer.echo(f"{root}: no stale checkpoints or histories")
        return
    typer.echo(describe_stale(doomed, variants + graphs))
    for path in doomed:
        typer.echo(f"{'would remove' if dry_run else 'removed'} {path}")
        if not dry_run:
            (root / path).unlink()
            if not any((root / path).parent.iterdir()):
                (root / path).parent.rmdir()
    if not dry_run:
        typer.echo("git-tracked ones (models/history, models/graph_history: *.json) show as deleted: commit that with the params change")


@app.command("linear-world")
def linear_world(
    out: Annotated[Path, typer.Option(help="the folder to write (e.g. byo/embeddings; then dvc exp run -S setup=byo)")],
    seed: Annotated[int, typer.Option(help="the world's seed")] = 0,
) -> None:
    """Write the second public world (cmcr/linear_world.py: spaces that relate near-linearly, large modality gaps) as
    bring-your-own embeddings, dataset `linear`: list it under benchmarks (retrieval, zeroshot3d, graph)."""
    from cmcr.linear_world import LinearWorldConfig, write_linear_world

    _setup_logging()
    written = write_linear_world(out, LinearWorldConfig(seed=seed))
    typer.echo(f"{out}: {len(written)} sets ({sum(written.values()):,} rows) of the linear world, seed {seed}; "
               "dataset 'linear' (benchmarks: retrieval, zeroshot3d, graph)")


@app.command()
def provenance(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="write the JSON here (metrics/provenance.json "
                                                                    "beside committed outputs); default: print it")] = None,
) -> None:
    """What the pipeline's stages compute with on this machine: processor and feature class, the pinned CPU kernel
    paths and threads (and any CMCR_… override), library versions, the device. Measured in a fresh process with the
    stage environment. Run after `dvc repro` and commit it with the outputs (`make demo` does)."""
    from cmcr.artifacts import write_json
    from cmcr.reproducibility import measured_provenance

    record = measured_provenance()
    if out is None:
        typer.echo(json.dumps(record, indent=2))
        return
    write_json(out, record)
    typer.echo(f"wrote {out}: {record['processor']['model']} ({record['processor']['feature_class']}), "
               f"kernels {record['torch_cpu_capability']}, {record['threads']} thread(s)")


def main() -> None:
    """The ``cmcr`` entry point: a bad input or config (a ConfigError, ArtifactError, EmbeddingError,
    EncoderError, EmbedError or a missing file — each message names the file or key) prints as one line and
    exits with status 1; ``CMCR_TRACEBACK=1`` shows the traceback instead. Anything else is a bug and keeps its
    traceback."""
    from cmcr.api import EmbedError
    from cmcr.artifacts import ArtifactError
    from cmcr.checks import EmbeddingError
    from cmcr.device import configure_threads
    from cmcr.errors import one_line_errors
    from cmcr.extraction import EncoderError

    with one_line_errors("cmcr", (ConfigError, ArtifactError, EmbeddingError, EncoderError, EmbedError,
                                  FileNotFoundError)):
        configure_threads()
        app(prog_name="cmcr")


if __name__ == "__main__":  # pragma: no cover
    main()
