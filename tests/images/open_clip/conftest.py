"""A real OpenCLIP model offline: random weights from its config, saved once as a local checkpoint.

``pretrained=None`` builds the architecture without any download; saving the (seeded)
weights to a file and loading them as ``checkpoint=`` gives every process of the test
run the same model, through open_clip's own checkpoint loading, preprocessing and forward pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

MODEL = "ViT-S-32"  # small (63M parameters, 384-d), no BatchNorm


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    import open_clip
    import torch

    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(MODEL, pretrained=None)
    path = tmp_path_factory.mktemp("weights") / f"{MODEL}-seed0.pt"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cache.db'}"
