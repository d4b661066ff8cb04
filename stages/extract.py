"""Stage `extract@<space>`: embed the sets a space contributes (texts, memories, evaluation items).

setup demo: encode the world's files with the trained stand-in; setup byo: validate and copy the
user's NPY + Parquet sets from `byo/embeddings/<space>/`; setup paper: encode the user's files (listed in
Parquet manifests, `paper.sets`) with the real encoder (`paper.encoders`), sharded and resumable —
shards live in `data/shards/` (outside DVC's outputs) so a killed stage resumes where it stopped.
"""

import pandas as pd

from common import BYO, EMBEDDINGS, ROOT, SPACES, TEXTS, WORLD, params, run, setup_logging
from cmcr.artifacts import ArtifactError, atomic_dir, load_embedding_set, load_npy, read_parquet, save_embedding_set, write_parquet
from cmcr.checks import check_matrix, check_unit_norm
from cmcr.evaluation import evaluation_sets
from cmcr.experiments import setup_of
from cmcr.extraction import extract_sharded
from cmcr.spaces import build_space, check_failure_rate, extract
from cmcr.world import class_prompts, concept_names

#: training sets (required): set name → (modality, where its items come from)
TRAINING_SETS = {
    "clip": {"text": ("text", "texts"), "image": ("image", "memory")},
    "clap": {"text": ("text", "texts"), "audio": ("audio", "memory")},
    "ulip": {"image": ("image", "memory"), "points": ("points", "memory")},
}
#: evaluation sets (optional, one per configured dataset, files `<set>@<dataset>`)
EVAL_SOURCES = {"eval_image": ("image", "eval"), "prompts": ("text", "prompts"),
                "scene_proposals": ("image", "proposals"), "eval_audio": ("audio", "eval"),
                "scene_audio": ("audio", "scenes"), "eval_points": ("points", "eval")}


def sets_of(space: str, benchmarks) -> dict[str, tuple[str, str, bool]]:
    """``{file name: (modality, source, required)}`` for this space and the configured datasets."""
    sets = {name: (*spec, True) for name, spec in TRAINING_SETS[space].items()}
    for file_name, name in evaluation_sets(benchmarks, space).items():
        sets[file_name] = (*EVAL_SOURCES[name], False)
    return sets


def demo_items(modality: str, source: str) -> pd.DataFrame:
    """The rows to embed, with an ``item`` column (path or text) and descriptive columns."""
    if source == "texts":
        texts = pd.read_parquet(TEXTS)
        return texts.assign(item=texts["text"])
    if source == "prompts":
        names = concept_names()
        rows = [{"label": c, "name": n, "prompt": t} for c, n in enumerate(names) for t in class_prompts(n)]
        frame = pd.DataFrame(rows)
        return frame.assign(item=frame["prompt"])
    if source == "proposals":  # crops of each scene at the proposal boxes
        boxes = pd.read_parquet(WORLD / "scenes" / "proposals.parquet")
        items = [(str(WORLD / "scenes" / f"{sid}.png"), (x1, y1, x2, y2))
                 for sid, x1, y1, x2, y2 in boxes[["scene_id", "x1", "y1", "x2", "y2"]].itertuples(index=False)]
        return boxes.assign(item=items)
    if source == "scenes":
        scenes = pd.read_parquet(WORLD / "scenes" / "scenes.parquet")
        return scenes.drop(columns=["image", "audio"]).assign(item=[str(WORLD / a) for a in scenes["audio"]])
    manifest = pd.read_parquet(WORLD / "manifest.parquet")
    rows = manifest[(manifest["modality"] == modality) & (manifest["split"] == source)].sort_values("pair_id" if source == "eval" else "item_id")
    return rows.assign(item=[str(WORLD / p) for p in rows["path"]]).reset_index(drop=True)


def paper_items(space: str, name: str, source: str, sets) -> pd.DataFrame | None:
    """Rows to embed in the paper setup: the texts, or a user manifest (``paper.sets.<space>.<name>``)."""
    if source == "texts":
        texts = pd.read_parquet(TEXTS)
        return texts.assign(item=texts["text"])
    spec = (sets.get(space) or {}).get(name)
    if not spec:
        return None
    column = spec.get("column", "path")
    manifest = read_parquet(spec["manifest"], columns=[column])
    if source == "proposals":  # one row per box: crop the image at it
        boxes = read_parquet(spec["manifest"], columns=[column, "scene_id", "x1", "y1", "x2", "y2"])
        items = [(str(path), (x1, y1, x2, y2)) for path, x1, y1, x2, y2
                 in boxes[[column, "x1", "y1", "x2", "y2"]].itertuples(index=False)]
        return boxes.assign(item=items)
    return manifest.assign(item=[str(x) for x in manifest[column]])


