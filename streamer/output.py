"""The one output rule of every command that writes a file.

``replay --out`` (JSON lines), ``replay --annotate`` (the annotated video), ``plot -o``
(PNG) and ``bench model --out`` (JSON) all write through :class:`OutputFile`, so no
writer can differ:

- **checked before the work** (:meth:`OutputFile.check`): an output that is one of the
  command's inputs (by relative or absolute name, through ``..`` or a symlink either way,
  or a hard link) is refused; so is a directory, a path under a file, and a folder where
  no file can be created (``/proc``): one line naming the path the user gave;
- **a regular file (or a new path) is replaced atomically**: the data goes to a hidden
  temporary ``.NAME.<pid>.<random>.tmp`` in the target's folder (missing folders are
  created), renamed onto ``NAME`` only when the writer finishes cleanly, so a failed run
  leaves nothing that looks complete and two runs writing one path never mix (the last
  to finish wins, whole). A temporary whose process is gone (a killed run) is removed by
  the next run that writes the same target;
- **anything else is written in place, never replaced**: a device (``/dev/null``,
  ``/dev/full``), a FIFO, a symlink (``/dev/stdout``);
- **a failing write is one error** (:class:`~streamer.errors.OutputError`) naming the
  path: ``--annotate out.mp4: cannot write output: No space left on device``.

    out = OutputFile(Path("va.png"), flag="-o", inputs=[Path("va.jsonl")])
    out.check()                       # before any work
    with out.writing("wb") as fh:     # the temporary (or the device)
        fh.write(data)                # renamed into place on a clean exit
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from streamer.errors import OutputError

logger = logging.getLogger(__name__)

_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clean_stale_temporaries(target: Path) -> int:
    """Remove ``.NAME.<pid>.<hex>.tmp`` files of ``target`` whose process is gone."""
    removed = 0
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return 0
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if m is None or m["name"] != target.name or _pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed += 1
            logger.info("removed %s, left behind by a run that ended early", entry)
    return removed


def replaceable(path: Path) -> bool:
    """True when ``path`` is new or a plain regular file (not a link, device or FIFO)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    return stat.S_ISREG(st.st_mode)


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file (links and ``..`` followed)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _new_temporary(target: Path) -> tuple[Path, int]:
    """A fresh, exclusively created temporary next to ``target``: (path, open fd)."""
    mode = 0o666 & ~_umask()
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        return tmp, fd
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target))


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


