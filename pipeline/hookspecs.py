"""Every extension point of the pipeline, in one place.

Each hook receives a `register` callback and the plugin's own `options` (its table in the
configuration, without the `enabled` switch). A plugin calls `register` zero, one or many times.
Every hook is documented in docs/plugins.md and exercised by tests; tests enforce both.
"""

from __future__ import annotations

import pluggy

PROJECT = "image_pipeline"
ENTRY_POINT_GROUP = "image_pipeline.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_variations(register, options):
    """Declare variations: the renditions made of every upload.

    :param register: call ``register(Variation(...))`` once per variation; a name already
        registered by another plugin is an error naming both plugins.
    :param options: this plugin's options from the configuration, a dict (empty when none).
    """


@hookspec
def register_transforms(register, options):
    """Declare transforms: named geometry rules such as "fit" and "cover".

    :param register: call ``register(Transform(name, plan))``; ``plan(source_size, box)``
        returns a ``Geometry`` (output size and the source region it shows).
    :param options: this plugin's options from the configuration, a dict (empty when none).
    """


@hookspec
def register_encoders(register, options):
    """Declare output formats: format name, extension, content type and encode function together.

    :param register: call ``register(Encoder(...))``; with ``alongside=True`` every variation
        also gets a file in this format next to its main one.
    :param options: this plugin's options from the configuration, a dict (empty when none).
    """


@hookspec
def register_postprocessors(register, options):
    """Declare post-processors: changes applied to a rendered variation before it is encoded.

    :param register: call ``register(PostProcessor(name, apply, applies_to, options))``;
        ``apply(image)`` returns a new image of the same size.
    :param options: this plugin's options from the configuration, a dict (empty when none).
    """