def copy_byo(space: str, sets, tmp, p, log) -> None:
    """Bring your own: validate the user's NPY + Parquet sets and copy them."""
    src = BYO / space
    for name, (_, _, required) in sets.items():
        if not (src / f"{name}.npy").exists():
            if required:
                raise ArtifactError(f"bring-your-own embeddings: {src / (name + '.npy')} is missing (required)")
            log.warning("%s: no %s set (its benchmark will be skipped)", src, name)
            continue
        matrix, table = load_embedding_set(src, name)
        check_matrix(matrix, str(src / f"{name}.npy"))
        check_unit_norm(matrix, str(src / f"{name}.npy"))
        save_embedding_set(tmp, name, matrix, table)


def extract_paper(space: str, sets, tmp, p, log) -> None:
    """The real encoder over the user's manifests, sharded in data/shards/ (resumable across runs)."""
    cfg = p["paper"]
    encoder = build_space(space, **dict(cfg["encoders"][space]))
    ext = cfg["extraction"]
    failures = []
    for name, (modality, source, required) in sets.items():
        rows = paper_items(space, name, source, cfg["sets"])
        if rows is None:
            if required:
                raise ArtifactError(f"setup paper: paper.sets.{space}.{name} (a manifest of the {modality} files) "
                                    "is required")
            log.warning("paper.sets.%s.%s not given: its benchmark will be skipped", space, name)
            continue
        shards = ROOT / "data" / "shards" / space
        summary = extract_sharded(encoder, modality, list(rows["item"]), [str(i) for i in range(len(rows))],
                                  shards, name, shard_size=ext["shard_size"], batch_size=ext["batch_size"],
                                  num_workers=ext["num_workers"], max_failure_rate=p["extraction"]["max_failure_rate"])
        if not summary.merged:
            raise ArtifactError(f"{space}/{name}: shards of other ranks are missing in {shards}; this stage runs one "
                                "process (unset RANK/WORLD_SIZE), or run `cmcr extract` under torchrun first")
        kept = read_parquet(shards / f"{name}.parquet")["position"].to_numpy()
        table = rows.iloc[kept].drop(columns=["item"]).reset_index(drop=True)
        save_embedding_set(tmp, name, load_npy(shards / f"{name}.npy"), table)
        lost = read_parquet(shards / f"{name}.failures.parquet")
        failures += [{"id": str(r.id), "item": str(rows["item"].iloc[int(r.position)]), "reason": r.reason, "set": name}
                     for r in lost.itertuples()]
        log.info("%s/%s: %d embedded, %d failed", space, name, summary.embedded, summary.failed)
    write_parquet(tmp / "failures.parquet", pd.DataFrame(failures, columns=["id", "item", "reason", "set"]))


def extract_demo(space: str, sets, tmp, p, log) -> None:
    """The trained demo stand-in over the demo world's files."""
    encoder = build_space(f"demo_{space}", checkpoint=SPACES / f"{space}.pt")
    failures = []
    for name, (modality, source, _) in sets.items():
        rows = demo_items(modality, source)
        result = extract(encoder, modality, list(rows["item"]), ids=[str(i) for i in rows.index],
                         desc=f"{space} {name}")
        failures += [{**f, "set": name} for f in result.failures]
        table = rows.iloc[result.kept].drop(columns=["item"]).reset_index(drop=True)
        save_embedding_set(tmp, name, result.embeddings, table)
        log.info("%s/%s: %d embedded, %d failed", space, name, len(result.kept), len(result.failures))
        check_failure_rate(f"{space}/{name}", len(result.failures), len(rows), p["extraction"]["max_failure_rate"],
                           f"first: {result.failures[0] if result.failures else None}")
    write_parquet(tmp / "failures.parquet", pd.DataFrame(failures, columns=["id", "item", "reason", "set"]))


def main(space: str) -> None:
    log = setup_logging(f"extract@{space}")
    p = params()
    sets = sets_of(space, p["benchmarks"])
    setup = setup_of(p)
    if setup == "demo":
        others = sorted({f.split("@")[1] for f in sets if "@" in f} - {"demo"})
        if others:
            raise ArtifactError(f"setup demo provides the evaluation dataset 'demo' only; benchmarks lists {others}")
    run_setup = {"byo": copy_byo, "paper": extract_paper, "demo": extract_demo}[setup]
    with atomic_dir(EMBEDDINGS / space) as tmp:
        run_setup(space, sets, tmp, p, log)


if __name__ == "__main__":
    run(main)
