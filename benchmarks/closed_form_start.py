"""Does the learned objective keep the closed form? (issue 30, point 3) — each leaf of the ``extend`` graph started
*at* the centred ridge map and trained by Ex-MCR's objective (:func:`cmcr.exmcr.dense_alignment`, Eq. 3 noise,
the link's epochs, batch size and learning rate), scored on audio→3D (which no link trains), 3D→text, audio→image,
audio→text, mean ± std over seeds, with the objective's value on the whole tuple set before and after.

    python benchmarks/closed_form_start.py --root /tmp/lw --dataset linear          # the linear world (benchmarks/linear_world.py --keep /tmp/lw)
    python benchmarks/closed_form_start.py --root /tmp/lw --dataset linear -S loss.shared_temperature=0.05 -S loss.pseudo_temperature=0.05
    python benchmarks/closed_form_start.py --lr-scale 0 ...                           # no step: the closed form itself

The module per leaf: ``h = W x`` (W the centred ridge map, :func:`cmcr.closed_form.fit_link`) plus an Ex-MCR MLP on
``h`` whose last BatchNorm scale starts at 0, so step 0 *is* the closed form (``--lr-scale 0`` reproduces its
table row). Every modality is centred by its training-set mean on both sides (the leaf's inputs, the base's
targets and embeddings), as the centred closed form is. ``--init identity`` starts W at the identity instead (the
same centred objective, no closed form). Not a pipeline mode: a measurement.
"""

from __future__ import annotations

from cmcr.reproducibility import pin_process

pin_process()

import math  # noqa: E402
import statistics  # noqa: E402
from pathlib import Path  # noqa: E402

import typer  # noqa: E402

app = typer.Typer(add_completion=False)
ROOT = Path(__file__).resolve().parents[1]
TASKS = (("audio_points", "A2P", "mAP", "A→3D mAP"), ("points_text", None, "top1", "3D→T top1"),
         ("audio_image", "A2I", "mAP", "A→I mAP"), ("audio_text", "A2T", "mAP", "A→T mAP"))


