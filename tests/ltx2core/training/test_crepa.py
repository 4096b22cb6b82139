"""CREPA on the tiny transformer and tiny VAE, with a tiny random ViT standing in for DINOv2: the loss against
a hand computation, the features, gradients, training, and loading the encoder from local files only.

Run: .venv/bin/pytest tests/ltx2core/training/test_crepa.py
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ltx2core.training.crepa import Crepa, CrepaSettings, crepa_features, crepa_loss, load_dinov2, temporal_weights
from ltx2core.training.data import TrainBatch, collate
from ltx2core.training.step import training_step
from ltx2core.training.tread import Route, TreadRouter
from tests.ltx2core.training.helpers import LATENT_SHAPE, make_examples

IMAGE_SIZE = 16  # 4x4 patches of the tiny ViT
LATENT_GRID = LATENT_SHAPE[1:]  # (2, 2, 2): 2 latent frames of 2x2 tokens, 9 pixel frames of 64x64
TRAIN_STEPS = 6
LEARNING_RATE = 1e-2


class TinyViT(nn.Module):
    """DINOv2's interface (patch_size, embed_dim, forward_features -> x_norm_patchtokens) at toy size."""

    patch_size = 4
    embed_dim = 12

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, self.embed_dim, self.patch_size, stride=self.patch_size)
        self.block = nn.TransformerEncoderLayer(self.embed_dim, 2, dim_feedforward=24, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(self.embed_dim)

    def forward_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.patch(images).flatten(2).transpose(1, 2)  # [N, patches, E]
        return {"x_norm_patchtokens": self.norm(self.block(tokens))}


def _encoder(seed: int = 0) -> TinyViT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyViT().eval().requires_grad_(False)


@pytest.fixture
def transformer(lora_transformer: Callable[..., Any]) -> Any:
    model = lora_transformer()
    generator = torch.Generator().manual_seed(5)
    for param in model.parameters():  # a LoRA that does something (lora_B starts at zero)
        if param.requires_grad:
            param.data = torch.randn(param.shape, generator=generator) * 0.1
    return model.train()


@pytest.fixture
def batch(connectors: Any, text_max_length: int) -> TrainBatch:
    examples = list(make_examples(2).values())
    return collate(examples, connectors=connectors, text_max_length=text_max_length, device="cpu", dtype=torch.float32)


def _reference_loss(z: list[list[float]], f: list[list[float]], weight: float, distance: int, tau: float) -> float:
    """The CREPA loss of one clip with one patch per frame, in plain Python."""

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    frames = len(z)
    scores = []
    for t in range(frames):
        score = cos(z[t], f[t])
        for s in (t - distance, t + distance):
            if distance > 0 and 0 <= s < frames:
                score += math.exp(-distance / tau) * cos(z[t], f[s])
        scores.append(score)
    return -weight * sum(scores) / frames


@pytest.mark.parametrize(("distance", "tau"), [(0, 1.0), (1, 1.0), (1, 2.0), (2, 0.5)])
def test_the_loss_matches_a_hand_computation(distance: int, tau: float) -> None:
    z = [[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [-1.0, 0.5]]
    f = [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.3, -1.0]]
    got = crepa_loss(torch.tensor(z)[None, :, None], torch.tensor(f)[None, :, None], weight=0.5, distance=distance,
                     tau=tau)
    assert got.item() == pytest.approx(_reference_loss(z, f, 0.5, distance, tau), rel=1e-6)
    # Frame 0 with distance 1, tau 1: its own cosine (1) + e^-1 * cos((1,0),(0,1)) (0).
    assert temporal_weights(4, 1, 1.0)[0].tolist() == pytest.approx([1.0, math.exp(-1), 0.0, 0.0])


def test_the_loss_averages_patches_and_clips() -> None:
    generator = torch.Generator().manual_seed(0)
    z, f = torch.randn(2, 3, 5, 4, generator=generator), torch.randn(2, 3, 5, 4, generator=generator)
    per_patch = [
        crepa_loss(z[b : b + 1, :, p : p + 1], f[b : b + 1, :, p : p + 1], weight=1.0, distance=1, tau=1.0)
        for b in range(2) for p in range(5)
    ]
    got = crepa_loss(z, f, weight=1.0, distance=1, tau=1.0)
    torch.testing.assert_close(got, torch.stack(per_patch).mean())


def test_features_are_one_pixel_frame_per_latent_frame_on_the_latent_grid() -> None:
    encoder = _encoder()
    generator = torch.Generator().manual_seed(1)
    frames = torch.rand(1, 3, 9, 64, 64, generator=generator) * 2 - 1
    features = crepa_features(encoder, frames, latent_grid=LATENT_GRID, image_size=IMAGE_SIZE)
    assert features.shape == (1, 2, 4, TinyViT.embed_dim)
    changed = frames.clone()
    changed[:, :, 1:8] = 0  # pixel frames inside latent frame 1 other than its last (8)
    torch.testing.assert_close(crepa_features(encoder, changed, latent_grid=LATENT_GRID, image_size=IMAGE_SIZE),
                               features)
    changed[:, :, 8] = 0  # control: frame 8 is what latent frame 1 sees
    moved = crepa_features(encoder, changed, latent_grid=LATENT_GRID, image_size=IMAGE_SIZE)
    torch.testing.assert_close(moved[:, 0], features[:, 0])
    assert not torch.allclose(moved[:, 1], features[:, 1])


def test_an_image_size_off_the_patch_grid_is_refused() -> None:
    frames = torch.zeros(1, 3, 9, 64, 64)
    with pytest.raises(ValueError, match="crepa_encoder_image_size 18 is not a multiple of the encoder's patch size 4: "
                                         "use 16 or 20"):
        crepa_features(_encoder(), frames, latent_grid=LATENT_GRID, image_size=18)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_gradients_reach_the_projector_and_the_lora_up_to_the_block(
    transformer: Any, batch: TrainBatch, tiny_vae: Any, checkpointing: bool
) -> None:
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    crepa = Crepa(transformer, encoder=_encoder(), vae=tiny_vae, settings=CrepaSettings(block_index=0,
                  image_size=IMAGE_SIZE), seed=0)
    training_step(transformer, batch, generator=torch.Generator().manual_seed(3))
    loss = crepa.loss(batch.latents)
    assert loss.requires_grad and torch.isfinite(loss)
    transformer.zero_grad(set_to_none=True)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in crepa.regularizer.parameters())
    lora = {name: p for name, p in transformer.named_parameters() if p.requires_grad}
    before = [name for name in lora if name.startswith("transformer_blocks.0.")]
    after = [name for name in lora if not name.startswith("transformer_blocks.0.")]
    assert before and after
    assert all(lora[name].grad is not None and lora[name].grad.abs().sum() > 0 for name in before)
    assert all(lora[name].grad is None for name in after)  # past block 0: nothing to align
    crepa.remove()


