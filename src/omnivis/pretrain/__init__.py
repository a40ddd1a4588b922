"""Pre-training the vision encoder before the sequence-to-sequence model reads it.

`tagging`: supervised image tagging (region categories and caption words, multi-label) of the vision tower,
whose checkpoint `omnivis train ... model.vision_init=<it>` starts from.
"""

from omnivis.pretrain.tagging import (
    TaggingConfig,
    TaggingResult,
    pretrain_tagging,
    record_tags,
    tag_vocabulary,
)

__all__ = ["TaggingConfig", "TaggingResult", "pretrain_tagging", "record_tags", "tag_vocabulary"]
