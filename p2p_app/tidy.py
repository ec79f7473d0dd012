"""The tidy ratings frame's columns and dtypes (docs/CONTRACTS.md): shared by storage, analysis and export."""

from __future__ import annotations

import types
from typing import Mapping

TIDY_DTYPES: Mapping[str, str] = types.MappingProxyType(
    {
        "study": "str",
        "rater_id": "str",
        "item_id": "str",
        "trial_id": "int64",
        "image_id": "str",
        "model": "str",
        "source": "str",
        "prompt_id": "str",
        "prompt": "str",
        "modality": "str",
        "seed": "Int64",
        "position": "int64",
        "n_panels": "int64",
        "order_index": "int64",
        "question": "str",
        "value": "float64",
        "choices": "str",
        "cant_judge": "bool",
        "comment": "str",
        "shown_at": "datetime64[ns, UTC]",
        "answered_at": "datetime64[ns, UTC]",
        "seconds": "float64",
        "is_repeat": "bool",
    }
)
"""Columns of the tidy ratings frame, in contract order, with their dtypes."""

TIDY_COLUMNS: tuple[str, ...] = tuple(TIDY_DTYPES)