def test_training_on_a_fixed_batch_raises_the_alignment(transformer: Any, batch: TrainBatch, tiny_vae: Any) -> None:
    crepa = Crepa(transformer, encoder=_encoder(), vae=tiny_vae, settings=CrepaSettings(block_index=1,
                  image_size=IMAGE_SIZE), seed=0)
    params = [p for p in transformer.parameters() if p.requires_grad] + list(crepa.regularizer.parameters())
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE)
    crepa_losses = []
    for _ in range(TRAIN_STEPS):
        output = training_step(transformer, batch, generator=torch.Generator().manual_seed(3))  # same noise each step
        crepa_loss_ = crepa.loss(batch.latents)
        (output.loss + crepa_loss_).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        crepa_losses.append(crepa_loss_.item())
    assert all(later < earlier for earlier, later in zip(crepa_losses, crepa_losses[1:])), crepa_losses
    crepa.remove()


def test_nothing_is_captured_in_eval_or_without_grad(transformer: Any, batch: TrainBatch, tiny_vae: Any) -> None:
    crepa = Crepa(transformer, encoder=_encoder(), vae=tiny_vae, settings=CrepaSettings(block_index=0,
                  image_size=IMAGE_SIZE), seed=0)
    with torch.no_grad():
        training_step(transformer, batch, generator=torch.Generator().manual_seed(3))
    with pytest.raises(RuntimeError, match="needs a training forward"):
        crepa.loss(batch.latents)
    crepa.remove()


