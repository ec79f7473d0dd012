"""The rater pages' image widget: a ``gr.Image`` that shows a presentation URL without copying anything.

Gradio writes a type stub (``images.pyi``) next to the module of every component subclass when it is first
imported; this module holds only the one class, and its stub is committed so that nothing is written at import.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.data_classes import ImageData

# The page's image URLs: one opaque token per presentation (p2p_app/serving.py), answered by files.PresentationFiles
# from the stored file; Gradio never copies these images into its cache.
PRESENTATION_PREFIX = "/gradio_api/file=p2p/"


def presentation_url(token: str) -> str:
    return f"{PRESENTATION_PREFIX}{token}.png"

from gradio.events import Dependency

class BlindImage(gr.Image):
    """A ``gr.Image`` whose value is a presentation URL (:func:`presentation_url`): shown as is, never moved into
    Gradio's file cache (where a folder named by the bytes' hash would tell a repeat, and every shown image would
    be stored a second time)."""

    is_template = True  # the page uses Gradio's own image widget ("image"), not a custom one

    def postprocess(self, value: Any) -> ImageData | None:
        if isinstance(value, str) and value.startswith(PRESENTATION_PREFIX):
            return ImageData(path=value, url=value, orig_name="image.png", mime_type="image/png")
        return super().postprocess(value)

    def move_resource_to_block_cache(self, url_or_file_path: Any) -> str | None:
        if isinstance(url_or_file_path, str) and url_or_file_path.startswith(PRESENTATION_PREFIX):
            return url_or_file_path
        return super().move_resource_to_block_cache(url_or_file_path)

    async def async_move_resource_to_block_cache(self, url_or_file_path: Any) -> str | None:
        if isinstance(url_or_file_path, str) and url_or_file_path.startswith(PRESENTATION_PREFIX):
            return url_or_file_path
        return await super().async_move_resource_to_block_cache(url_or_file_path)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component