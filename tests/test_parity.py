"""omnivis against the reference implementation (transformers' Florence-2) on the same random weights.

Acceptance of the foundation: image features and encoder outputs equal within 1e-5 (float32), identical token ids
for greedy and 3-beam generation on every task prompt and on awkward images, single and batched, and `run`
returning exactly what the reference's `post_process_generation` returns -- for the transformers-native layout and
for the same weights re-keyed into the original remote-code layout (fp16 `pytorch_model.bin`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracle_florence import SMALL_TEXT, SMALL_VISION, Reference, build_reference, write_remote_code_layout
from PIL import Image

import omnivis
from omnivis.tasks import TASKS, build_prompt

pytestmark = pytest.mark.oracle

TEXT_INPUTS = {"text": "a red circle", "region": "<loc_100><loc_150><loc_700><loc_800>"}


def _images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    noise = lambda h, w, c: rng.integers(0, 256, (h, w, c), dtype=np.uint8)  # noqa: E731
    return {
        "non-square": Image.fromarray(noise(120, 200, 3)),
        "grayscale": Image.fromarray(noise(90, 60, 1)[..., 0], mode="L"),
        "rgba": Image.fromarray(noise(64, 64, 4), mode="RGBA"),
        "1x1": Image.fromarray(noise(1, 1, 3)),
        "4000x3000": Image.fromarray(noise(30, 40, 3)).resize((4000, 3000), Image.NEAREST),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return build_reference(tmp_path_factory.mktemp("native"), SMALL_VISION, SMALL_TEXT)


@pytest.fixture(scope="module", params=["native", "remote"])
def ours(request: pytest.FixtureRequest, reference: Reference, tmp_path_factory: pytest.TempPathFactory):
    directory = reference.directory
    if request.param == "remote":
        directory = write_remote_code_layout(reference, tmp_path_factory.mktemp("remote"))
    return omnivis.load(directory)


def reference_run(
    reference: Reference, images: list[Image.Image], task: str, texts: list[str | None], **generate_kwargs
) -> tuple[torch.Tensor, list[dict]]:
    prompts = [task + (text or "") for text in texts]
    rgb = [image.convert("RGB") for image in images]
    inputs = reference.processor(text=prompts, images=rgb, return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = reference.model.generate(**inputs, do_sample=False, **generate_kwargs)
    decoded = reference.processor.batch_decode(ids, skip_special_tokens=False)
    parsed = [
        reference.processor.post_process_generation(text, task=task, image_size=image.size)
        for text, image in zip(decoded, images)
    ]
    return ids, parsed


def test_image_features_and_encoder_match(reference: Reference, ours: omnivis.Predictor) -> None:
    image = _images()["non-square"]
    inputs = reference.processor(text=["<OD>"], images=[image], return_tensors="pt")
    with torch.no_grad():
        expected_features = reference.model.get_image_features(inputs["pixel_values"]).pooler_output
        expected_encoder = reference.model.get_encoder()(
            inputs_embeds=_reference_embeddings(reference, inputs), attention_mask=inputs["attention_mask"]
        ).last_hidden_state
        features = ours.model.encode_image(inputs["pixel_values"])
        prompt_ids, prompt_mask = ours.encode_prompts([build_prompt("<OD>")])
        encoded = ours.model.encode(prompt_ids, prompt_mask, image_tokens=features)
    assert (features - expected_features).abs().max().item() < 1e-5
    assert (encoded.states - expected_encoder).abs().max().item() < 1e-5


def _reference_embeddings(reference: Reference, inputs: dict) -> torch.Tensor:
    model = reference.model
    embeddings = model.get_input_embeddings()(inputs["input_ids"])
    features = model.get_image_features(inputs["pixel_values"]).pooler_output
    mask = (inputs["input_ids"] == model.config.image_token_id)[..., None]
    return embeddings.masked_scatter(mask, features)


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("task", [task for task in TASKS if task != "<VQA>"])  # <VQA> is omnivis's own
def test_every_task_matches(reference: Reference, ours: omnivis.Predictor, task: str, num_beams: int) -> None:
    images = _images()
    names = ["non-square", "grayscale"] if num_beams == 3 else list(images)
    text = TEXT_INPUTS.get(TASKS[task].input)
    for name in names:
        image = images[name]
        ids, parsed = reference_run(reference, [image], task, [text], num_beams=num_beams, max_new_tokens=24)
        prompt = build_prompt(task, text)
        sequences, _ = ours.generate_ids([image.convert("RGB")], [prompt], ours.generation_config(num_beams, 24))
        assert sequences.tolist() == ids.tolist(), f"{task} on {name}"
        assert ours.run(image, task, text, num_beams=num_beams, max_new_tokens=24) == parsed[0], f"{task} on {name}"


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batches_with_prompts_of_different_lengths(reference: Reference, ours: omnivis.Predictor, num_beams: int) -> None:
    images = list(_images().values())[:3]
    task = "<CAPTION_TO_PHRASE_GROUNDING>"
    texts = ["a dog", "a red circle and a blue square on a table", "the sky"]
    _, parsed = reference_run(reference, images, task, texts, num_beams=num_beams, max_new_tokens=20)
    assert ours.run_batch(images, task, texts, num_beams=num_beams, max_new_tokens=20) == parsed
