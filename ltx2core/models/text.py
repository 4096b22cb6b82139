"""Caption embeddings: Gemma features cached compactly, expanded for the transformer at train time.

What LTX2Pipeline does with a prompt (diffusers 0.42.1, `_get_gemma_prompt_embeds` + `LTX2TextConnectors`):
  tokens, LEFT-padded to 1024  ->  Gemma: all 49 hidden states stacked      [B, 1024, 3840, 49]
  2.0:  per-layer masked mean/range norm (padding rows 0)  ->  text_proj_in (Linear 188160 -> 3840, no bias),
        the same rows for video and audio
  2.3+: per-token RMS norm of each layer (padding rows 0)  ->  video_text_proj_in (-> 4096) and
        audio_text_proj_in (-> 2048), each with a bias and its own scale
  ->  video and audio connector transformers (padding slots replaced by learned registers)  ->  the DiT.
Both norms read only a caption's own real tokens, and the projections map the zeroed padding rows to their
bias, so the projections' output on the real tokens is all a caption contributes. That is what we cache, per
caption: (num_tokens, 3840) for 2.0, (num_tokens, 4096 + 2048) for 2.3+ (video then audio, as Lightricks'
trainer caches them); 200 tokens of 2.0 in bf16 = 1.5 MB, against 75 MB for the raw stack of the same tokens
and 15.7 MB for the padded connector outputs. At train time `expand_for_transformer` puts the rows back
LEFT-padded with the bias and runs the two connector transformers; tests/ltx2core/models prove it matches
LTX2Pipeline.encode_prompt + connectors on the tiny model of each release.

Nothing is shared between releases: 2.3's rows are normed and projected otherwise than 2.0's, 2.5's come from
another text encoder (the cache keys carry the release: ltx2core/keys.py). Caching before the connector
transformers keeps connector LoRAs possible, but not LoRAs on the projections.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

NORM_SCALE = 8  # LTX2Pipeline's scale_factor for the per-layer norm
PAD_MULTIPLE = 8  # bucketed batches are padded to a multiple of this many tokens
ENCODE_BATCH = 64  # what the text-embeds stage asks: 64 captions of ~200 tokens: 65 captions/s on an H100 ...
ENCODE_TOKENS = 64 * 256  # ... and no more padded tokens than that a batch (BENCHMARKS.md)
NORM_TOKENS = 2048  # padded tokens per chunk of the per-layer norm: ~0.8 GiB of stacked Gemma-3-12B layers


@dataclass(frozen=True)
class CaptionEmbedding:
    features: torch.Tensor  # [num_tokens, channels]: the text projections' output on the real tokens, in order

    @property
    def num_tokens(self) -> int:
        return int(self.features.shape[0])


def encode_captions(
    captions: Sequence[str],
    *,
    tokenizer: Any,
    text_encoder: Any,
    connectors: Any,
    max_length: int,
    device: torch.device | str,
    dtype: torch.dtype,
    batch_size: int = 8,
    bucketed: bool = True,
    max_batch_tokens: int | None = None,
) -> list[CaptionEmbedding]:
    """Encode captions to compact features (on the CPU, in `dtype`), in the order given.

    Captions are truncated to `max_length` tokens, as the pipeline does. `bucketed` sorts captions by length
    and pads each batch only to its longest caption (rounded up to PAD_MULTIPLE) instead of `max_length`:
    Gemma is causal and the padding is masked, and every real token is given the RoPE position it has in
    the `max_length` layout, so the features match the padded path to float rounding (tested).
    `max_batch_tokens` also caps batch size x longest caption, which is what the stacked hidden states'
    memory follows (64 captions of ~200 tokens peaked at 43 GiB above Gemma-3-12B's weights on an H200).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} must be at least 1")
    token_ids = tokenizer(
        [caption.strip() for caption in captions], truncation=True, max_length=max_length, add_special_tokens=True
    )["input_ids"]
    # The pad id only fills masked slots; LTX2Pipeline falls back to <eos> when a tokenizer has none.
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(captions)), key=lambda i: len(token_ids[i])) if bucketed else list(range(len(captions)))
    results: dict[int, CaptionEmbedding] = {}
    pending = _batches(order, [len(t) for t in token_ids], batch_size, max_batch_tokens)
    while pending:
        batch = pending.pop(0)
        longest = max(len(token_ids[i]) for i in batch)
        length = min(max_length, -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE) if bucketed else max_length
        try:
            features = _project(
                [token_ids[i] for i in batch], length, max_length, pad_id, text_encoder, connectors, device
            )
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            # Halve it and go on: the batch is encoded, in two, and later batches keep to the size that fit
            # (an 80 GB card ran out at 64 captions of ~200 tokens when its memory was fragmented).
            _free_cuda(device)
            half = len(batch) // 2
            batch_size = min(batch_size, half)
            log.warning("text encoder out of memory on %d captions of %d tokens: halving the batch to %d",
                        len(batch), length, half)
            pending[:0] = [batch[:half], batch[half:]]
            pending = _batches([i for b in pending for i in b], [len(t) for t in token_ids], batch_size,
                               max_batch_tokens)
            continue
        # One copy to the host a batch: a copy per caption is a wait for the GPU per caption (9% of the encoder's
        # py-spy samples in the stage on an H100), each a chance for another thread to take the GIL.
        host = torch.cat(features).to("cpu", dtype).split([len(rows) for rows in features])
        for i, rows in zip(batch, host, strict=True):
            results[i] = CaptionEmbedding(rows)
    return [results[i] for i in range(len(captions))]


