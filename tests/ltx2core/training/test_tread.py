"""TREAD routing on the tiny transformer (2 blocks, 8 video tokens per clip): equal to the stock forward
when nothing is routed, exact on the kept tokens when something is, gradients, resolution, eval mode.

Run: .venv/bin/pytest tests/ltx2core/training/test_tread.py
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from ltx2core.config.train import TreadRoute
from ltx2core.training.data import TrainBatch, collate
from ltx2core.training.step import model_inputs, training_step
from ltx2core.training.tread import Route, TreadRouter, kept_tokens, resolve_routes
from tests.ltx2core.training.helpers import LATENT_SHAPE, make_examples

VIDEO_TOKENS = LATENT_SHAPE[1] * LATENT_SHAPE[2] * LATENT_SHAPE[3]  # 8 per clip
CLIPS = 2
ROUTER_SEED = 11
FULL_SIZE_LAYERS = 48  # LTX-2 19B


@pytest.fixture
def transformer(lora_transformer: Callable[..., Any]) -> Any:
    model = lora_transformer(with_audio=True)
    generator = torch.Generator().manual_seed(5)
    for param in model.parameters():  # a LoRA that does something (lora_B starts at zero)
        if param.requires_grad:
            param.data = torch.randn(param.shape, generator=generator) * 0.1
    return model.train()


def _batch(connectors: Any, text_max_length: int, *, audio: bool) -> TrainBatch:
    examples = list(make_examples(CLIPS, audio=audio).values())
    return collate(examples, connectors=connectors, text_max_length=text_max_length, device="cpu", dtype=torch.float32)


def _inputs(transformer: Any, batch: TrainBatch) -> dict[str, Any]:
    """Transformer kwargs with per-token timesteps (first frame conditioned), so their routing is exercised."""
    return model_inputs(transformer, batch, generator=torch.Generator().manual_seed(3), first_frame_p=1.0).kwargs


def _router(transformer: Any, *routes: Route) -> TreadRouter:
    return TreadRouter(transformer, routes, torch.Generator().manual_seed(ROUTER_SEED))


@contextmanager
def _video_tokens_seen(transformer: Any) -> Iterator[list[int]]:
    """Counts the video tokens each block is called with (registered after the router: sees its changes)."""
    seen: list[int] = []
    handles = [
        block.register_forward_pre_hook(
            lambda module, args, kwargs: seen.append((kwargs.get("hidden_states", args[0] if args else None)).shape[1]),
            with_kwargs=True,
        )
        for block in transformer.transformer_blocks
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("audio", [False, True], ids=["video-only", "audio-video"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_nothing_routed_equals_the_stock_forward_exactly(
    transformer: Any, connectors: Any, text_max_length: int, audio: bool, checkpointing: bool
) -> None:
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    kwargs = _inputs(transformer, _batch(connectors, text_max_length, audio=audio))
    stock = transformer(**kwargs)
    with _router(transformer, Route(0.0, 0, 1)), _video_tokens_seen(transformer) as seen:
        routed = transformer(**kwargs)
    assert seen == [VIDEO_TOKENS, VIDEO_TOKENS]
    assert torch.equal(routed[0], stock[0]) and torch.equal(routed[1], stock[1])


def test_a_route_over_every_block_equals_the_stock_model_run_on_the_kept_tokens(
    transformer: Any, connectors: Any, text_max_length: int
) -> None:
    """Kept tokens: the stock model on those tokens alone (their coords and timesteps); dropped tokens: the
    stock model with no blocks at all. Checks the routing of RoPE, per-token timesteps and the audio stream."""
    kwargs = _inputs(transformer, _batch(connectors, text_max_length, audio=True))
    with _router(transformer, Route(0.5, 0, 1)):
        video, audio = transformer(**kwargs)
    kept = kept_tokens(CLIPS, VIDEO_TOKENS, 0.5, torch.Generator().manual_seed(ROUTER_SEED))
    all_tokens = torch.arange(VIDEO_TOKENS).expand(CLIPS, -1)
    dropped = torch.stack([row[~torch.isin(row, k)] for row, k in zip(all_tokens, kept)])
    assert kept.shape == dropped.shape == (CLIPS, VIDEO_TOKENS // 2)

    def subset(tokens: torch.Tensor) -> dict[str, Any]:
        rows = torch.arange(CLIPS)[:, None]
        return {
            **kwargs,
            "hidden_states": kwargs["hidden_states"][rows, tokens],
            "timestep": kwargs["timestep"][rows, tokens],
            "video_coords": kwargs["video_coords"][rows, :, tokens].transpose(1, 2),  # [B, 3, K, 2]
        }

    expected_kept, expected_audio = transformer(**subset(kept))
    blocks = transformer.transformer_blocks
    transformer.transformer_blocks = torch.nn.ModuleList()
    try:
        expected_dropped = transformer(**subset(dropped))[0]
    finally:
        transformer.transformer_blocks = blocks
    rows = torch.arange(CLIPS)[:, None]
    torch.testing.assert_close(video[rows, kept], expected_kept, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(video[rows, dropped], expected_dropped, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(audio, expected_audio, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(0, 0, [4, 8]), (1, -1, [8, 4]), (-2, -1, [4, 4])],
    ids=["first-block", "last-block", "both-blocks"],
)
def test_routed_blocks_see_the_kept_share_of_video_tokens(
    transformer: Any, connectors: Any, text_max_length: int, start: int, end: int, expected: list[int]
) -> None:
    routes = resolve_routes([TreadRoute(selection_ratio=0.5, start_layer_idx=start, end_layer_idx=end)], 2)
    kwargs = _inputs(transformer, _batch(connectors, text_max_length, audio=False))
    with _router(transformer, *routes), _video_tokens_seen(transformer) as seen:
        video, _ = transformer(**kwargs)
    assert seen == expected
    assert video.shape[1] == VIDEO_TOKENS  # scattered back before the output layers


def test_negative_indices_count_from_the_end() -> None:
    quickstart = TreadRoute(selection_ratio=0.5, start_layer_idx=2, end_layer_idx=-2)
    assert resolve_routes([quickstart], FULL_SIZE_LAYERS) == (Route(0.5, 2, 46),)
    two = [TreadRoute(selection_ratio=0.25, start_layer_idx=-10, end_layer_idx=-1),
           TreadRoute(selection_ratio=0.5, start_layer_idx=0, end_layer_idx=3)]
    assert resolve_routes(two, FULL_SIZE_LAYERS) == (Route(0.5, 0, 3), Route(0.25, 38, 47))


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ([(2, 48)], r"routes\[0\]\.end_layer_idx 48 is outside the transformer's 48 blocks"),
        ([(-49, 3)], r"routes\[0\]\.start_layer_idx -49 is outside"),
        ([(10, -40)], r"routes\[0\] starts at block 10 \(start_layer_idx 10\) after it ends at block 8"),
        ([(2, 10), (10, 20)], r"blocks 2\.\.10\) and routes\[1\] \(blocks 10\.\.20\) overlap"),
    ],
    ids=["end-out-of-range", "start-out-of-range", "reversed", "overlap"],
)
def test_bad_routes_are_refused_with_the_route_and_the_fix(routes: list[tuple[int, int]], message: str) -> None:
    config = [TreadRoute(selection_ratio=0.5, start_layer_idx=s, end_layer_idx=e) for s, e in routes]
    with pytest.raises(ValueError, match=message):
        resolve_routes(config, FULL_SIZE_LAYERS)


def test_gradients_reach_every_lora_parameter_with_and_without_checkpointing(
    transformer: Any, connectors: Any, text_max_length: int
) -> None:
    batch = _batch(connectors, text_max_length, audio=True)
    params = {name: p for name, p in transformer.named_parameters() if p.requires_grad}

    def gradients() -> dict[str, torch.Tensor]:
        transformer.zero_grad(set_to_none=True)
        # block 1 routed: the dropped tokens carry block 0's output past it, outside block 1's checkpoint
        with _router(transformer, Route(0.5, 1, 1)):
            training_step(transformer, batch, generator=torch.Generator().manual_seed(3)).loss.backward()
        return {name: p.grad.clone() for name, p in params.items() if p.grad is not None}

    plain = gradients()
    transformer.enable_gradient_checkpointing()
    checkpointed = gradients()
    assert sorted(plain) == sorted(params)
    assert all(grad.abs().sum() > 0 for grad in plain.values())
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7)


def test_a_routed_training_step_has_a_finite_loss_that_differs_from_the_unrouted_one(
    transformer: Any, connectors: Any, text_max_length: int
) -> None:
    batch = _batch(connectors, text_max_length, audio=False)
    unrouted = training_step(transformer, batch, generator=torch.Generator().manual_seed(3)).loss
    routes = resolve_routes([TreadRoute(selection_ratio=0.5, start_layer_idx=0, end_layer_idx=-2)], 2)
    with _router(transformer, *routes):
        routed = training_step(transformer, batch, generator=torch.Generator().manual_seed(3)).loss
    assert torch.isfinite(routed) and routed != unrouted


def test_eval_mode_and_no_grad_run_the_stock_model(transformer: Any, connectors: Any, text_max_length: int) -> None:
    kwargs = _inputs(transformer, _batch(connectors, text_max_length, audio=False))
    with torch.no_grad():
        stock = transformer(**kwargs)[0]
    with _router(transformer, Route(0.5, 0, 1)), _video_tokens_seen(transformer) as seen:
        with torch.no_grad():  # train mode, no grad (validation inside the loop)
            assert torch.equal(transformer(**kwargs)[0], stock)
        transformer.eval()
        assert torch.equal(transformer(**kwargs)[0], stock)
        transformer.train()
        routed = transformer(**kwargs)[0]  # control: routing is on again
    assert seen == [VIDEO_TOKENS] * 4 + [VIDEO_TOKENS // 2] * 2
    assert not torch.allclose(routed, stock)


def test_the_kept_tokens_follow_the_generator() -> None:
    first = kept_tokens(CLIPS, 16, 0.25, torch.Generator().manual_seed(1))
    assert torch.equal(first, kept_tokens(CLIPS, 16, 0.25, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, kept_tokens(CLIPS, 16, 0.25, torch.Generator().manual_seed(2)))
    assert first.shape == (CLIPS, 12) and all(row.unique().numel() == 12 for row in first)
    assert torch.equal(first, first.sort(dim=1).values)  # kept in sequence order
