"""Compact caption cache == LTX2Pipeline's own prompt path, on the tiny model in float32.

Tolerances (float32): the padded path is bit-identical to the pipeline (asserted at 1e-6); the
length-bucketed path differs by float rounding only (measured 6e-7 on outputs of magnitude ~4), asserted
at 2e-6. In bfloat16 the bucketed features are bit-identical to the padded ones, because every real token
keeps its RoPE position; with Gemma's default positions (0..L-1 per batch) they differ by up to 2e-2.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers import LTX2Pipeline

from ltx2core.models import loading
from ltx2core.models.source import ModelSource
from ltx2core.models.text import CaptionEmbedding, encode_captions, expand_for_transformer

CAPTIONS = [
    "a robot dancing in the rain",
    "hi",
    "A much longer caption about a cat, sitting on a mat; it is 3 years old and it looks at the camera!",
    "",
    "two dogs run",
]
PADDED_TOLERANCE = 1e-6
BUCKETED_TOLERANCE = 2e-6


@pytest.fixture(scope="module")
def max_length(tiny: ModelSource) -> int:
    return tiny.text_max_length


@pytest.fixture(scope="module")
def pipeline_outputs(tiny_text: dict[str, Any], max_length: int) -> tuple[torch.Tensor, ...]:
    """What LTX2Pipeline feeds its transformer: encode_prompt, then the connectors, all padded to max_length."""
    pipe = LTX2Pipeline(scheduler=None, vae=None, audio_vae=None, transformer=None, vocoder=None, **tiny_text)
    with torch.no_grad():
        embeds, mask, _, _ = pipe.encode_prompt(
            CAPTIONS, do_classifier_free_guidance=False, max_sequence_length=max_length, device="cpu"
        )
        return tiny_text["connectors"](embeds, mask, padding_side="left")


def _encode(tiny_text: dict[str, Any], max_length: int, **kwargs: Any) -> list[CaptionEmbedding]:
    return encode_captions(CAPTIONS, max_length=max_length, device="cpu", dtype=torch.float32, **tiny_text, **kwargs)


def _expand(tiny_text: dict[str, Any], max_length: int, cached: list[CaptionEmbedding]) -> tuple[torch.Tensor, ...]:
    return expand_for_transformer(
        cached, max_length=max_length, connectors=tiny_text["connectors"], device="cpu", dtype=torch.float32
    )


def test_cached_real_tokens_expand_to_what_the_pipeline_feeds_the_transformer(
    tiny_text: dict[str, Any], max_length: int, pipeline_outputs: tuple[torch.Tensor, ...]
) -> None:
    cached = _encode(tiny_text, max_length, bucketed=False, batch_size=3)
    tokens = tiny_text["tokenizer"](CAPTIONS, truncation=True, max_length=max_length)["input_ids"]
    assert [c.num_tokens for c in cached] == [len(t) for t in tokens]  # real tokens only, <bos> included
    assert cached[2].num_tokens == max_length  # the long caption is truncated like the pipeline's

    video, audio, mask = _expand(tiny_text, max_length, cached)
    expected_video, expected_audio, expected_mask = pipeline_outputs
    assert video.shape == expected_video.shape == (len(CAPTIONS), max_length, 32)
    assert torch.equal(mask, expected_mask)
    assert (video - expected_video).abs().max() <= PADDED_TOLERANCE
    assert (audio - expected_audio).abs().max() <= PADDED_TOLERANCE
    assert video.abs().max() > 1  # a real signal, not two zero tensors agreeing


def test_length_bucketed_encoding_matches_the_padded_path(
    tiny_text: dict[str, Any], max_length: int, pipeline_outputs: tuple[torch.Tensor, ...]
) -> None:
    padded = _encode(tiny_text, max_length, bucketed=False)
    # batch_size 2 puts the short captions together: their batch is padded to 8 tokens, not 64.
    bucketed = _encode(tiny_text, max_length, bucketed=True, batch_size=2)
    assert [b.num_tokens for b in bucketed] == [p.num_tokens for p in padded]  # input order kept
    for p, b in zip(padded, bucketed, strict=True):
        assert (p.features - b.features).abs().max() <= BUCKETED_TOLERANCE

    video, audio, _ = _expand(tiny_text, max_length, bucketed)
    expected_video, expected_audio, _ = pipeline_outputs
    assert (video - expected_video).abs().max() <= BUCKETED_TOLERANCE
    assert (audio - expected_audio).abs().max() <= BUCKETED_TOLERANCE


def test_in_bfloat16_bucketed_features_are_bit_identical_to_padded(tiny: ModelSource, max_length: int) -> None:
    models = dict(
        tokenizer=loading.load_tokenizer(tiny),
        text_encoder=loading.load_text_encoder(tiny, dtype=torch.bfloat16),
        connectors=loading.load_connectors(tiny, dtype=torch.bfloat16),
    )
    padded, bucketed = (
        encode_captions(
            CAPTIONS, max_length=max_length, device="cpu", dtype=torch.bfloat16, bucketed=b, batch_size=2, **models
        )
        for b in (False, True)
    )
    for p, b in zip(padded, bucketed, strict=True):
        assert torch.equal(p.features, b.features)


def test_features_are_returned_compact_on_the_cpu_in_the_dtype_asked(
    tiny_text: dict[str, Any], max_length: int
) -> None:
    cached = encode_captions(
        ["a cat"], max_length=max_length, device="cpu", dtype=torch.bfloat16, **tiny_text
    )
    assert cached[0].features.shape == (6, 32)  # <bos> + 5 characters, caption_channels wide
    assert cached[0].features.dtype == torch.bfloat16 and cached[0].features.device.type == "cpu"


def test_the_encoder_builds_no_kv_cache(tiny_text: dict[str, Any], max_length: int,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing is generated; on a GPU, Gemma-3's cache copies each sliding-window layer's window to the device, a host
    # sync per layer (half the encoder's samples on an H100, BENCHMARKS.md #18).
    from transformers import cache_utils

    built = []
    init = cache_utils.DynamicCache.__init__
    monkeypatch.setattr(cache_utils.DynamicCache, "__init__",
                        lambda self, *args, **kwargs: (built.append(self), init(self, *args, **kwargs))[1])
    _encode(tiny_text, max_length)
    assert built == []


def test_features_of_another_width_are_refused(tiny_text: dict[str, Any], max_length: int) -> None:
    with pytest.raises(ValueError, match="another model or max length"):
        _expand(tiny_text, max_length, [CaptionEmbedding(torch.zeros(4, 16))])


def test_a_token_budget_splits_batches_without_changing_the_features(tiny_text: dict[str, Any], max_length: int) -> None:
    from ltx2core.models.text import _batches

    # sorted lengths 3, 5, 9, 20 with at most 18 padded tokens a batch: 3 x 5 fits, adding 9 would make 27
    assert _batches([0, 1, 2, 3], [3, 5, 9, 20], batch_size=8, max_tokens=18) == [[0, 1], [2], [3]]
    budgeted = _encode(tiny_text, max_length, bucketed=True, batch_size=8, max_batch_tokens=16)
    for a, b in zip(_encode(tiny_text, max_length, bucketed=True, batch_size=8), budgeted, strict=True):
        assert (a.features - b.features).abs().max() <= BUCKETED_TOLERANCE


class _SmallCard(torch.nn.Module):
    """The tiny Gemma behind a card that holds at most `tokens` padded tokens a forward: above that it raises
    the error CUDA raises (no GPU here to fill)."""

    def __init__(self, text_encoder: Any, tokens: int) -> None:
        super().__init__()
        self.inner, self.tokens, self.batches = text_encoder.model, tokens, []

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        if input_ids.numel() > self.tokens:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate for {input_ids.shape}")
        self.batches.append(input_ids.shape[0])
        return self.inner(input_ids=input_ids, **kwargs)


def test_a_batch_that_runs_out_of_memory_is_halved_and_nothing_is_lost(tiny_text: dict[str, Any],
                                                                       max_length: int) -> None:
    reference = _encode(tiny_text, max_length, bucketed=True, batch_size=8)
    card = _SmallCard(tiny_text["text_encoder"], tokens=2 * max_length)
    halved = encode_captions(CAPTIONS, max_length=max_length, device="cpu", dtype=torch.float32,
                             **(tiny_text | {"text_encoder": card}), bucketed=True, batch_size=8)
    assert max(card.batches) <= 2 and sum(card.batches) == len(CAPTIONS)
    for a, b in zip(reference, halved, strict=True):
        assert (a.features - b.features).abs().max() <= BUCKETED_TOLERANCE

    with pytest.raises(torch.OutOfMemoryError):  # one caption that does not fit is the caller's to handle
        encode_captions(CAPTIONS[:1], max_length=max_length, device="cpu", dtype=torch.float32,
                        **(tiny_text | {"text_encoder": _SmallCard(tiny_text["text_encoder"], tokens=1)}))


def test_the_per_layer_norm_is_diffusers_own_in_its_layout_and_close_in_the_layer_major_one() -> None:
    """per_layer_norm == diffusers' per_layer_masked_mean_norm to the bit on [B, L, hidden, layers]; on
    [B, L, layers, hidden] + text_proj_in with its columns reordered (the CUDA path) within float rounding."""
    from diffusers.pipelines.ltx2.connectors import per_layer_masked_mean_norm

    from ltx2core.models.text import NORM_SCALE, _layer_major, per_layer_norm

    generator = torch.Generator().manual_seed(0)
    batch, length, hidden, layers = 3, 12, 16, 5
    layer_minor = torch.randn(batch, length, hidden, layers, generator=generator) * torch.arange(1, layers + 1)
    lengths = torch.tensor([12, 7, 1])
    expected = per_layer_masked_mean_norm(layer_minor, lengths, "cpu", padding_side="left", scale_factor=NORM_SCALE)
    assert torch.equal(per_layer_norm(layer_minor, lengths, hidden_dim=2), expected)

    ours = per_layer_norm(layer_minor.permute(0, 1, 3, 2).contiguous(), lengths, hidden_dim=3)
    assert ours.shape == expected.shape == (batch, length, hidden * layers)
    assert torch.equal(ours[1, :5], torch.zeros(5, hidden * layers))  # padding rows are 0
    reordered = ours.view(batch, length, layers, hidden).transpose(2, 3).reshape(batch, length, -1)
    assert (reordered - expected).abs().max() <= 1e-6
    weight = torch.randn(8, hidden * layers, generator=generator)
    projected = torch.nn.functional.linear(ours, _layer_major(weight, layers))
    assert (projected - torch.nn.functional.linear(expected, weight)).abs().max() <= 1e-5


def test_chunks_of_rows_and_the_layer_major_path_give_the_features_of_one_pass(
    tiny_text: dict[str, Any], max_length: int
) -> None:
    from ltx2core.models.text import _project

    tokens = tiny_text["tokenizer"](CAPTIONS, truncation=True, max_length=max_length)["input_ids"]
    pad = tiny_text["tokenizer"].pad_token_id
    args = (tokens, max_length, max_length, pad, tiny_text["text_encoder"], tiny_text["connectors"], "cpu")
    whole = _project(*args, norm_tokens=10**9)
    for a, b in zip(whole, _project(*args, norm_tokens=1), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(whole, _project(*args, layer_major=True), strict=True):  # what CUDA runs
        assert (a - b).abs().max() <= BUCKETED_TOLERANCE
