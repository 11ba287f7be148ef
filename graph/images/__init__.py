"""Images attached to a run: loaded from anything, checked by content, kept by hash.

Which tasks see them and in what form each endpoint receives them.
"""

from graph.images._loading import (
    DEFAULT_IMAGE_MAX_BYTES,
    DEFAULT_IMAGE_MAX_PIXELS,
    DEFAULT_IMAGE_MAX_SIDE,
    DEFAULT_MAX_IMAGES,
    ImageError,
    ImageLimits,
    ImageRecord,
    ImageSource,
    load_images,
)
from graph.images._routing import (
    EndpointCannotSee,
    image_message,
    images_for_task,
    needs_images,
    no_vision_error,
    seeing_endpoints,
    with_vision_task,
)

__all__ = [
    "DEFAULT_IMAGE_MAX_BYTES",
    "DEFAULT_IMAGE_MAX_PIXELS",
    "DEFAULT_IMAGE_MAX_SIDE",
    "DEFAULT_MAX_IMAGES",
    "EndpointCannotSee",
    "ImageError",
    "ImageLimits",
    "ImageRecord",
    "ImageSource",
    "image_message",
    "images_for_task",
    "load_images",
    "needs_images",
    "no_vision_error",
    "seeing_endpoints",
    "with_vision_task",
]
