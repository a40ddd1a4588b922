"""Image + task -> structured answer: the user-facing side of the model (beside `model/`, not in it).

`Predictor` composes the pieces: safe image loading, the reference-exact preprocessing, the task's prompt, the
model's encoder, omnivis's own generation, and the task's parser. What `run` returns is exactly what the reference
processor's `post_process_generation` returns for the same tokens, plus per-box `scores` on request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from omnivis.data.transforms import IMAGENET_MEAN, IMAGENET_STD, preprocess
from omnivis.errors import InputError
from omnivis.images import ImageSource, load_image
from omnivis.model.florence import Florence2
from omnivis.model.generation import generate
from omnivis.model.generation_config import GenerationConfig
from omnivis.tasks import TASKS, build_prompt
from omnivis.tasks.parsing import post_process
from omnivis.tokenizer import Tokenizer

Region = tuple[float, float, float, float]


@dataclass
class ImageProcessing:
    """How images become pixels; read from a checkpoint's preprocessor_config.json when it has one."""

    size: tuple[int, int] = (768, 768)  # (height, width)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass
class Predictor:
    """A loaded model ready to answer: `run` one image, `run_batch` many; see `omnivis.load`."""

    model: Florence2
    tokenizer: Tokenizer
    generation: GenerationConfig
    image_processing: ImageProcessing = field(default_factory=ImageProcessing)
    parse_config: dict[str, Any] = field(default_factory=dict)  # the reference's post_processor_config

    def tasks(self) -> list[dict[str, str]]:
        """The task prompts this model answers, with the input each takes ("none", "text" or "region")."""
        return [{"task": t.token, "input": t.input, "description": t.description} for t in TASKS.values()]

    def run(
        self,
        image: ImageSource,
        task: str = "<CAPTION>",
        text: str | Region | None = None,
        num_beams: int | None = 3,
        max_new_tokens: int | None = 1024,
        return_scores: bool = False,
    ) -> dict[str, Any]:
        """Answers one task on one image.

        Args:
            image: a path, raw bytes, a PIL image, or an HxWx3 uint8 array.
            task: a task prompt such as "<OD>" (see `tasks()`), or any free text.
            text: the task's input: a phrase, a question, or for region tasks a pixel box (x0, y0, x1, y1)
                or a "<loc_..>" string.
            num_beams: beam width (3, as the official examples use); None takes the checkpoint's generation config.
            max_new_tokens: longest answer, in tokens; None takes the checkpoint's generation config.
            return_scores: add per-box `scores` (geometric-mean probability of each box's location tokens).

        Returns:
            `{task: answer}` exactly as the reference's `post_process_generation` builds it.
        """
        return self.run_batch(
            [image], task, None if text is None else [text], num_beams, max_new_tokens, return_scores
        )[0]

    def run_batch(
        self,
        images: Sequence[ImageSource],
        task: str = "<CAPTION>",
        texts: Sequence[str | Region | None] | None = None,
        num_beams: int | None = 3,
        max_new_tokens: int | None = 1024,
        return_scores: bool = False,
    ) -> list[dict[str, Any]]:
        """`run` over a batch of images that share a task; `texts` gives each image its own input."""
        if len(images) == 0:
            return []
        if texts is not None and len(texts) != len(images):
            raise InputError(f"got {len(images)} images but {len(texts)} texts")
        pictures = [load_image(image) for image in images]
        sizes = [picture.size for picture in pictures]  # (width, height), as the parser wants them
        prompts = [
            build_prompt(task, None if texts is None else texts[index], image_size=sizes[index])
            for index in range(len(pictures))
        ]
        config = self.generation_config(num_beams, max_new_tokens)
        sequences, scores = self.generate_ids(pictures, prompts, config, return_scores)
        answers = []
        for row in range(len(pictures)):
            ids, row_scores = self._own_tokens(sequences[row], None if scores is None else scores[row])
            answers.append(post_process(task, ids, self.tokenizer, sizes[row], self.parse_config, row_scores))
        return answers

    def run_tasks(
        self,
        image: ImageSource,
        tasks: Mapping[str, str | Region | None] | Sequence[str],
        num_beams: int | None = 3,
        max_new_tokens: int | None = 1024,
        return_scores: bool = False,
    ) -> dict[str, Any]:
        """Answers several tasks on one image, with one pass of the vision tower and one batched decode.

        Each answer is `run(image, task, text)`'s, computed in one batch (as with `run_batch`, batched matrix
        products may round differently in the last bit); the image is encoded once, as segment-anything's
        predictor sets an image once for many prompts.

        Args:
            image: as for `run`.
            tasks: task prompts, or a mapping of task prompt -> its input (None for tasks that take none).

        Returns:
            `{task: answer}` for every task, in the order given.
        """
        inputs = dict(tasks) if isinstance(tasks, Mapping) else dict.fromkeys(tasks)
        if not inputs:
            return {}
        picture = load_image(image)
        prompts = [build_prompt(task, text, image_size=picture.size) for task, text in inputs.items()]
        config = self.generation_config(num_beams, max_new_tokens)
        tokens = self.image_tokens([picture]).expand(len(prompts), -1, -1)  # one image, every prompt
        sequences, scores = self.generate_ids([picture], prompts, config, return_scores, image_tokens=tokens)
        answers: dict[str, Any] = {}
        for row, task in enumerate(inputs):
            ids, row_scores = self._own_tokens(sequences[row], None if scores is None else scores[row])
            answers.update(
                post_process(task, ids, self.tokenizer, picture.size, self.parse_config, row_scores)
            )
        return answers

    def _own_tokens(
        self, sequence: torch.Tensor, scores: torch.Tensor | None
    ) -> tuple[list[int], list[float] | None]:
        """One row of a batch's output as that row alone would have generated it: cut after its end token.

        A batch pads the rows that finished early; a lone request has no such padding. Cutting it keeps
        `run_batch` (and the server's dynamic batches) answering exactly as `run` does, where the reference
        would leave the padding in plain-text answers.
        """
        ids = sequence.tolist()
        ends = [
            position
            for position, token in enumerate(ids)
            if token == self.tokenizer.eos_token_id and position > 0
        ]
        length = ends[0] + 1 if ends else len(ids)
        return ids[:length], None if scores is None else scores.tolist()[:length]

    def generation_config(self, num_beams: int | None, max_new_tokens: int | None) -> GenerationConfig:
        """The checkpoint's decoding settings with these overrides (None keeps the checkpoint's), validated."""
        overrides: dict[str, Any] = {}
        if num_beams is not None:
            overrides["num_beams"] = num_beams
        if max_new_tokens is not None:
            overrides["max_new_tokens"] = max_new_tokens
        config = replace(self.generation, **overrides)
        config.validate()
        # A cap, not a demand: the decoder cannot write past its position table, so shorter tables cap it lower.
        limit = self.model.config.text.max_position_embeddings
        return replace(config, max_new_tokens=min(config.max_new_tokens, limit))

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids `<s> prompt </s>`, right-padded, and their attention mask: (B, T) each."""
        encoded = [
            [self.tokenizer.bos_token_id, *self.tokenizer.encode(p), self.tokenizer.eos_token_id]
            for p in prompts
        ]
        room = self.model.config.text.max_position_embeddings - self.model.config.num_image_tokens
        longest = max(len(ids) for ids in encoded)
        if longest > room:
            raise InputError(
                f"the prompt is {longest} tokens long; this model's position table leaves room for {room} "
                f"after the {self.model.config.num_image_tokens} image tokens"
            )
        ids = torch.full((len(encoded), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), longest), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        return ids, mask

    @torch.inference_mode()
    def image_tokens(self, pictures: Sequence[Any]) -> torch.Tensor:
        """The visual tokens (B, N, d_model) of PIL RGB images: preprocessing, vision tower, projector."""
        processing = self.image_processing
        pixels = preprocess(pictures, size=processing.size, mean=processing.mean, std=processing.std)
        return self.model.encode_image(pixels.to(self.model.device))

    @torch.inference_mode()
    def generate_ids(
        self,
        pictures: Sequence[Any],
        prompts: Sequence[str],
        config: GenerationConfig,
        return_scores: bool = False,
        image_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Generated token ids (B, T) for PIL images and prompt strings, and per-token log-probabilities.

        `image_tokens` (B, N, d_model), when given, replaces the images' pass through the vision tower.
        """
        device = self.model.device
        if image_tokens is None:
            image_tokens = self.image_tokens(pictures)
        input_ids, attention_mask = self.encode_prompts(prompts)
        encoded = self.model.encode(
            input_ids.to(device), attention_mask.to(device), image_tokens=image_tokens
        )
        # Step t feeds the token at decoder position t, so max_new_tokens positions suffice.
        cache = self.model.start_decoding(encoded, capacity=config.max_new_tokens)
        output = generate(
            self.model.decode_step, self.model.select_cache, cache, len(prompts), config,
            device=device, return_scores=return_scores,
        )  # fmt: skip
        scores = None
        if return_scores and output.token_scores is not None:
            # Align with the sequences: the decoder start token was given, not generated (score 0).
            scores = torch.nn.functional.pad(output.token_scores.float().cpu(), (1, 0))
        return output.sequences.cpu(), scores
