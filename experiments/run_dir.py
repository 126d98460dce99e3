"""A study's run directory (``runs/<name>/``): one study at a time, honest resumes.

- **Lock.** ``<run dir>/.lock`` is created atomically (``O_CREAT | O_EXCL``) when a study
  starts and removed when it ends (also on an exception). It holds the owner's pid, host,
  start time and command. A second study with the same ``--name`` refuses, naming the run
  directory and the holder. A lock whose pid is dead on this host (or alive but another
  process, by its start time) is stale: it is taken over with a warning. A lock from another
  host is never taken over (its pid cannot be checked from here).
- **Configuration.** A run directory with rows belongs to one configuration. Rerunning it
  with a configuration that would change the numbers refuses, naming every differing field
  (``study.seed``, ``methods.rest.learning_rate``, ...); ``--restart`` moves the previous
  results aside (``replaced-<time>/``) and starts over. See :data:`NOT_COMPARED` for the
  fields that are not compared and why.
- **Rows.** ``results.jsonl`` gets one JSON line per finished run, flushed and fsynced. A
  last line cut short by a crash is dropped on resume (the file is rewritten without it,
  atomically, with a warning) and its run is computed again; a damaged line before the last
  is an error naming the file and the line.

Only the standard library is used here, so the lock costs nothing to take.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import pathlib
import socket
import sys
import uuid
from typing import Any

log = logging.getLogger("rest_jax.study")

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.jsonl"

# Fields of config.json's "study" entry that are not compared on resume:
NOT_COMPARED = {
    # where the run is written and the caches are kept, not what it computes;
    "name": "output location",
    "output_dir": "output location",
    "cache_dir": "cache location (caches are keyed by what they were built from)",
    # which rows the study has: a row's numbers do not depend on them (a row is keyed by its
    # group, direction, method and shifts), so a rerun may add rows to a finished study;
    "methods": "row selection",
    "directions": "row selection",
    "shifts": "row selection",
    "severity_sweep": "row selection",
    "severity_methods": "row selection",
    "diverse": "row selection",
    "diverse_methods": "row selection",
    "diverse_directions": "row selection",
    "ablations": "row selection",
    # compared through its effect: the resolved configuration of every method ("methods").
    "adapt": "compared as the methods' resolved configurations",
}
# config.json's entries that are not configuration: a change is logged as a warning (numbers
# may differ in the last float bits); config.json records the newest under their names and
# the earlier ones, oldest first, under "earlier_environments".
ENVIRONMENT = ("versions", "device", "device_count")


class RunDirLocked(RuntimeError):
    """Another study holds the run directory."""


class ConfigChanged(ValueError):
    """The run directory's rows come from another configuration."""


# ------------------------------------------------------------------------------ command line


