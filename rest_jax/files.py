"""Reading the files a user hands over, with errors that name the file.

A truncated or hand-edited file otherwise ends in a parser's traceback that says where in the
text it stopped but not which file it was reading.
"""

from __future__ import annotations

import json
import os
from typing import Any


def read_json(path: str | os.PathLike) -> Any:
    """The parsed content of a JSON file.

    Args:
      path: the file.

    Returns:
      What ``json.load`` returns.

    Raises:
      FileNotFoundError: the file does not exist (from ``open``, naming it).
      ValueError: the file is not valid JSON or not UTF-8 text (truncated or damaged),
        naming the file and where the parser stopped.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); "
            "the file may be truncated or damaged"
        ) from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err}); the file may be damaged") from err
