"""Pre-training the vision encoder before the sequence-to-sequence model reads it.

`tagging`: supervised tagging of the vision tower — the image's region categories, colour-and-shape pairs
and caption words (multi-label), and per cell of its last feature map the tags and box of the objects
centred there — whose checkpoint `omnivis train ... model.vision_init=<it>` starts from.
"""

from omnivis.pretrain.tagging import (
    TaggingConfig,
    TaggingResult,
    pretrain_tagging,
    record_tags,
    tag_vocabulary,
)

__all__ = ["TaggingConfig", "TaggingResult", "pretrain_tagging", "record_tags", "tag_vocabulary"]
