"""What a retrieval task gives the study: its directions, shifts, and the data of a run.

A task (image-text, video-audio, composed image retrieval) is a :class:`Task`: the names of
its query directions, the default and full grids of query shifts per direction, a check of a
shift's spelling, and a loader that builds the :class:`TaskData` one study runs on. The study
(``experiments/main.py``) only sees these; the methods and the step engine see only query
encoders, their inputs and a gallery.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

# Characters a shift spec may not hold: the study joins specs into run keys with "+" and "|",
# lists them with "," and writes trace files named after them.
RESERVED = ",|+/"


class Task(NamedTuple):
    """A retrieval task of the study.

    Attributes:
      name: the ``--task`` name.
      directions: query directions (``("i2t", "t2i")``); the first is the primary one, where
        the severity sweep, REST's ablations and the diverse streams run by default.
      default_shifts: direction -> the default shifts, ``"spec,spec"`` (calibrated, docs).
      full_grid: direction -> every shift spec of the task (``--shifts DIR=all``).
      check_shift: ``(spec, direction) -> None``; raises ValueError naming what is wrong.
      load: ``StudyConfig -> TaskData``.
      severity_sweep: shift names swept at levels 1-5 on the primary direction ('' none).
      datasets: the ``--dataset`` values the task reads.
    """

    name: str
    directions: tuple[str, ...]
    default_shifts: dict[str, str]
    full_grid: Callable[[str], list[str]]
    check_shift: Callable[[str, str], None]
    load: Callable[[Any], TaskData]
    severity_sweep: str = ""
    datasets: tuple[str, ...] = ("synthworld", "coco", "flickr")


@dataclasses.dataclass(frozen=True)
class TaskData:
    """Everything the runs of one study need, per direction.

    Attributes:
      directions: the loaded directions.
      query_side: direction -> ``(encoder, params, rules)`` of the query tower:
        ``encoder(params, inputs) -> (B, D)`` features; ``rules`` pick the adapted parameters.
      query_inputs: ``(direction, spec, seed) -> inputs`` of every query under shift ``spec``
        (``"clean"``: none): an array or a dict of arrays whose leading axis is the query id.
      galleries: direction -> (N, D) L2-normalised clean gallery embeddings (source model).
      relevance: direction -> (Q, R) relevant gallery ids per query, -1 padded.
      source_pairs: direction -> (clean query inputs, target embeddings) of a few source-domain
        pairs (the decoupling reference, docs/method.md).
      temperature: the source model's contrastive temperature (the one it was trained with),
        the oracle's unless its config names another.
      description: what ``config.json`` records about the data and the model; ``dataset``,
        ``split`` and ``contents`` (e.g. "1000 images, 5000 captions") head the tables.
    """

    directions: tuple[str, ...]
    query_side: Callable[[str], tuple]
    query_inputs: Callable[[str, str, int], Any]
    galleries: dict[str, np.ndarray]
    relevance: dict[str, np.ndarray]
    source_pairs: dict[str, tuple[Any, np.ndarray]]
    temperature: float
    description: dict[str, Any]


def check_spec_characters(spec: str) -> None:
    """Raises ValueError when ``spec`` is empty or holds a character of :data:`RESERVED`."""
    if not spec or any(c in spec for c in RESERVED):
        raise ValueError(f"{spec!r}: a shift is a non-empty name without any of {RESERVED!r}")
