"""``streamer models list|fetch|add``: the local model store."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
from collections.abc import Iterator
from types import FrameType

from rich.table import Table

from streamer.cli.tables import print_table
from streamer.errors import StreamerError
from streamer.store import default_store


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list, fetch or add models and test media")
    msub = p.add_subparsers(dest="models_cmd", metavar="ACTION", required=True)

    pl = msub.add_parser("list", help="what the manifest holds and what is cached")
    pl.add_argument("--kind", choices=["model", "media"], help="only this kind")
    pl.set_defaults(func=cmd_list)

    pf = msub.add_parser(
        "fetch",
        help="download and verify artifacts (default: the models the pipeline needs)",
    )
    pf.add_argument("names", nargs="*", metavar="NAME", help="artifact names (see list)")
    pf.add_argument("--all", action="store_true", help="every artifact, test media included")
    pf.add_argument("--force", action="store_true", help="fetch again even if cached")
    pf.set_defaults(func=cmd_fetch)

    try:  # `models add` is provided by the affect stage (weights are validated there)
        add_module = importlib.import_module("streamer.cli.models_add")
    except ModuleNotFoundError as err:
        if err.name != "streamer.cli.models_add":
            raise
    else:
        add_module.register_add(msub)


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """SIGTERM and SIGHUP end the command through an exception (exit 128 + signal), so
    every ``finally`` runs and no temporary file is left in the store."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# Fetched by a bare `streamer models fetch`: what `streamer replay` needs.
DEFAULT_FETCH = ("yunet", "fer")


def cmd_list(args: argparse.Namespace) -> int:
    store = default_store()
    table = Table(title=f"model store: {store.cache_dir}")
    for col in ("name", "kind", "version", "cached", "license", "sha256"):
        table.add_column(col)
    for st in store.status():
        art = st.artifact
        if args.kind and art.kind != args.kind:
            continue
        table.add_row(
            art.name,
            art.kind,
            art.version,
            "yes" if st.cached else "no",
            art.license,
            st.sha256[:16] + "…" if st.sha256 else "(recorded on first download)",
        )
    print_table(table)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    store = default_store()
    names = list(store.manifest) if args.all else (args.names or list(DEFAULT_FETCH))
    for name in names:
        store.artifact(name)  # unknown names fail before anything is downloaded
    failed = []
    for name in names:
        try:
            with terminate_raises():
                path = store.fetch(name, force=args.force)
        except StreamerError as err:  # report every artifact, then fail once
            failed.append(name)
            print(f"error: {err}")
            continue
        print(f"{name}: {path}")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0