@app.command()
def main(root: Path = ROOT, dataset: str = "demo", seeds: list[int] = typer.Option([0, 1, 2]),
         init: str = typer.Option("closed_form", help="closed_form | identity"), lr_scale: float = 1.0,
         set_: list[str] = typer.Option(None, "--set", "-S", help="params overrides, e.g. loss.shared_temperature=0.05")) -> None:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from cmcr.closed_form import LinearConfig, LinearLinkData, fit_link
    from cmcr.enhance import semantic_completion
    from cmcr.evaluation import load_task, score_model
    from cmcr.exmcr import ExtendConfig, dense_alignment
    from cmcr.graph import ExtendLinkData, extend_tuples, graph_config, graphs_of
    from cmcr.params import deep_merge, load_params, parse_overrides
    from cmcr.plan import aggregate_folder

    torch.set_num_threads(2)
    embeddings, aggregated = root / "data" / "embeddings", root / "data" / "aggregated"
    params = deep_merge(load_params(root / "params.yaml"), parse_overrides(list(set_ or [])))
    graph = graphs_of(params)["extend"]
    configs, extend = graph_config(params, graph), ExtendConfig.from_params(params)
    data = {k: ExtendLinkData.from_pipeline(embeddings, aggregate_folder(aggregated, k, c.memory.mode), c) for k, c in configs.items()}
    tuples = extend_tuples(graph, data, configs, extend)
    linear = {link.name: LinearLinkData.from_pipeline(embeddings, link) for link in graph.links}
    means = {(s, m): torch.tensor(v, dtype=torch.float32) for d in linear.values() for s, by in d.means.items() for m, v in by.items()}
    tasks = {t: load_task(embeddings, t, dataset)[0] for t, *_ in TASKS}

    class Started(nn.Module):
        def __init__(self, weight, hidden: int) -> None:
            super().__init__()
            width_in, width = weight.shape
            self.linear = nn.Linear(width_in, width)
            self.mlp = nn.Sequential(*[layer for _ in range(2) for layer in (
                nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, width), nn.BatchNorm1d(width))])
            with torch.no_grad():
                for layer in self.mlp:
                    if isinstance(layer, nn.Linear):
                        nn.init.xavier_uniform_(layer.weight)
                self.mlp[-1].weight.zero_()
                self.linear.bias.zero_()
                if init == "closed_form":
                    self.linear.weight.copy_(torch.tensor(weight.T, dtype=torch.float32))
                else:
                    nn.init.eye_(self.linear.weight)

        def forward(self, x):
            h = self.linear(x)
            return h + self.mlp(h)

    def objective(module, leaf_memory, leaf_shared, targets, config) -> float:
        with torch.no_grad():
            parts = dense_alignment(module(leaf_memory), module(leaf_shared), *targets, config, extend.dense)
            return float(torch.stack(list(parts.values())).sum())

    per_seed, losses = [], []
    for seed in seeds:
        modules = {}
        for leaf, (parent, link) in graph.toward_base().items():
            config = configs[link.name]
            t = tuples[leaf]
            memory, shared, parent_memory = link.memory_modality[leaf], link.shared_modality, link.memory_modality[parent]
            targets = (F.normalize(t["parent_shared"] - means[parent, shared], dim=-1),
                       F.normalize(t["parent_memory"] - means[parent, parent_memory], dim=-1))
            torch.manual_seed(seed)
            module = Started(fit_link(linear[link.name], leaf, parent, LinearConfig("ridge", True, 0.01)),
                             config.projector.hidden_dim)
            whole = (t["leaf_memory"] - means[leaf, memory], t["leaf_shared"] - means[leaf, shared])
            module.eval()
            before = objective(module, *whole, targets, config)
            n, batch = int(t["leaf_memory"].shape[0]), config.train.batch_size
            steps = config.train.epochs * math.ceil(n / batch)
            optimiser = torch.optim.AdamW(module.parameters(), lr=config.train.lr * lr_scale, weight_decay=config.train.weight_decay)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
            generator = torch.Generator().manual_seed(seed)
            module.train()
            for _ in range(config.train.epochs if lr_scale > 0 else 0):
                order = torch.randperm(n, generator=generator)
                for start in range(0, n - 1, batch):
                    i = order[start:start + batch]
                    m = semantic_completion(t["leaf_memory"][i], config.noise, generator) - means[leaf, memory]
                    s = semantic_completion(t["leaf_shared"][i], config.noise, generator) - means[leaf, shared]
                    parts = dense_alignment(module(m), module(s), targets[0][i], targets[1][i], config, extend.dense)
                    loss = torch.stack(list(parts.values())).sum()
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    schedule.step()
            module.eval()
            losses.append((leaf, seed, before, objective(module, *whole, targets, config)))
            modules[leaf] = module

        def embed_of(space):
            if space == graph.base:
                return lambda x, modality=None: F.normalize(torch.as_tensor(x).float() - means[space, modality], dim=-1)
            return lambda x, modality=None: F.normalize(modules[space](torch.as_tensor(x).float() - means[space, modality]), dim=-1)

        embed = {s: embed_of(s) for s in graph.spaces}
        scores = {}
        with torch.no_grad():
            for task, direction, metric, label in TASKS:
                m = score_model(tasks[task], embed, "started")[0]
                scores[label] = m[direction][metric] if direction else m[metric]
        per_seed.append(scores)
    print(f"{root} ({dataset}), extend started at {init}, lr × {lr_scale:g}, overrides {list(set_ or [])}, seeds {list(seeds)}")
    for leaf, seed, before, after in losses:
        print(f"  {leaf} seed {seed}: objective {before:.3f} at the start → {after:.3f} after training")
    print("| " + " | ".join(t[3] for t in TASKS) + " |")
    print("|" + " --- |" * len(TASKS))
    print("| " + " | ".join(f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.2f}"
                            for v in ([s[t[3]] for s in per_seed] for t in TASKS)) + " |")


if __name__ == "__main__":
    app()