class OutputFile:
    """One output the user named (see the module docstring for the rule).

    Args:
        path: the path as the user gave it (messages name it so).
        flag: the option that named it (``--out``, ``-o``, ``--annotate``), shown in
            messages; None: the path alone.
        inputs: the command's input files: the output may not be one of them.
        append: a log written as it goes (live runs' ``--out``): opened in place for
            appending, never replaced.
    """

    def __init__(
        self,
        path: Path,
        *,
        flag: str | None = None,
        inputs: Sequence[Path] = (),
        append: bool = False,
    ) -> None:
        self.path = path
        self.flag = flag
        self.inputs = tuple(inputs)
        self.append = append
        self.tmp: Path | None = None
        self._fh: IO[Any] | None = None
        self._done = False

    @property
    def label(self) -> str:
        """How messages name this output: ``--annotate out.mp4`` or ``out.mp4``."""
        return f"{self.flag} {self.path}" if self.flag else str(self.path)

    @property
    def atomic(self) -> bool:
        """Written to a temporary and renamed (a regular file or a new path)."""
        return not self.append and replaceable(self.path)

    def error(self, err: OSError | str) -> OutputError:
        """The one-line error of this output for ``err``."""
        if isinstance(err, str):
            return OutputError(f"{self.label}: {err}")
        return OutputError(f"{self.label}: cannot write output: {err.strerror or err}")

    def check(self) -> None:
        """Refuse, before any work, an output that is an input or cannot be written.

        Raises:
            OutputError: naming the path the user gave and why.
        """
        for inp in self.inputs:
            if same_file(self.path, inp):
                raise self.error(f"is the input {inp}; choose another file")
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            st = None  # a new file (its folder is checked below)
        except OSError as err:
            raise self.error(f"cannot use this path: {err.strerror or err}") from err
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise self.error("is a directory; name a file")
        if st is not None and not self.atomic:
            if not os.access(self.path, os.W_OK):
                raise self.error("cannot write output: Permission denied")
            return  # a device, FIFO or link: written in place
        folder = self.path.parent
        existing = _nearest_existing(folder)
        if not existing.is_dir():
            raise self.error(f"{existing} is not a folder")
        if existing != folder:
            # created when the writer opens; the nearest folder must take new entries
            if not os.access(existing, os.W_OK | os.X_OK):
                raise self.error(f"cannot create folder {folder}: Permission denied")
            return
        try:
            tmp, fd = _new_temporary(self.path)
        except OSError as err:
            raise self.error(f"cannot create a file in {folder}: {err.strerror or err}") from err
        os.close(fd)
        tmp.unlink(missing_ok=True)

    def open(self, mode: str = "wb") -> IO[Any]:
        """Open the temporary (a regular file or a new path) or the target in place.

        ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8, ``\\n`` line ends).

        Raises:
            OutputError: the target cannot be opened.
        """
        text = "b" not in mode
        try:
            if self.atomic:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                clean_stale_temporaries(self.path)
                self.tmp, fd = _new_temporary(self.path)
                fh: IO[Any] = (
                    os.fdopen(fd, "w", encoding="utf-8", newline="\n")
                    if text
                    else os.fdopen(fd, "wb")
                )
            else:
                # A device, FIFO or link is written in place, never replaced.
                self.path.parent.mkdir(parents=True, exist_ok=True)
                how = "a" if self.append else "w"
                fh = (
                    self.path.open(how, encoding="utf-8", newline="\n")
                    if text
                    else self.path.open(how + "b")
                )
        except OSError as err:
            raise self.error(err) from err
        self._fh = fh
        return fh

    def reserve(self) -> Path:
        """The path a writer that opens files by name (FFmpeg) writes to: the temporary
        (created empty), or the target itself when it is written in place."""
        fh = self.open("wb")
        with contextlib.suppress(OSError):
            fh.close()
        self._fh = None
        return self.tmp if self.tmp is not None else self.path

    def commit(self) -> None:
        """Finish: flush, fsync and rename the temporary into place (or close the target).

        Raises:
            OutputError: the last writes or the rename failed (nothing is left behind).
        """
        if self._done:
            return
        self._done = True
        fh, self._fh = self._fh, None
        try:
            if fh is not None:
                fh.flush()
                if self.tmp is not None:
                    os.fsync(fh.fileno())
                fh.close()
            if self.tmp is not None:
                if fh is None:
                    with open(self.tmp, "rb+") as synced:
                        os.fsync(synced.fileno())
                os.replace(self.tmp, self.path)
                self.tmp = None
        except OSError as err:
            self._drop(fh)
            raise self.error(err) from err

    def abort(self) -> None:
        """Drop the temporary (a failed run); a target written in place keeps what it has."""
        if self._done:
            return
        self._done = True
        fh, self._fh = self._fh, None
        self._drop(fh)

    def _drop(self, fh: IO[Any] | None) -> None:
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None

    @contextlib.contextmanager
    def writing(self, mode: str = "wb") -> Iterator[IO[Any]]:
        """``open`` the output, commit it on a clean exit, abort it on an error.

        Raises:
            OutputError: a write, the flush or the rename failed.
        """
        fh = self.open(mode)
        try:
            yield fh
        except OSError as err:
            self.abort()
            raise self.error(err) from err
        except BaseException:
            self.abort()
            raise
        self.commit()

    @contextlib.contextmanager
    def writing_path(self) -> Iterator[Path]:
        """Like :meth:`writing`, for a writer that opens the file by name."""
        path = self.reserve()
        try:
            yield path
        except OSError as err:
            self.abort()
            raise self.error(err) from err
        except BaseException:
            self.abort()
            raise
        self.commit()

    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` as the whole output (atomically for a regular file)."""
        with self.writing("wb") as fh:
            fh.write(data)


def check_outputs(outputs: Sequence[OutputFile]) -> None:
    """:meth:`OutputFile.check` each, and refuse two outputs that name one file.

    Raises:
        OutputError: the first problem, naming the path the user gave.
    """
    for out in outputs:
        out.check()
    for i, a in enumerate(outputs):
        for b in outputs[i + 1 :]:
            same = same_file(a.path, b.path) or (os.path.abspath(a.path) == os.path.abspath(b.path))
            if same:
                raise b.error(f"is also the {a.flag or 'output'} file; choose another file")