def _free_cuda(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _batches(order: list[int], lengths: list[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Consecutive runs of `order`, at most `batch_size` long and, when `max_tokens` is set, at most that many
    padded tokens (batch size x longest caption): memory follows tokens, so short captions go in big batches."""
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        if batch is not None and len(batch) < batch_size and (
            max_tokens is None or (len(batch) + 1) * max(lengths[j] for j in [*batch, i]) <= max_tokens
        ):
            batch.append(i)
        else:
            batches.append([i])
    return batches


@torch.no_grad()
def _project(
    token_ids: list[list[int]], length: int, max_length: int, pad_id: int, text_encoder: Any, connectors: Any,
    device: torch.device | str, norm_tokens: int = NORM_TOKENS, layer_major: bool | None = None,
) -> list[torch.Tensor]:
    """Gemma -> stacked hidden states -> per-layer norm -> text_proj_in, for one left-padded batch; the norm and
    the projection take `norm_tokens` padded tokens' worth of captions at a time.

    `layer_major` (default: on CUDA) stacks the layers [rows, L, layers, hidden], a plain copy of each layer,
    and reorders text_proj_in's columns to match: the same products summed in another order, so features
    differ from the pipeline's by float rounding. diffusers' layer-minor stack [rows, L, hidden, layers] is a
    strided write that took 60 % of the norm's time on an H100; on the CPU it is kept, and features equal the
    pipeline's to the bit."""
    lengths = torch.tensor([len(ids) for ids in token_ids], device=device)
    input_ids = torch.full((len(token_ids), length), pad_id, dtype=torch.long, device=device)
    for row, ids in enumerate(token_ids):
        if ids:
            input_ids[row, length - len(ids) :] = torch.tensor(ids, device=device)
    attention_mask = (torch.arange(length, device=device) >= length - lengths[:, None]).long()
    # Real tokens keep the positions they have when padded to max_length, so RoPE sees the same angles.
    position_ids = (torch.arange(length, device=device) + (max_length - length)).expand(len(token_ids), -1)
    # The bare Gemma3Model: the pipeline's full model also computes 262k-vocabulary logits it throws away. No KV
    # cache: nothing is generated, and building one copies each sliding-window layer's window to the GPU, a host
    # sync per layer that took half the encoder's samples on an H100 (py-spy, BENCHMARKS.md #18).
    language_model = getattr(text_encoder, "model", text_encoder)
    hidden_states = language_model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, output_hidden_states=True,
        use_cache=False,
    ).hidden_states
    if layer_major is None:
        layer_major = torch.device(device).type == "cuda"
    projections = _projections(connectors)
    weights = [_layer_major(w, len(hidden_states)) if layer_major else w for w, _, _ in projections]
    # The norm is per caption, so a few rows at a time give the same features: its float32 temporaries are
    # ~6 copies of the stack, 30 GiB for 64 captions of 200 tokens at once.
    rows_per_chunk = max(1, norm_tokens // length)
    features = []
    for start in range(0, len(token_ids), rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        stacked = torch.stack([h[rows] for h in hidden_states], dim=2 if layer_major else 3).to(weights[0].dtype)
        hidden_dim = 3 if layer_major else 2
        if connectors.config.per_modality_projections:
            normed = per_token_norm(stacked, lengths[rows], hidden_dim=hidden_dim)
        else:
            normed = per_layer_norm(stacked, lengths[rows], hidden_dim=hidden_dim)
        del stacked
        projected = torch.cat([torch.nn.functional.linear(normed * scale if scale != 1 else normed, weight, bias)
                               for weight, (_, bias, scale) in zip(weights, projections, strict=True)], dim=-1)
        # The lengths from the host's lists: reading them off the device would wait for the GPU each chunk.
        features += [projected[row, length - len(ids) :] for row, ids in enumerate(token_ids[rows])]
    return features


def _layer_major(weight: torch.Tensor, layers: int) -> torch.Tensor:
    """text_proj_in's weight [out, hidden * layers] (input index hidden_i * layers + layer) reordered to
    [out, layers * hidden] (input index layer * hidden + hidden_i)."""
    out, width = weight.shape
    return weight.view(out, width // layers, layers).transpose(1, 2).reshape(out, width)


def _projections(connectors: Any) -> list[tuple[torch.Tensor, torch.Tensor | None, float]]:
    """(weight, bias, input scale) of each text projection: 2.0's shared text_proj_in, or 2.3+'s video then audio
    projections, each fed the normed states times sqrt(its width / Gemma's), as LTX2TextConnectors does."""
    if not connectors.config.per_modality_projections:
        return [(connectors.text_proj_in.weight, connectors.text_proj_in.bias, 1.0)]
    hidden = connectors.config.caption_channels
    return [(layer.weight, layer.bias, math.sqrt(layer.out_features / hidden))
            for layer in (connectors.video_text_proj_in, connectors.audio_text_proj_in)]


def projection_widths(connectors: Any) -> list[int]:
    """Channels of each part of a cached caption feature: [3840] for 2.0, [video 4096, audio 2048] for 2.3+."""
    return [weight.shape[0] for weight, _, _ in _projections(connectors)]


def per_token_norm(stacked: torch.Tensor, lengths: torch.Tensor, hidden_dim: int, eps: float = 1e-6) -> torch.Tensor:
    """LTX-2.3's per-token RMS norm of each layer's hidden state (`per_token_rms_norm`, in the states' dtype) of
    LEFT-padded states stacked as for `per_layer_norm` -> [B, L, hidden * layers], padding rows 0."""
    length = stacked.shape[1]
    mask = torch.arange(length, device=stacked.device) >= length - lengths[:, None]  # [B, L]
    normed = stacked * torch.rsqrt(torch.mean(stacked**2, dim=hidden_dim, keepdim=True) + eps)
    return torch.where(mask[..., None], normed.flatten(2), torch.zeros((), dtype=normed.dtype, device=normed.device))


def per_layer_norm(stacked: torch.Tensor, lengths: torch.Tensor, hidden_dim: int, eps: float = 1e-6) -> torch.Tensor:
    """LTX-2's per-layer masked mean/range norm of LEFT-padded hidden states stacked [B, L, hidden, layers]
    (`hidden_dim` 2, as diffusers) or [B, L, layers, hidden] (3) -> [B, L, hidden * layers] in the same order,
    padding rows 0: diffusers' `per_layer_masked_mean_norm`, its float32 promotion included (tested against it:
    equal to the bit in its layout)."""
    batch, length = stacked.shape[:2]
    mask = (torch.arange(length, device=stacked.device) >= length - lengths[:, None])[:, :, None, None]
    valid = (lengths * stacked.shape[hidden_dim]).view(batch, 1, 1, 1)
    over = (1, hidden_dim)
    mean = stacked.masked_fill(~mask, 0.0).sum(dim=over, keepdim=True) / (valid + eps)
    low = stacked.masked_fill(~mask, float("inf")).amin(dim=over, keepdim=True)
    high = stacked.masked_fill(~mask, float("-inf")).amax(dim=over, keepdim=True)
    normed = (stacked - mean) / (high - low + eps) * NORM_SCALE
    return normed.flatten(2).masked_fill(~mask[..., 0], 0.0).to(stacked.dtype)


def expand_for_transformer(
    features_list: Sequence[torch.Tensor | CaptionEmbedding],
    *,
    max_length: int,
    connectors: Any,
    device: torch.device | str,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cached features -> (video_embeds [B, L, C], audio_embeds [B, L, C], attention_mask [B, L]), L = max_length.

    Exactly what `LTX2TextConnectors.forward` returns for the pipeline's padded prompt embeddings: the
    transformer's `encoder_hidden_states`, `audio_encoder_hidden_states` and `encoder_attention_mask`.
    Runs with autograd as the caller has it, so connector LoRAs can train through it.
    """
    rows = [f.features if isinstance(f, CaptionEmbedding) else f for f in features_list]
    projections = _projections(connectors)
    widths = projection_widths(connectors)
    # The pipeline's padding rows are each projection of 0: its bias.
    padded = torch.cat([(bias.to(device, dtype) if bias is not None else torch.zeros(width, device=device, dtype=dtype))
                        .expand(len(rows), max_length, width) for width, (_, bias, _) in zip(widths, projections)],
                       dim=-1).clone()
    mask = torch.zeros(len(rows), max_length, dtype=torch.long, device=device)
    for b, features in enumerate(rows):
        count, channels = features.shape
        if channels != sum(widths) or count > max_length:
            raise ValueError(
                f"caption {b}: cached features are {count}x{channels}, the connectors take at most "
                f"{max_length}x{sum(widths)}: the text embeddings were made with another model or max length"
            )
        if count:
            padded[b, max_length - count :] = features.to(device, dtype)
            mask[b, max_length - count :] = 1
    video_in, audio_in = (padded, padded) if len(widths) == 1 else padded.split(widths, dim=-1)

    # From here on, LTX2TextConnectors.forward after its text_proj_in.
    additive_mask = ((mask - 1).to(dtype) * torch.finfo(dtype).max).reshape(len(rows), 1, 1, max_length)
    video, video_mask = connectors.video_connector(video_in, additive_mask)
    # With learned registers every slot is filled, so the returned mask is all ones (as in the pipeline).
    keep = (video_mask < 1e-6).to(torch.long).reshape(len(rows), max_length, 1)
    video = video * keep
    audio, _ = connectors.audio_connector(audio_in, additive_mask)
    return video, audio, keep.squeeze(-1)

