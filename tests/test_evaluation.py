"""cmcr.evaluation: models as embedding functions per space, baselines."""

import pandas as pd
import pytest
import torch

from cmcr.evaluation import BenchmarkData, evaluate_model, no_connection, random_baseline
from conftest import unit


def test_no_connection_compares_spaces_as_they_are():
    x = unit(20, 8)
    data = BenchmarkData("retrieval", {"audio": 3 * x, "image": x}, {})
    metrics, items = evaluate_model(data, no_connection(("clip", "clap")), "no_connection")
    assert metrics["A2I"]["mAP"] == 100.0 and metrics["I2A"]["R@1"] == 100.0
    assert set(items["direction"]) == {"A2I", "I2A"} and (items["rank"] == 1).all()


def test_zeroshot_model_and_chance():
    prompts = torch.eye(4)[[0, 0, 1, 1, 2, 2]]  # two prompts per class, 3 classes
    table = pd.DataFrame({"label": [0, 0, 1, 1, 2, 2]})
    points = torch.eye(4)[[0, 1, 2, 2]]
    data = BenchmarkData("zeroshot3d", {"points": points, "prompts": prompts},
                         {"points": pd.DataFrame({"concept": [0, 1, 2, 0]}), "prompts": table})
    metrics, _ = evaluate_model(data, no_connection(("clip", "ulip")), "x")
    assert metrics["top1"] == pytest.approx(75.0)  # the last item is a class-2 cloud labelled 0
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