def test_a_block_inside_a_tread_route_is_refused_and_one_before_it_works(
    transformer: Any, batch: TrainBatch, tiny_vae: Any
) -> None:
    crepa = Crepa(transformer, encoder=_encoder(), vae=tiny_vae, settings=CrepaSettings(block_index=0,
                  image_size=IMAGE_SIZE), seed=0)
    with TreadRouter(transformer, [Route(0.5, 0, 1)], torch.Generator().manual_seed(0)):
        training_step(transformer, batch, generator=torch.Generator().manual_seed(3))
        with pytest.raises(ValueError, match="is crepa_block_index inside a TREAD route"):
            crepa.loss(batch.latents)
    with TreadRouter(transformer, [Route(0.5, 1, 1)], torch.Generator().manual_seed(0)):
        training_step(transformer, batch, generator=torch.Generator().manual_seed(3))
        assert torch.isfinite(crepa.loss(batch.latents))
    crepa.remove()


def test_a_block_index_past_the_model_is_refused(transformer: Any, tiny_vae: Any) -> None:
    with pytest.raises(ValueError, match=r"crepa_block_index 8 is past the transformer's 2 blocks: use 0\.\.1"):
        Crepa(transformer, encoder=_encoder(), vae=tiny_vae, settings=CrepaSettings(block_index=8), seed=0)


def test_absent_encoder_files_say_where_they_were_looked_for_and_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    hub = tmp_path / "torch" / "hub"
    with pytest.raises(FileNotFoundError) as error:
        load_dinov2("dinov2_vitg14")
    message = str(error.value)
    assert f"{hub / 'facebookresearch_dinov2_main' / 'hubconf.py'} (MISSING)" in message
    assert f"{hub / 'checkpoints' / 'dinov2_vitg14_pretrain.pth'} (MISSING)" in message
    assert "torch.hub.load('facebookresearch/dinov2', 'dinov2_vitg14')" in message
    assert "crepa_enabled" in message
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth \(MISSING\)"):
        load_dinov2("dinov2_vits14", repo=tmp_path, weights=tmp_path / "nowhere.pth")
    with pytest.raises(ValueError, match="crepa_encoder 'dinov3' is not supported: use one of dinov2_vits14"):
        load_dinov2("dinov3")


def test_the_encoder_loads_from_a_local_hub_copy_without_downloading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = tmp_path / "torch" / "hub"
    repo = hub / "facebookresearch_dinov2_main"
    repo.mkdir(parents=True)
    # A hubconf like dinov2's: the entry point downloads when pretrained=True, so the loader must not ask.
    (repo / "hubconf.py").write_text(
        "dependencies = ['torch']\n"
        "from tests.ltx2core.training.test_crepa import TinyViT\n"
        "def dinov2_vits14(*, pretrained=True, **kwargs):\n"
        "    if pretrained:\n"
        "        raise RuntimeError('would download')\n"
        "    return TinyViT()\n"
    )
    (hub / "checkpoints").mkdir()
    saved = _encoder(seed=7)
    torch.save(saved.state_dict(), hub / "checkpoints" / "dinov2_vits14_pretrain.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.syspath_prepend(str(Path.cwd()))

    loaded = load_dinov2("dinov2_vits14")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.forward_features(images)["x_norm_patchtokens"],
                               saved.forward_features(images)["x_norm_patchtokens"])