def split_run_flags(argv: list[str] | None) -> tuple[list[str], bool]:
    """Takes the run-directory flags out of the command line.

    Args:
      argv: the study's arguments (None: ``sys.argv[1:]``).

    Returns:
      ``(the other arguments, restart)``: ``--restart`` moves a run directory's previous
      results aside and starts over (needed to rerun a name with another configuration).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--restart", action="store_true")
    known, rest = parser.parse_known_args(argv)
    return rest, known.restart


# ------------------------------------------------------------------------------ logging


class _StderrHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stderr`` is at the time of the record."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


@contextlib.contextmanager
def study_logging(level: int = logging.INFO):
    """The study's logs (the ``rest_jax`` loggers) on stderr, as plain messages.

    Importing rest_jax attaches a handler to the root logger (orbax logs through absl at
    import time, and absl calls ``logging.basicConfig()`` when the root has none), so a
    ``logging.basicConfig(level=INFO)`` of the runner did nothing and INFO lines were
    dropped. This gives the ``rest_jax`` logger its own handler and level while the study
    runs (records do not also reach the root's handler, which would print them twice) and
    restores the logger afterwards.
    """
    logger = logging.getLogger("rest_jax")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


# ------------------------------------------------------------------------------ lock


def _process_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces; fields follow it.
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _atomic_write(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunLock:
    """The lock file of a run directory (see the module docstring)."""

    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        self.path = directory / LOCK_FILE
        self.token = uuid.uuid4().hex
        self.held = False

    def _describe(self, holder: dict) -> str:
        command = holder.get("command")
        return (
            f"pid {holder.get('pid')} on host {holder.get('host')}, started "
            f"{holder.get('started')}" + (f", command {command!r}" if command else "")
        )

    def _stale(self, holder: dict) -> bool:
        """Whether the holder is a process of this host that no longer runs."""
        pid = holder.get("pid")
        if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False
        if not _pid_alive(pid):
            return True
        started = holder.get("process_start")
        return started is not None and _process_start(pid) not in (None, started)

    def acquire(self) -> None:
        """Creates the lock file, or takes over a stale one; raises RunDirLocked otherwise."""
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "process_start": _process_start(os.getpid()),
            "command": " ".join(sys.argv),
            "token": self.token,
        }
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_take_over()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(record))
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return
        raise RunDirLocked(
            f"could not take the lock {self.path} of {self.directory}: other studies keep "
            "taking it; is another study starting with the same --name?"
        )

    def _refuse_or_take_over(self) -> None:
        """Raises RunDirLocked when the existing lock is held; removes it when it is stale
        (the caller then tries again)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return  # released meanwhile
        try:
            holder = json.loads(text)
        except ValueError:
            holder = None
        if not isinstance(holder, dict):  # also a lock created but not yet written
            raise RunDirLocked(
                f"another study may be running in {self.directory}: its lock {self.path} "
                f"cannot be read ({text[:80]!r}). If no study runs there, delete {self.path}"
            )
        if not self._stale(holder):
            where = "" if holder.get("host") == socket.gethostname() else " (another host)"
            raise RunDirLocked(
                f"another study is running in {self.directory}: its lock {self.path} is held "
                f"by {self._describe(holder)}{where}. Wait for it to end or use another "
                f"--name; if no study runs there, delete {self.path}"
            )
        # Stale: move it away under a name of our own, then check that it was the stale one
        # (not a fresh lock another process took over in between, which is put back).
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{self.token[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if aside.read_text(encoding="utf-8") != text:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        else:
            log.warning(
                "%s: took over the stale lock of %s (that process no longer runs)",
                self.directory,
                self._describe(holder),
            )
        aside.unlink()

    def release(self) -> None:
        """Removes the lock file if it is still this study's."""
        if not self.held:
            return
        self.held = False
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            holder = None
        if isinstance(holder, dict) and holder.get("token") == self.token:
            self.path.unlink()
        else:
            log.warning("%s: the lock is no longer this study's; left in place", self.path)


# ------------------------------------------------------------------------------ results


class Results:
    """``results.jsonl``: one JSON row per finished run, appended, read back to resume.

    Reading repairs a last line cut short by a crash (rewrites the file without it, with a
    warning; its run is computed again) and refuses a damaged line before the last (the
    error names the file and the line).
    """

    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")  # the last item is what follows the last newline
        numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
        keep: list[bytes] = []
        for position, (number, line) in enumerate(numbered):
            try:
                row = json.loads(line.decode("utf-8"))
                if not isinstance(row, dict) or not isinstance(row.get("key"), str):
                    raise ValueError("not a JSON object with a 'key'")
            except ValueError as err:  # JSONDecodeError and UnicodeDecodeError included
                if position == len(numbered) - 1:
                    self._drop_last(keep, number, line)
                    return
                raise ValueError(
                    f"{self.path}: line {number} is not a valid row ({err}): "
                    f"{line[:80].decode('utf-8', 'replace')!r}. The file is damaged before its "
                    "last line: repair or delete that line (its run is then computed again), "
                    "or pass --restart to start the study over"
                ) from None
            self.rows[row["key"]] = row
            keep.append(line)
        if data and not data.endswith(b"\n"):
            # A complete last row without its newline: add it, or the next row would join it.
            _atomic_write(self.path, b"\n".join(keep).decode("utf-8") + "\n")

    def _drop_last(self, keep: list[bytes], number: int, line: bytes) -> None:
        text = b"".join(k + b"\n" for k in keep).decode("utf-8")
        _atomic_write(self.path, text)
        log.warning(
            "%s: dropped its last line (line %d, %d bytes, %r...), a row cut short by an "
            "interrupted write; rewrote the file without it; that run will be computed again",
            self.path,
            number,
            len(line),
            line[:60].decode("utf-8", "replace"),
        )

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, row: dict) -> None:
        """Appends a row (one write, flushed and fsynced before returning)."""
        self.rows[row["key"]] = row
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


# ------------------------------------------------------------------------------ configuration


def _jsonable(value: Any) -> Any:
    """``value`` as config.json stores it (tuples as lists, other objects as str)."""
    return json.loads(json.dumps(value, default=str))


def _changes(prefix: str, old: dict, new: dict, skip=()) -> list[str]:
    out = []
    for field in sorted((set(old) | set(new)) - set(skip)):
        if field not in old:
            out.append(f"{prefix}{field} (absent in config.json, now {new[field]!r})")
        elif field not in new:
            out.append(f"{prefix}{field} ({old[field]!r} in config.json, now absent)")
        elif old[field] != new[field]:
            out.append(f"{prefix}{field} ({old[field]!r} in config.json, now {new[field]!r})")
    return out


def _data_source(config: dict) -> Any:
    data = config.get("data")
    return data.get("data_source") if isinstance(data, dict) else None


def config_differences(old: dict, new: dict) -> list[str]:
    """The fields that change numbers and differ between two resolved configurations.

    Compares the ``study`` entries except :data:`NOT_COMPARED`, the ``methods`` entries
    (each method's resolved AdaptConfig) of the methods both have, and the real data's
    source (``data.data_source``: the data directory and its split file's sha256) when
    both have one; only the entries present in ``new`` are compared. Values are compared as
    JSON (a tuple equals its list).

    Returns:
      One line per differing field, such as ``study.seed (0 in config.json, now 1)``.
    """
    new = _jsonable(new)
    out = []
    if "study" in new:
        old_study = old.get("study")
        if not isinstance(old_study, dict):
            return ["study (absent in config.json)"]
        out += _changes("study.", old_study, new["study"], skip=NOT_COMPARED)
    if "methods" in new:
        old_methods = old.get("methods")
        if not isinstance(old_methods, dict):
            return out + ["methods (absent in config.json)"]
        for method in sorted(set(old_methods) & set(new["methods"])):
            before, after = old_methods[method], new["methods"][method]
            if not isinstance(before, dict):
                out.append(f"methods.{method} (not an object in config.json)")
            else:
                out += _changes(f"methods.{method}.", before, after)
    old_source, new_source = _data_source(old), _data_source(new)
    if isinstance(old_source, dict) and isinstance(new_source, dict):
        out += _changes("data.data_source.", old_source, new_source)
    return out


# ------------------------------------------------------------------------------ run directory


class RunDir:
    """A locked run directory: ``with RunDir(path, restart=...) as run: ...``.

    Args:
      path: ``<output_dir>/<name>`` (created if missing).
      restart: move the previous results aside (``replaced-<time>/``) and start over.
    """

    def __init__(self, path: str | os.PathLike, *, restart: bool = False):
        self.path = pathlib.Path(path)
        self.restart = restart
        self.lock = RunLock(self.path)

    def __enter__(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            if self.restart:
                self._set_aside_previous()
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()

    def _set_aside_previous(self) -> None:
        previous = [
            p
            for p in self.path.iterdir()
            if not p.name.startswith((LOCK_FILE, "replaced-")) and ".tmp-" not in p.name
        ]
        if not previous:
            return
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        target, n = self.path / f"replaced-{stamp}", 0
        while target.exists():
            n += 1
            target = self.path / f"replaced-{stamp}.{n}"
        target.mkdir()
        for p in previous:
            os.replace(p, target / p.name)
        log.warning("--restart: moved the previous results of %s to %s", self.path, target)

    def has_rows(self) -> bool:
        """Whether results.jsonl holds anything (rows, or a partial one)."""
        path = self.path / RESULTS_FILE
        return path.exists() and bool(path.read_bytes().strip())

    def check_config(self, resolved: dict) -> None:
        """Raises ConfigChanged when the directory has rows from another configuration.

        Args:
          resolved: the new run's resolved configuration (config.json's layout); only its
            ``study`` and ``methods`` entries are compared (see :func:`config_differences`).
        """
        if not self.has_rows():
            return
        path = self.path / CONFIG_FILE
        advice = (
            "Rerun with its configuration, use another --name, or pass --restart to move "
            "its results aside and start over"
        )
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            raise ConfigChanged(
                f"{self.path} has rows in {RESULTS_FILE} but its {CONFIG_FILE} cannot be read "
                f"({err}): the configuration they came from is unknown. {advice}"
            ) from None
        changed = config_differences(old, resolved)
        if changed:
            lines = "\n".join(f"  {c}" for c in changed)
            raise ConfigChanged(
                f"{self.path} holds rows of another configuration; these fields differ:\n"
                f"{lines}\nIts rows would not be this configuration's. {advice}"
            )

    def write_config(self, resolved: dict) -> None:
        """Checks ``resolved`` against the previous configuration, then writes config.json
        (atomically).

        Resuming under other versions or another device is allowed: it is logged as a
        warning and the previous environment is kept in ``earlier_environments``.
        """
        self.check_config(resolved)
        path = self.path / CONFIG_FILE
        if self.has_rows():  # check_config read config.json: it exists and parses
            old = json.loads(path.read_text(encoding="utf-8"))
            new = _jsonable(resolved)
            changed = [k for k in ENVIRONMENT if k in new and old.get(k) != new[k]]
            earlier = list(old.get("earlier_environments") or [])
            if changed:
                log.warning(
                    "%s: resuming under another environment (%s); its earlier rows were "
                    "computed under the old one (kept in config.json's earlier_environments) "
                    "and may differ in the last float bits",
                    self.path,
                    "; ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed),
                )
                earlier.append({k: old.get(k) for k in ENVIRONMENT})
            if earlier:
                resolved = {**resolved, "earlier_environments": earlier}
        _atomic_write(path, json.dumps(resolved, indent=2, default=str))

    def results(self) -> Results:
        """The rows so far (``results.jsonl``, repaired if its last line was cut short)."""
        return Results(self.path / RESULTS_FILE)
