"""Output folders written as one unit: the files of a run appear together, or not at all.

``ground``, ``caption`` and ``demo`` write a set of files (pictures,
``results.json``, ``results.npz``) into ``--out DIR``. :class:`OutputSet`
keeps a half-written set out of ``DIR``:

1. *Stage.* Every file is written into a staging folder inside ``DIR``,
   ``DIR/.ebr-ref-tmp-<pid>-XXXX`` (same file system, so the moves below are
   renames). A failure, Ctrl-C or SIGTERM before the commit removes the
   staging folder (and ``DIR`` itself when the run created it and it is
   empty): ``DIR`` is as it was.
2. *Check.* A file of the set that already exists in ``DIR`` is refused,
   naming it, unless ``--overwrite``; the three names every run writes
   (``results.json``, ``results.npz``, ``evidence.png``) are checked before
   any work, the rest at the commit.
3. *Commit* (SIGINT and SIGTERM held back until it ends): a commit record
   ``.commit.json`` (the names to move, the stale names to remove) is written
   into the staging folder; every file is renamed into ``DIR``, ``results.json``
   last; then the files of the previous run that the new one does not
   rewrite (named in the old ``results.json``'s ``files``) are removed, so
   that ``DIR`` never mixes two runs; the staging folder goes.

Each file in ``DIR`` is always whole (old or new), and every file that
``DIR/results.json`` lists exists. A process killed outright (SIGKILL, power
loss) cannot clean up: its staging folder stays, hidden. The next run that
writes into ``DIR`` deals with it first: a staging folder whose process no
longer runs is removed when it holds no commit record (the old outputs were
never touched) and finished when it holds one (the interrupted commit is
completed: the new set is put in place).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from ..models.io import _fsync_dir, _umask, pid_alive, signals_held
from ._common import UserError

__all__ = ["OutputSet", "ALWAYS_WRITTEN", "STAGE_PREFIX", "recover_stages"]

STAGE_PREFIX = ".ebr-ref-tmp-"
COMMIT_RECORD = ".commit.json"
ALWAYS_WRITTEN = ("results.json", "results.npz", "evidence.png")


def _stage_pid(name):
    pid = name[len(STAGE_PREFIX) :].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def recover_stages(out):
    """Remove or finish the staging folders in ``out`` left by processes that no longer run (module notes).

    Returns
    -------
    list of str
        ``"removed NAME"`` or ``"finished NAME"`` per staging folder dealt with.
    """
    done = []
    try:
        entries = sorted(os.listdir(out))
    except OSError:
        return done
    for n in entries:
        stage = os.path.join(out, n)
        if not n.startswith(STAGE_PREFIX) or not os.path.isdir(stage) or os.path.islink(stage):
            continue
        pid = _stage_pid(n)
        if pid is None or pid_alive(pid):
            continue
        if os.path.isfile(os.path.join(stage, COMMIT_RECORD)):
            _finish(stage, out)
            done.append(f"finished {n}")
        else:
            shutil.rmtree(stage, ignore_errors=True)
            done.append(f"removed {n}")
    return done


def _finish(stage, out):
    """Move the files a commit record names into ``out`` (``results.json`` last); remove the stale ones."""
    with open(os.path.join(stage, COMMIT_RECORD), encoding="utf-8") as f:
        record = json.load(f)
    names = [n for n in record.get("names", []) if _plain(n)]
    for n in sorted(names, key=lambda n: n == "results.json"):
        src = os.path.join(stage, n)
        if os.path.lexists(src):
            os.replace(src, os.path.join(out, n))
    for n in record.get("stale", []):
        p = os.path.join(out, n)
        if _plain(n) and os.path.isfile(p) and not os.path.islink(p):
            os.unlink(p)
    os.unlink(os.path.join(stage, COMMIT_RECORD))
    shutil.rmtree(stage, ignore_errors=True)
    _fsync_dir(out)


def _plain(name):
    """A bare file name (no folder part, not hidden): what a results.json may name."""
    return (
        isinstance(name, str)
        and name
        and os.path.basename(name) == name
        and not name.startswith(".")
        and name not in (".", "..")
    )


def _listed_files(doc):
    """The file names a results.json lists under ``files`` (nested one level per target)."""
    names = []
    files = doc.get("files") if isinstance(doc, dict) else None
    if isinstance(files, dict):
        for v in files.values():
            for f in v.values() if isinstance(v, dict) else [v]:
                if _plain(f):
                    names.append(f)
    return names


class OutputSet:
    """The files of one run, staged inside ``out`` and moved into place together (module notes).

    Use as a context manager: leaving it without :meth:`commit` (an error, an
    interrupt) discards the staged files.

    Parameters
    ----------
    out : str
        The output folder (created when missing).
    overwrite : bool
        Replace files of an earlier run; refused otherwise.
    option : str
        How the command line names the folder, for the messages (``--out``).
    """

    def __init__(self, out, *, overwrite=False, option="--out"):
        self.out = os.fspath(out)
        self.overwrite = bool(overwrite)
        self.option = option
        self._stage = None
        self._created = False
        self.committed = False

    def __enter__(self):
        self.prepare()
        return self

    def __exit__(self, kind, value, tb):
        if not self.committed:
            self.discard()
        return False

    def prepare(self, names=ALWAYS_WRITTEN):
        """Create the folder, clean up stale staging folders, refuse existing ``names`` (or overwrite)."""
        out = self.out
        if os.path.lexists(out) and not os.path.isdir(out):
            raise UserError(f"{self.option} {out}: exists and is not a folder")
        if not os.path.exists(out):
            try:
                os.makedirs(out)
                self._created = True
            except FileExistsError:  # another run made it meanwhile
                pass
            except OSError as e:
                why = e.strerror or e
                raise UserError(f"{self.option} {out}: cannot create the folder ({why})") from None
        if os.path.isdir(out) and not os.access(out, os.W_OK | os.X_OK):
            raise UserError(f"{self.option} {out}: the folder is not writable")
        try:
            recover_stages(out)
        except (OSError, ValueError) as e:
            raise UserError(f"{self.option} {out}: cannot clean up after an interrupted run ({e})") from None
        self._refuse(names)
        return self

    def _refuse(self, names):
        for n in names:
            p = os.path.join(self.out, n)
            if os.path.isdir(p) and not os.path.islink(p):
                raise UserError(f"{self.option} {self.out}: {n} exists and is a folder; not replaced")
            if not self.overwrite and os.path.lexists(p):
                raise UserError(
                    f"{self.option} {self.out}: {n} exists (from an earlier run); pass "
                    "--overwrite to replace that run's outputs, or choose another folder"
                )

    @property
    def stage(self):
        """The staging folder (created on first use); write every output file into it."""
        if self._stage is None:
            try:
                os.makedirs(
                    self.out, exist_ok=True
                )  # a concurrent failed run may have removed the empty folder
                self._stage = tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", dir=self.out)
                os.chmod(self._stage, 0o777 & ~_umask())
            except OSError as e:
                why = e.strerror or e
                raise UserError(f"{self.option} {self.out}: cannot write into the folder ({why})") from None
        return self._stage

    def final(self, files):
        """``files`` (``{key: path}`` or ``{key: {kind: path}}`` of staged paths) with their final paths."""

        def move(p):
            return os.path.join(self.out, os.path.basename(p))

        return {
            k: ({kk: move(vv) for kk, vv in v.items()} if isinstance(v, dict) else move(v))
            for k, v in files.items()
        }

    def commit(self):
        """Move the staged files into the folder as one unit (module notes); return their names."""
        stage = self.stage
        names = sorted(n for n in os.listdir(stage) if n != COMMIT_RECORD)
        self._refuse(names)
        new = set(names)
        stale = []
        old_json = os.path.join(self.out, "results.json")
        if os.path.isfile(old_json):
            try:
                with open(old_json, encoding="utf-8") as f:
                    old = json.load(f)
            except (OSError, ValueError, RecursionError):
                old = None
            stale = sorted(
                n for n in set(_listed_files(old)) - new if os.path.isfile(os.path.join(self.out, n))
            )
        record = os.path.join(stage, COMMIT_RECORD)
        try:
            with signals_held():
                with open(record, "w", encoding="utf-8") as f:
                    json.dump({"names": names, "stale": stale}, f)
                    f.flush()
                    os.fsync(f.fileno())
                _fsync_dir(stage)
                _finish(stage, self.out)
                self.committed, self._stage = True, None  # before a held-back signal can interrupt
        except OSError as e:
            if os.path.isfile(record):  # half moved: keep the rest for the next run to finish
                self._stage = None
                why = e.strerror or e
                raise UserError(
                    f"{self.option} {self.out}: moving the outputs into place failed ({why}); "
                    "the next run into this folder finishes the move"
                ) from None
            why = e.strerror or e
            raise UserError(f"{self.option} {self.out}: cannot write the commit record ({why})") from None
        return names

    def discard(self):
        """Remove the staged files (and the folder when this run created it and it is empty)."""
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None
        if self._created:
            try:
                os.rmdir(self.out)
            except OSError:
                pass
            self._created = False
