"""Metrics of the evaluation tool on tiny datasets whose answers are worked out by hand."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from streamer.describe.evaluation import (
    Prediction,
    Row,
    classification_report,
    cosine,
    evaluate,
    load_dataset,
    multilabel_report,
    similarity_report,
)
from streamer.errors import DatasetError

GOLD = ["happiness", "happiness", "sadness", "anger"]
PRED = ["happiness", "sadness", "sadness", "happiness"]


def test_basic_accuracy_macro_f1_and_confusion() -> None:
    r = classification_report(GOLD, PRED)
    assert r["accuracy"] == pytest.approx(0.5)
    # happiness P=1/2 R=1/2 F1=1/2; sadness P=1/2 R=1 F1=2/3; anger F1=0
    assert r["per_label"]["happiness"]["f1"] == pytest.approx(0.5)
    assert r["per_label"]["sadness"]["precision"] == pytest.approx(0.5)
    assert r["per_label"]["sadness"]["recall"] == pytest.approx(1.0)
    assert r["per_label"]["sadness"]["f1"] == pytest.approx(2 / 3)
    assert r["per_label"]["anger"]["f1"] == 0.0
    assert r["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert sorted(r["macro_f1_labels"]) == ["anger", "happiness", "sadness"]
    labels = r["labels"]
    cm = {
        (labels[i], labels[j]): v for i, row in enumerate(r["confusion"]) for j, v in enumerate(row)
    }
    assert cm[("happiness", "happiness")] == 1
    assert cm[("happiness", "sadness")] == 1
    assert cm[("sadness", "sadness")] == 1
    assert cm[("anger", "happiness")] == 1
    assert sum(sum(row) for row in r["confusion"]) == 4


def test_missing_answer_counts_as_wrong_and_lands_in_none_column() -> None:
    r = classification_report(["fear", "fear"], ["fear", None])
    assert r["accuracy"] == 0.5
    fear = r["labels"].index("fear")
    assert r["confusion"][fear][-1] == 1 and r["labels"][-1] == "none"
    assert r["per_label"]["fear"]["recall"] == 0.5


def test_perfect_and_empty_inputs() -> None:
    r = classification_report(["neutral", "surprise"], ["neutral", "surprise"])
    assert r["accuracy"] == 1.0 and r["macro_f1"] == 1.0
    empty = classification_report([], [])
    assert empty["n"] == 0 and empty["accuracy"] == 0.0 and empty["macro_f1"] == 0.0
    with pytest.raises(ValueError, match="one prediction per gold"):
        classification_report(["fear"], [])


def test_multilabel_known_answers() -> None:
    gold = [["anger", "fear"], ["pain"], ["anger"]]
    pred = [["anger"], ["pain"], ["fear"]]
    r = multilabel_report(gold, pred)
    assert r["subset_accuracy"] == pytest.approx(1 / 3)
    assert r["jaccard"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert r["any_hit"] == pytest.approx(2 / 3)
    # anger: tp1 fn1 -> F1 2/3; fear: fp1 fn1 -> 0; pain: tp1 -> 1
    assert r["per_label"]["anger"] == {
        "tp": 1,
        "fp": 0,
        "fn": 1,
        "tn": 1,
        "f1": pytest.approx(2 / 3),
    }
    assert r["per_label"]["fear"]["f1"] == 0.0
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    # micro: tp=2 fp=1 fn=2 -> P=2/3 R=1/2 F1=4/7
    assert r["micro"]["precision"] == pytest.approx(2 / 3)
    assert r["micro"]["recall"] == pytest.approx(0.5)
    assert r["micro"]["f1"] == pytest.approx(4 / 7)
    assert r["per_label"]["peace"] == {"tp": 0, "fp": 0, "fn": 0, "tn": 3, "f1": 0.0}


def test_multilabel_none_prediction_is_empty_set() -> None:
    r = multilabel_report([["peace"]], [None])
    assert r["subset_accuracy"] == 0.0 and r["jaccard"] == 0.0 and r["any_hit"] == 0.0


def test_similarity_known_vectors() -> None:
    r = similarity_report([[1, 0], [1, 0], [1, 1]], [[1, 0], [0, 1], [1, 0]])
    assert r["per_row"] == pytest.approx([1.0, 0.0, 2**-0.5])
    assert r["mean"] == pytest.approx((1 + 0 + 2**-0.5) / 3)
    assert r["min"] == pytest.approx(0.0) and r["max"] == pytest.approx(1.0)
    assert r["median"] == pytest.approx(2**-0.5)
    assert cosine([0, 0], [1, 0]) == 0.0
    with pytest.raises(ValueError):
        cosine([1], [1, 2])


async def test_evaluate_ties_it_together() -> None:
    rows = [
        Row("a", 0.8, 0.4, "happiness", ("happiness",), "a big smile"),
        Row("b", -0.7, -0.4, "sadness", ("sadness",), "a sad frown"),
        Row("c", 0.0, 0.0, "neutral", (), None),
    ]
    preds = [
        Prediction("a", "happiness", ("happiness",), "a big smile"),
        Prediction("b", "anger", ("anger",), "an angry frown"),
        Prediction("c", None, (), None, "invalid"),
    ]

    # one-hot by first word: equal first words -> cosine 1
    async def embed(texts: Sequence[str]) -> list[list[float]]:
        vocab = {"a": [1.0, 0.0], "an": [0.0, 1.0]}
        return [vocab[t.split()[0]] for t in texts]

    rep = await evaluate(
        rows, preds, dataset="x.csv", predictor="p", embedder=embed, embedder_name="e"
    )
    assert rep.basic["accuracy"] == pytest.approx(1 / 3)
    assert rep.complex is not None and rep.complex["n"] == 2
    assert rep.complex["subset_accuracy"] == pytest.approx(0.5)
    assert rep.similarity is not None and rep.similarity["per_row"] == pytest.approx([1.0, 0.0])
    assert rep.answered == 2
    assert any("without a valid answer" in n for n in rep.notes)
    json.dumps(rep.to_json())  # serialisable


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("valence,arousal,basic\n2,0,happiness\n", r":2: valence: expected a number in \[-1, 1\]"),
        ("valence,arousal,basic\n0.1,x,happiness\n", r":2: arousal: expected a number"),
        ("valence,arousal,basic\n0.1,0.2,joyful\n", r":2: unknown basic label 'joyful'"),
        ("# c\nvalence,arousal,basic,complex\n0,0,neutral,peace;bliss\n", r":3: unknown complex"),
        ("valence,arousal\n0,0\n", r"header needs valence, arousal and basic"),
        ("# only comments\n", r"no rows"),
    ],
)
def test_bad_csv_names_file_and_line(tmp_path: Path, content: str, match: str) -> None:
    p = tmp_path / "d.csv"
    p.write_text(content)
    with pytest.raises(DatasetError, match=match):
        load_dataset(p)


def test_jsonl_and_csv_load_the_same(tmp_path: Path) -> None:
    csv_p = tmp_path / "d.csv"
    csv_p.write_text(
        "id,valence,arousal,basic,complex,description\n"
        'r1,0.5,0.2,Happy,Happiness|pleasure,"a smile, wide"\n'
        "r2,-0.5,-0.2,sadness,,\n"
    )
    jl = tmp_path / "d.jsonl"
    jl.write_text(
        json.dumps(
            {
                "id": "r1",
                "valence": 0.5,
                "arousal": 0.2,
                "label": "happiness",
                "complex": ["happiness", "Pleasure"],
                "description": "a smile, wide",
            }
        )
        + "\n\n"
        + json.dumps({"id": "r2", "valence": -0.5, "arousal": -0.2, "basic": "sadness"})
        + "\n"
    )
    assert load_dataset(csv_p) == load_dataset(jl)
    rows = load_dataset(jl)
    assert rows[0].complex == ("happiness", "pleasure") and rows[1].description is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"valence": 0}\n[1]\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: basic"):
        load_dataset(bad)
