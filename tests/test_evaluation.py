"""cmcr.evaluation: models as embedding functions per space, baselines."""

import math

import pandas as pd
import pytest
import torch

from cmcr.evaluation import EvalSet, TaskData, no_connection, random_baseline, score_model
from conftest import unit


def test_no_connection_compares_spaces_as_they_are():
    x = unit(20, 8)
    ids = pd.DataFrame({"pair_id": range(20)})
    data = TaskData("retrieval", "retrieval", {"audio": EvalSet("clap", "audio", 3 * x, ids),
                                               "image": EvalSet("clip", "image", x, ids)})
    metrics, items = score_model(data, no_connection(("clip", "clap")), "no_connection")
    assert metrics["A2I"]["mAP"] == 100.0 and metrics["I2A"]["R@1"] == 100.0
    assert set(items["direction"]) == {"A2I", "I2A"} and (items["rank"] == 1).all()


def test_zeroshot_model_and_chance():
    prompts = torch.eye(4)[[0, 0, 1, 1, 2, 2]]  # two prompts per class, 3 classes
    table = pd.DataFrame({"label": [0, 0, 1, 1, 2, 2]})
    points = torch.eye(4)[[0, 1, 2, 2]]
    data = TaskData("zeroshot3d", "zeroshot", {"points": EvalSet("ulip", "points", points, pd.DataFrame({"concept": [0, 1, 2, 0]})),
                                               "prompts": EvalSet("clip", "text", prompts, table)})
    metrics, items = score_model(data, no_connection(("clip", "ulip")), "x")
    assert metrics["top1"] == pytest.approx(75.0)  # the last item is a class-2 cloud labelled 0
    assert items["rank"].tolist() == [1, 1, 1, 3] and set(items["direction"]) == {"P2T"}  # cos 1, 1, 1; class 0 third
    assert random_baseline(data) == {"top1": pytest.approx(100 / 3), "top3": 100.0, "top5": 100.0}


def test_retrieval_pairs_are_joined_by_id_not_row():
    """One item lost on each side, on different rows: exactly the metrics of the clean subset."""
    import pandas as pd

    from cmcr.evaluation import join_pairs
    from cmcr.metrics.retrieval import retrieval_metrics

    g = torch.Generator().manual_seed(0)
    audio = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1)
    image = torch.nn.functional.normalize(audio + 0.5 * torch.randn(6, 8, generator=g), dim=1)
    ids = pd.DataFrame({"pair_id": [10, 11, 12, 13, 14, 15]})
    keep_audio, keep_image = [0, 1, 3, 4, 5], [0, 1, 2, 3, 5]  # audio of pair 12 and image of pair 14 failed
    a, at, i, it, coverage = join_pairs(audio[keep_audio], ids.iloc[keep_audio].reset_index(drop=True),
                                        image[keep_image], ids.iloc[keep_image].reset_index(drop=True))
    assert coverage == {"scored": 4, "listed": 6}
    assert at["pair_id"].tolist() == it["pair_id"].tolist() == [10, 11, 13, 15]
    clean = [0, 1, 3, 5]
    assert retrieval_metrics(a, i) == retrieval_metrics(audio[clean], image[clean])
    # by row, the same inputs would have scored pair 13's audio against pair 12's image
    assert not torch.equal(image[keep_image][2], i[2])
    with pytest.raises(ValueError, match="no 'pair_id' column"):
        join_pairs(audio, pd.DataFrame({"x": range(6)}), image, ids)
    with pytest.raises(ValueError, match="repeats"):
        join_pairs(audio, pd.DataFrame({"pair_id": [1, 1, 2, 3, 4, 5]}), image, ids)


def test_id_column_by_modality():
    import pandas as pd

    from cmcr.pairing import id_column

    images = pd.DataFrame({"item_id": [4, 5], "text_id": [-1, -1], "path": ["a", "b"]})
    assert id_column(images, images, "image") == "item_id"  # not text_id, which images carry as -1
    assert id_column(images[["path"]], images, "image") == "path"
    texts = pd.DataFrame({"text_id": [1, 2], "text": ["x", "y"]})
    assert id_column(texts, texts, "text") == "text_id" and id_column(images[["path"]], texts, "text") is None


def test_training_items_of_two_spaces_are_aligned_by_id():
    """The texts in CLIP and in CLAP, each missing a different text (a load failure on each side, on
    different rows): only the texts in both remain, row i of one side the same text as row i of the other."""
    import pandas as pd

    from cmcr.pairing import align_by_id

    clip = pd.DataFrame({"text_id": [0, 1, 3, 4, 5], "text": ["a", "b", "d", "e", "f"]})  # text 2 failed in CLIP
    clap = pd.DataFrame({"text_id": [0, 1, 2, 3, 5], "text": ["a", "b", "c", "d", "f"]})  # text 4 failed in CLAP
    rows, key = align_by_id({"clip": clip, "clap": clap}, "text")
    assert key == "text_id" and rows == {"clip": [0, 1, 2, 4], "clap": [0, 1, 3, 4]}
    assert clip["text"].iloc[rows["clip"]].tolist() == clap["text"].iloc[rows["clap"]].tolist() == ["a", "b", "d", "f"]
    assert align_by_id({"clip": clip, "clap": clip}, "text") == (None, "text_id")  # nothing to do
    with pytest.raises(ValueError, match="no common id column"):
        align_by_id({"clip": clip[["text"]], "clap": clap}, "text")


def test_one_driver_scores_rows_over_seeds_and_names_what_it_skips():
    """Issue 31, point 4: every family goes through score_rows — a trained unit's seeds become mean ± std and every
    seed, a row scored once stays as it is, a row the caller's rule or `unusable` rejects is named with its reason,
    and every per-item row carries the caller's columns and its seed (-1 for a row scored once)."""
    from cmcr.evaluation import Row, score_rows

    x = unit(10, 6)
    ids = pd.DataFrame({"pair_id": range(10)})
    data = TaskData("retrieval", "retrieval", {"audio": EvalSet("clap", "audio", x, ids),
                                               "image": EvalSet("clip", "image", x, ids)})

    def shuffled(k):  # a model whose audio side is x with its first k rows rolled: exactly 10 - k pairs at rank 1
        return {"clip": lambda v, modality=None: v,
                "clap": lambda v, modality=None: torch.cat([v[:k].roll(1, 0), v[k:]]) if k else v}

    rows = [Row("exact", None, shuffled(0)), Row("unit", 0, shuffled(2)), Row("unit", 1, shuffled(4)),
            Row("no_connection", None, shuffled(0)), Row("other_space", None, {"clip": shuffled(0)["clip"]})]
    scores, skipped, items = score_rows(rows, data, {"dataset": "d"},
                                        lambda row: "told to skip" if row.name == "no_connection" else None)
    assert skipped == {"no_connection": "told to skip", "other_space": "embeds no clap (audio)"}
    assert scores["exact"]["A2I"]["R@1"] == 100.0
    r1 = [scores["unit"]["seeds"][s]["A2I"]["R@1"] for s in ("0", "1")]
    assert r1 == [80.0, 60.0] and scores["unit"]["A2I"]["R@1"] == 70.0
    assert scores["unit"]["std"]["A2I"]["R@1"] == pytest.approx(math.sqrt(200))  # sample std of 80, 60
    assert [sorted(set(i["seed"])) for i in items] == [[-1], [0], [1]] and all((i["dataset"] == "d").all() for i in items)
