"""The image projector against transformers' Florence-2 projector, and its cosine table by hand."""

from __future__ import annotations

import math

import pytest
import torch

from omnivis.model.projector import ImageProjector, ProjectorConfig, sinusoid_table


@pytest.mark.oracle
@pytest.mark.parametrize("height,width", [(24, 24), (7, 11), (1, 1)])
def test_matches_transformers(height: int, width: int) -> None:
    from transformers import Florence2Config, Florence2VisionConfig
    from transformers.models.florence2.modeling_florence2 import Florence2MultiModalProjector

    vision = Florence2VisionConfig(embed_dim=[8, 16, 24, 40], num_heads=[1, 1, 1, 1], num_groups=[1, 1, 1, 1],
                                   projection_dim=32, max_position_embeddings=30)  # fmt: skip
    reference = Florence2MultiModalProjector(Florence2Config(vision_config=vision)).eval()
    torch.manual_seed(0)
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter)
    ours = ImageProjector(ProjectorConfig(vision_dim=40, projection_dim=32, max_grid_positions=30)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    features = torch.randn(2, 40, height, width)
    with torch.no_grad():
        expected = reference(features)
        got = ours(features)
    assert got.shape == (2, 1 + height * width, 32)
    assert (got - expected).abs().max() < 1e-5


def test_sinusoid_table_by_hand() -> None:
    table = sinusoid_table(3, 4)
    # half = 2 frequencies: 1 and 10000 ** -(1/2); even channels sine, odd cosine.
    for position in range(3):
        for index, frequency in enumerate([1.0, 10000**-0.5]):
            assert table[position, 2 * index].item() == pytest.approx(
                math.sin(position * frequency), abs=1e-6
            )
            assert table[position, 2 * index + 1].item() == pytest.approx(
                math.cos(position * frequency), abs=1e-6
            )


def test_grid_larger_than_the_table_is_refused() -> None:
    projector = ImageProjector(ProjectorConfig(vision_dim=8, projection_dim=8, max_grid_positions=4))
    with pytest.raises(ValueError, match="position table"):
        projector(torch.randn(1, 8, 5, 2))


def test_resample_stretches_the_used_rows_linearly_over_the_new_grid() -> None:
    from omnivis.model.projector import PositionEmbedding2D

    table = PositionEmbedding2D(max_positions=8, dim=4)
    with torch.no_grad():
        table.row_embeddings.weight[:2] = torch.tensor([[0.0, 2.0], [4.0, -2.0]])
        table.column_embeddings.weight[:2] = torch.tensor([[1.0, 1.0], [1.0, 3.0]])
    table.resample_((2, 2), (3, 3))
    # Position i of the old grid meant the fraction i / 1; on the new grid j means j / 2: the middle is the mean.
    assert torch.equal(table.row_embeddings.weight[:3], torch.tensor([[0.0, 2.0], [2.0, 0.0], [4.0, -2.0]]))
    assert torch.equal(table.column_embeddings.weight[:3], torch.tensor([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]]))
    with pytest.raises(ValueError, match="exceeds the position table"):
        table.resample_((3, 3), (9, 9))


def test_fill_sinusoids_gives_every_row_and_column_the_code_of_its_index() -> None:
    from omnivis.model.projector import PositionEmbedding2D

    table = PositionEmbedding2D(max_positions=5, dim=8)  # each half is 4 channels: 2 frequencies
    table.fill_sinusoids_()
    for embeddings in (table.row_embeddings, table.column_embeddings):
        for index in range(5):
            for channel, frequency in enumerate([1.0, 10000**-0.5]):
                angle = index * frequency
                sine, cosine = embeddings.weight[index, 2 * channel : 2 * channel + 2].tolist()
                assert (sine, cosine) == pytest.approx((math.sin(angle), math.cos(angle)), abs=1e-6)
    grid = table(3, 2)  # (C, H, W): the cell (row 2, column 1) is [column 1's code, row 2's code]
    columns, rows = table.column_embeddings.weight, table.row_embeddings.weight
    assert torch.equal(grid[:, 2, 1], torch.cat([columns[1], rows[2]]))
