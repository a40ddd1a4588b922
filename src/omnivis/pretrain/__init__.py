"""Pre-training the vision encoder before the sequence-to-sequence model reads it.

`tagging`: supervised tagging of the vision tower — the image's region categories, colour-and-shape pairs
and caption words (multi-label) and its background colour, and per cell of its last feature map the
category, colour and box of the largest object centred there and the word of text centred there — whose
checkpoint `omnivis train ... model.vision_init=<it>` starts from; `tagging_data` turns records into its
targets. `omnivis.eval.probe` measures what a tower has learnt.
"""

from omnivis.pretrain.tagging import TaggingConfig, TaggingResult, pretrain_tagging
from omnivis.pretrain.tagging_data import record_tags, tag_vocabulary

__all__ = ["TaggingConfig", "TaggingResult", "pretrain_tagging", "record_tags", "tag_vocabulary"]
