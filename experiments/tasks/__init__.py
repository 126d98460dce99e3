"""The study's tasks, by ``--task`` name (see ``experiments/tasks/base.py``)."""

from __future__ import annotations

from experiments.tasks import composed, image_text, video_audio
from experiments.tasks.base import Task, TaskData

TASKS: dict[str, Task] = {
    image_text.TASK.name: image_text.TASK,
    composed.TASK.name: composed.TASK,
    video_audio.TASK.name: video_audio.TASK,
}


def get_task(name: str) -> Task:
    """The task called ``name``; ValueError naming the known ones otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "Task", "TaskData", "get_task"]
