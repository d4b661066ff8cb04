"""Stage `evaluate@<benchmark>`: every trained variant on one benchmark.

retrieval      — audio↔image (AVE / Flickr-SoundNet protocol) for the CLIP–CLAP variants (Table 1, 5);
localization   — best proposal vs the sounding object's box, cIoU / AUC (Table 2; VGGSS, MUSIC);
counterfactual — the same scenes plus negatives, AP / Max-F1 per Eq. 11 (Table 3; Ex-VGGSS, Ex-FlickrNet);
zeroshot3d     — ModelNet40-style zero-shot 3D classification for the CLIP–ULIP variants (Table 4).
Writes metrics JSON (git-tracked, for `dvc metrics diff`) and per-item results as Parquet.
"""

import pandas as pd
import torch
import typer

from common import CONNECTIONS, EMBEDDINGS, METRICS, ROOT, params, setup_logging, run
from cmcr.artifacts import ArtifactError, load_embedding_set, write_json, write_parquet
from cmcr.experiments import variant_connection, variant_names
from cmcr.metrics.retrieval import match_ranks, random_expectation, retrieval_metrics
from cmcr.metrics.counterfactual import counterfactual_metrics
from cmcr.metrics.localization import localization_metrics, score_scenes
from cmcr.metrics.zeroshot import class_embeddings, topk_accuracy
from cmcr.train import load_checkpoint

CONNECTION = {"retrieval": "clip_clap", "localization": "clip_clap", "counterfactual": "clip_clap",
              "zeroshot3d": "clip_ulip"}


def random_proposal_baseline(proposal_rows, scene_rows, benchmark: str, seed: int = 0) -> dict:
    """A training-free baseline: random embeddings, i.e. a random proposal and a random confidence."""
    g = torch.Generator().manual_seed(seed)
    scored = score_scenes(torch.randn(len(proposal_rows), 8, generator=g), proposal_rows,
                          torch.randn(len(scene_rows), 8, generator=g), scene_rows)
    if benchmark == "localization":
        return localization_metrics(scored["iou"])
    return counterfactual_metrics(scored["confidence"], scored["iou"], scored["positive"])


def main(benchmark: str) -> None:
    log = setup_logging(f"evaluate@{benchmark}")
    p = params()
    if benchmark not in CONNECTION:
        raise typer.BadParameter(f"unknown benchmark {benchmark!r}; known: {sorted(CONNECTION)}")
    variants = [v for v in variant_names(p) if variant_connection(p, v) == CONNECTION[benchmark]]
    metrics: dict = {}
    items = []
    try:
        if benchmark == "retrieval":
            audio, audio_rows = load_embedding_set(EMBEDDINGS / "clap", "eval_audio")
            image, image_rows = load_embedding_set(EMBEDDINGS / "clip", "eval_image")
            audio, image = torch.from_numpy(audio[:]), torch.from_numpy(image[:])
        elif benchmark in ("localization", "counterfactual"):
            proposals, proposal_rows = load_embedding_set(EMBEDDINGS / "clip", "scene_proposals",
                                                          columns=["scene_id", "x1", "y1", "x2", "y2"])
            audio, scene_rows = load_embedding_set(EMBEDDINGS / "clap", "scene_audio",
                                                   columns=["scene_id", "positive", "width", "height", "gt_boxes"])
            proposals, audio = torch.from_numpy(proposals[:]), torch.from_numpy(audio[:])
            if benchmark == "localization":  # Table 2 uses the pairs whose sound source is visible
                keep = scene_rows["positive"].to_numpy(dtype=bool)
                scene_rows, audio = scene_rows[keep].reset_index(drop=True), audio[torch.from_numpy(keep)]
        else:
            points, point_rows = load_embedding_set(EMBEDDINGS / "ulip", "eval_points", columns=["concept"])
            prompts, prompt_rows = load_embedding_set(EMBEDDINGS / "clip", "prompts", columns=["label"])
            points, prompts = torch.from_numpy(points[:]), torch.from_numpy(prompts[:])
            labels = torch.as_tensor(prompt_rows["label"].to_numpy())
            num_classes = int(labels.max()) + 1
    except ArtifactError as exc:  # e.g. bring-your-own embeddings without this benchmark's set
        log.warning("benchmark %s skipped: %s", benchmark, exc)
        write_json(METRICS / f"{benchmark}.json", {"skipped": str(exc)})
        write_parquet(ROOT / "data" / "eval" / f"{benchmark}_items.parquet", pd.DataFrame())
        return
    for name in variants:
        model = load_checkpoint(CONNECTIONS / f"{name}.pt")
        with torch.no_grad():
            if benchmark == "retrieval":
                a = model.projectors["clap"].embed(audio)
                i = model.projectors["clip"].embed(image)
                metrics[name] = {"A2I": retrieval_metrics(a, i), "I2A": retrieval_metrics(i, a)}
                for direction, (q, g) in {"A2I": (a, i), "I2A": (i, a)}.items():
                    items.append(pd.DataFrame({"variant": name, "direction": direction,
                                               "query": range(len(q)), "rank": match_ranks(q, g).numpy()}))
            elif benchmark in ("localization", "counterfactual"):
                scored = score_scenes(model.projectors["clip"].embed(proposals), proposal_rows,
                                      model.projectors["clap"].embed(audio), scene_rows)
                if benchmark == "localization":
                    metrics[name] = localization_metrics(scored["iou"])
                else:
                    metrics[name] = counterfactual_metrics(scored["confidence"], scored["iou"], scored["positive"])
                items.append(scored.assign(variant=name))
            else:
                classes = class_embeddings(model.projectors["clip"].embed(prompts), labels, num_classes)
                x = model.projectors["ulip"].embed(points)
                truth = torch.as_tensor(point_rows["concept"].to_numpy())
                metrics[name] = topk_accuracy(x, classes, truth)
                predicted = (x @ classes.T).argmax(1)
                items.append(pd.DataFrame({"variant": name, "item": range(len(x)), "label": truth.numpy(),
                                           "predicted": predicted.numpy()}))
        log.info("%s: %s", name, metrics[name])
    if benchmark == "retrieval":
        metrics["random"] = {"A2I": random_expectation(len(audio)), "I2A": random_expectation(len(audio))}
    elif benchmark in ("localization", "counterfactual"):
        metrics["random"] = random_proposal_baseline(proposal_rows, scene_rows, benchmark)
    else:
        metrics["random"] = {f"top{k}": 100 * k / num_classes for k in (1, 3, 5)}
    write_json(METRICS / f"{benchmark}.json", metrics)
    write_parquet(ROOT / "data" / "eval" / f"{benchmark}_items.parquet", pd.concat(items, ignore_index=True))


if __name__ == "__main__":
    run(main)
