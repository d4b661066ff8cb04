"""Stage `extract@<space>`: embed the sets a space contributes (texts, memories, evaluation items).

Which sets: the space's plan ``data/params/spaces/<space>.json`` (the validate stage's, :func:`cmcr.plan.space_sets`):
the training sets of the links the variants and graphs train on, true pairs of the paired-data references, and
the evaluation sets of the configured benchmark datasets — so a link or graph declared over sets already
embedded does not re-extract. Where the items come from: setup demo —
the demo world's files (`WorldFiles`) with the trained stand-in; setup paper — the user's Parquet
manifests (`paper.sets`) with the real encoder (`paper.encoders`); setup byo — no encoder: the user's
NPY + Parquet sets in `byo/embeddings/<space>/` are validated and copied. Demo and paper go through the
same sharded, resumable extraction (`cmcr.extraction.extract_sharded`): shards live in
`data/shards/<space>/` (outside DVC's outputs), so a killed stage resumes where it stopped.
"""

from common import BYO, EMBEDDINGS, ROOT, SPACES, TEXTS, WORLD, run, setup_logging, skipped_marker

import json

import pandas as pd

from cmcr.artifacts import ArtifactError, atomic_dir, load_embedding_set, load_npy, read_parquet, save_embedding_set, write_parquet
from cmcr.checks import check_matrix, check_unit_norm
from cmcr import layout
from cmcr.experiments import setup_of
from cmcr.plan import read_plan, sets_from_plan
from cmcr.extraction import ExtractionJob, extract_on_devices, resolve_devices
from cmcr.items import manifest_items
from cmcr.world import WorldFiles

#: the demo world's extraction settings (its sets are small; paper.extraction is for the real encoders)
DEMO_EXTRACTION = {"batch_size": 256, "num_workers": 0, "shard_size": 50_000, "devices": 1}


def texts_rows() -> pd.DataFrame:
    texts = pd.read_parquet(TEXTS)
    return texts.assign(item=texts["text"])


def demo_rows(space: str, name: str, modality: str, p) -> pd.DataFrame:
    if name == "text":
        return texts_rows()
    return WorldFiles(WORLD).rows(name.split("@")[0], modality)


def paper_rows(space: str, name: str, modality: str, p) -> pd.DataFrame | None:
    """The texts, or the user's manifest ``paper.sets.<space>.<name>`` (None when not given)."""
    if name == "text":
        return texts_rows()
    spec = ((p["paper"].get("sets") or {}).get(space) or {}).get(name)  # the plan holds this space's sets only
    if not spec:
        return None
    column = spec.get("column", "path")
    table = read_parquet(spec["manifest"])
    try:
        items = manifest_items(table, column, modality)
    except ValueError as exc:
        raise ArtifactError(f"paper.sets.{space}.{name}: {spec['manifest']}: {exc}") from None
    return table.assign(item=items)


def copy_byo(space: str, sets, tmp, p, log) -> None:
    """Bring your own: validate the user's NPY + Parquet sets and copy them."""
    src = BYO / space
    for name, (_, required) in sets.items():
        if not (src / f"{name}.npy").exists():
            if required:
                raise ArtifactError(f"bring-your-own embeddings: {src / (name + '.npy')} is missing (required)")
            log.warning("%s: no %s set (its benchmark will be skipped)", src, name)
            continue
        matrix, table = load_embedding_set(src, name)
        check_matrix(matrix, str(src / f"{name}.npy"))
        check_unit_norm(matrix, str(src / f"{name}.npy"))
        save_embedding_set(tmp, name, matrix, table)


