"""``tools/evaluate.py`` end to end: baseline, LLM over a real loopback server, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from streamer.describe.prompts import is_text_only
from streamer.testing.ollama import FakeOllama

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "tools" / "data" / "example_va.csv"


def gold_rows() -> list[dict[str, str]]:
    lines = [ln for ln in EXAMPLE.read_text().splitlines() if not ln.startswith("#")]
    return list(csv.DictReader(lines))


def _ollama_args(out: Path, url: str, *more: str) -> list[str]:
    """The tool's command line for the example dataset against an Ollama server."""
    return [str(EXAMPLE), "--out", str(out), "--provider", "ollama", "--host", url, *more, "-q"]


def test_example_dataset_is_marked_illustrative() -> None:
    head = EXAMPLE.read_text().splitlines()[0]
    assert "ILLUSTRATIVE" in head
    assert "illustrative" in (ROOT / "tools" / "data" / "README.md").read_text()


def test_fallback_baseline_via_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "rep" / "baseline"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "evaluate.py"),
            str(EXAMPLE),
            "--out",
            str(out),
            "--provider",
            "fallback",
            "--embed",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.with_suffix(".json").read_text())
    md = out.with_suffix(".md").read_text()
    n = len(gold_rows())
    assert report["n"] == n == report["answered"]
    assert report["predictor"] == "fallback/circumplex-v1"
    assert sum(map(sum, report["basic"]["confusion"])) == n
    correct = sum(1 for p in report["predictions"] if p["basic"] == p["gold_basic"])
    assert report["basic"]["accuracy"] == pytest.approx(correct / n)
    assert report["complex"]["n"] == n and report["similarity"] is None
    assert "confusion matrix" in md and "accuracy" in proc.stdout


def test_llm_over_ollama_api_with_ollama_embeddings(
    evaluate_tool: ModuleType, fake_ollama: Callable[..., FakeOllama], tmp_path: Path
) -> None:
    srv = fake_ollama("happy")  # always answers happiness / [happiness, pleasure]
    out = tmp_path / "llm"
    rc = evaluate_tool.main(
        _ollama_args(out, srv.url, "--embed", "ollama", "--embed-model", "embedder")
    )
    assert rc == 0
    report = json.loads(out.with_suffix(".json").read_text())
    gold = gold_rows()
    n = len(gold)
    happy = sum(1 for r in gold if r["basic"] == "happiness")
    assert report["predictor"] == "ollama:llama3.2"
    assert report["basic"]["accuracy"] == pytest.approx(happy / n)
    hits = sum(1 for r in gold if {"happiness", "pleasure"} & set(r["complex"].split(";")))
    assert report["complex"]["any_hit"] == pytest.approx(hits / n)
    sim = report["similarity"]
    assert sim["n"] == n and report["embedder"] == "ollama:embedder"
    assert -1.0 <= sim["min"] <= sim["mean"] <= sim["max"] <= 1.0
    assert srv.count("/api/chat") == n and srv.count("/api/embed") == 2
    for body in srv.chat_bodies():
        assert all(
            is_text_only(m["content"]) and set(m) == {"role", "content"} for m in body["messages"]
        )


def test_unreachable_server_is_one_clear_error(
    evaluate_tool: ModuleType, refused_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = evaluate_tool.main(
        [str(EXAMPLE), "--out", str(tmp_path / "x"), "--provider", "ollama", "--host", refused_url]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("error: LLM server not usable") and "--provider fallback" in err
    assert not (tmp_path / "x.json").exists()


def test_bad_dataset_names_file_and_line(
    evaluate_tool: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("valence,arousal,basic\n0.1,0.2,happiness\n0.1,1.5,sadness\n")
    rc = evaluate_tool.main([str(bad), "--out", str(tmp_path / "r"), "--provider", "fallback"])
    assert rc == 1
    assert f"{bad}:3: arousal" in capsys.readouterr().err


def test_garbage_answers_count_as_wrong(
    evaluate_tool: ModuleType, fake_ollama: Callable[..., FakeOllama], tmp_path: Path
) -> None:
    srv = fake_ollama("garbage")
    out = tmp_path / "g"
    rc = evaluate_tool.main(_ollama_args(out, srv.url, "--embed", "none", "--limit", "3"))
    assert rc == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["n"] == 3 and report["answered"] == 0 and report["basic"]["accuracy"] == 0.0
    assert srv.count("/api/chat") == 6  # each row asked twice


@pytest.mark.eval
def test_minilm_similarity_on_example(evaluate_tool: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "m"
    rc = evaluate_tool.main(
        [str(EXAMPLE), "--out", str(out), "--provider", "fallback", "--embed", "minilm", "-q"]
    )
    assert rc == 0
    report = json.loads(out.with_suffix(".json").read_text())
    sim = report["similarity"]
    assert report["embedder"].startswith("all-MiniLM-L6-v2")
    assert sim["n"] == len(gold_rows()) and 0.0 < sim["mean"] < 1.0
