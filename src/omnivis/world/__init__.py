"""The procedural world: seeded scenes (CLEVR-like shapes and written text) whose every annotation is exact.

    from omnivis.world import VARIANTS, generate_record
    record = generate_record(index=0, seed=1, config=VARIANTS["hard"])

`generate_record(index, seed, config)` depends on its arguments alone, so shards can be made in parallel
processes and come out byte-identical. `sample_scene` gives the scene graph, `render` its image and instance
map (`draw` the image alone), and `annotate` the record (captions at three levels, regions with polygons,
groundings, referring expressions, OCR lines, questions). `resolve` evaluates a structured `Description`
against a scene's objects: the check every referring expression passes.
"""

from omnivis.world.annotation import annotate, generate, generate_record
from omnivis.world.config import VARIANTS, WorldConfig
from omnivis.world.language import Description, referring_expressions, resolve
from omnivis.world.rendering import RenderedScene, draw, render
from omnivis.world.scene import Scene, ShapeObject, sample_scene
from omnivis.world.text import TextObject

__all__ = [
    "VARIANTS",
    "Description",
    "RenderedScene",
    "Scene",
    "ShapeObject",
    "TextObject",
    "WorldConfig",
    "annotate",
    "draw",
    "generate",
    "generate_record",
    "referring_expressions",
    "render",
    "resolve",
    "sample_scene",
]