def extract_sets(space: str, sets, tmp, p, log, encoder: tuple[str, dict], rows_of, ext) -> None:
    """Every set through the sharded extraction — on one worker per device of ``ext['devices']`` (paper:
    ``paper.extraction.devices``), merged once — and the kept rows' tables and all failures written to ``tmp``.
    ``encoder`` is the registered space's name and its keyword arguments (each worker builds its own)."""
    shards = ROOT / layout.SHARDS / space
    jobs, tables = [], {}
    for name, (modality, required) in sets.items():
        rows = rows_of(space, name, modality, p)
        if rows is None:
            if required:
                raise ArtifactError(f"setup paper: paper.sets.{space}.{name} (a manifest of the {modality} files) "
                                    "is required")
            log.warning("paper.sets.%s.%s not given: its benchmark will be skipped", space, name)
            continue
        tables[name] = rows.reset_index(drop=True)
        jobs.append(ExtractionJob(name, modality, list(tables[name]["item"]), [str(i) for i in range(len(rows))]))
    devices = resolve_devices(ext.get("devices", "auto"))
    summaries = extract_on_devices(*encoder, jobs, shards, devices, shard_size=ext["shard_size"],
                                   batch_size=ext["batch_size"], num_workers=ext["num_workers"],
                                   max_failure_rate=p["extraction"]["max_failure_rate"],
                                   rate_option="extraction.max_failure_rate in params.yaml")
    failures = []
    for job in jobs:
        summary, rows = summaries[job.name], tables[job.name]
        if not summary.merged:
            raise ArtifactError(f"{space}/{job.name}: shards of other ranks are missing in {shards}; this stage "
                                "starts its own workers (paper.extraction.devices; unset RANK/WORLD_SIZE)")
        kept = read_parquet(shards / f"{job.name}.parquet")["position"].to_numpy()
        table = rows.iloc[kept].drop(columns=["item"]).reset_index(drop=True)
        save_embedding_set(tmp, job.name, load_npy(shards / f"{job.name}.npy"), table)
        lost = read_parquet(shards / f"{job.name}.failures.parquet")
        failures += [{"id": str(r.id), "item": str(rows["item"].iloc[int(r.position)]), "reason": r.reason,
                      "set": job.name} for r in lost.itertuples()]
        log.info("%s/%s: %d embedded, %d failed", space, job.name, summary.embedded, summary.failed)
    if failures:
        log.warning("%s: %d item(s) failed to load in all; see %s", space, len(failures),
                    EMBEDDINGS / space / "failures.parquet")
    write_parquet(tmp / "failures.parquet", pd.DataFrame(failures, columns=["id", "item", "reason", "set"]))


def main(space: str) -> None:
    log = setup_logging(f"extract@{space}")
    plan_file = ROOT / layout.space_plan(space)
    plan = read_plan(plan_file)
    sets, p = sets_from_plan(plan), plan["params"]  # the params it reads: cmcr.plan.extraction_params
    log.info("plan %s: %d sets", plan_file, len(sets))
    setup = setup_of(p)
    if setup == "demo":
        others = sorted({f.split("@")[1] for f in sets if "@" in f} - {"demo"})
        if others:
            raise ArtifactError(f"setup demo provides the evaluation dataset 'demo' only; benchmarks lists {others}")
    with atomic_dir(EMBEDDINGS / space) as tmp:
        if not sets:  # no variant's connection and no benchmark needs this space: no encoder, no files
            reason = f"no link the variants or graphs train on and no configured benchmark needs {space}"
            log.info("%s: nothing to extract (%s)", space, reason)
            skipped_marker(tmp, reason)
            return
        if setup == "byo":
            copy_byo(space, sets, tmp, p, log)
        elif setup == "paper":
            kwargs = json.loads(json.dumps(p["paper"]["encoders"][space]))  # plain data: workers get a copy
            extract_sets(space, sets, tmp, p, log, (space, kwargs), paper_rows, p["paper"]["extraction"])
        else:
            extract_sets(space, sets, tmp, p, log, (f"demo_{space}", {"checkpoint": str(SPACES / f"{space}.pt")}),
                         demo_rows, DEMO_EXTRACTION)


if __name__ == "__main__":
    run(main)
