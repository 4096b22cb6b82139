"""Bounded-memory runs of the LTX-2 video VAE that give the same numbers as a plain run.

Two reversible patches of the VAE's `LTX2VideoCausalConv3d` modules, installed for the duration of a
`with` block (diffusers 0.42.1 has neither):

* chunked convolution (`vae_enable_patch_conv`): each conv runs over `chunk_frames` output frames at a
  time, each chunk reading its kernel-minus-one frames of overlap, so no conv call sees the whole clip.
  Every output frame is computed from exactly the frames it uses in one call: the same arithmetic.
* causal streaming (`vae_enable_temporal_roll`): the causal encoder is fed the first frame, then blocks of
  frames, and every conv keeps the last kernel-minus-one input frames of the previous block as its left
  context (a causal cache) instead of replicating the block's first frame. The temporal downsamplers add
  their first-frame padding only on the first block. The encoder has no other cross-frame operation (its
  norms are per position), so the whole encode streams exactly; activations scale with the block length
  instead of the clip length. The decoder of LTX-2.0 is not causal, so this applies to encoding only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_kl_ltx2 import LTX2VideoCausalConv3d, LTX2VideoDownsampler3d
from torch import nn

Forward = Callable[..., torch.Tensor]


@contextmanager
def patched_causal_convs(root: nn.Module, *, chunk_frames: int | None = None, stream: bool = False) -> Iterator[None]:
    """Within the block, the causal convs under `root` run time-chunked (`chunk_frames`) and/or streaming.

    With `stream`, call `root` (the VAE encoder) on frame 0 first, then on consecutive blocks of frames
    that are multiples of the temporal compression, and concatenate the outputs along time. Leaving the
    block restores the modules and forgets the cache.
    """
    if chunk_frames is not None and chunk_frames < 1:
        raise ValueError(f"chunk_frames {chunk_frames} must be at least 1")
    patches: dict[nn.Module, Forward] = {}
    for module in root.modules():
        if isinstance(module, LTX2VideoCausalConv3d):
            patches[module] = _conv_forward(module, chunk_frames, stream)
        elif stream and isinstance(module, LTX2VideoDownsampler3d):
            patches[module] = _streaming_downsampler_forward(module)
    previous = {module: module.__dict__.get("forward") for module in patches}
    try:
        for module, forward in patches.items():
            module.forward = forward  # an instance attribute shadows the class's forward
        yield
    finally:
        for module, forward in previous.items():
            if forward is None:
                del module.forward
            else:
                module.forward = forward


def _conv_forward(module: LTX2VideoCausalConv3d, chunk_frames: int | None, stream: bool) -> Forward:
    conv = module.conv
    context = module.kernel_size[0] - 1  # frames of left context a causal output frame reads
    if stream and (conv.stride[0] != 1 or conv.dilation[0] != 1):
        raise ValueError(
            "vae_enable_temporal_roll streams convs of temporal stride and dilation 1 only; this VAE has "
            f"{conv.stride[0]}/{conv.dilation[0]}: use vae_enable_patch_conv instead"
        )
    cache: list[torch.Tensor] = []  # the previous block's last `context` input frames, when streaming

    def forward(hidden_states: torch.Tensor, causal: bool = True) -> torch.Tensor:
        if stream:
            if not causal:
                raise ValueError("temporal_roll needs a causal encoder (encoder_causal: true in vae/config.json)")
            left = cache.pop() if cache else _repeat_frame(hidden_states, 0, context)
            padded = torch.cat([left, hidden_states], dim=2)
            # A copy: a view would keep this block's whole padded input alive until the next block.
            cache.append(padded[:, :, padded.shape[2] - context :].clone())
        elif causal:  # as LTX2VideoCausalConv3d: replicate the first frame on the left
            padded = torch.cat([_repeat_frame(hidden_states, 0, context), hidden_states], dim=2)
        else:  # non-causal (the decoder): replicate both ends
            half = context // 2
            edges = (_repeat_frame(hidden_states, 0, half), _repeat_frame(hidden_states, -1, half))
            padded = torch.cat([edges[0], hidden_states, edges[1]], dim=2)
        return _time_chunked(conv, padded, chunk_frames) if chunk_frames else conv(padded)

    return forward


def _repeat_frame(hidden_states: torch.Tensor, index: int, count: int) -> torch.Tensor:
    frame = hidden_states[:, :, :1] if index == 0 else hidden_states[:, :, -1:]
    return frame.repeat(1, 1, count, 1, 1)


def _time_chunked(conv: nn.Conv3d, padded: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """`conv(padded)` computed `chunk_frames` output frames at a time (no padding in time inside `conv`)."""
    stride, extent = conv.stride[0], conv.dilation[0] * (conv.kernel_size[0] - 1) + 1
    total = (padded.shape[2] - extent) // stride + 1
    if total <= chunk_frames:
        return conv(padded)
    first = conv(padded[:, :, : (chunk_frames - 1) * stride + extent])
    output = first.new_empty(*first.shape[:2], total, *first.shape[3:])
    output[:, :, :chunk_frames] = first
    for start in range(chunk_frames, total, chunk_frames):
        stop = min(start + chunk_frames, total)
        output[:, :, start:stop] = conv(padded[:, :, start * stride : (stop - 1) * stride + extent])
    return output


def _streaming_downsampler_forward(module: LTX2VideoDownsampler3d) -> Forward:
    """LTX2VideoDownsampler3d.forward, but only the first block gets the first-frame padding."""
    started: list[bool] = []

    def forward(hidden_states: torch.Tensor, causal: bool = True) -> torch.Tensor:
        if not started:
            hidden_states = torch.cat([hidden_states[:, :, : module.stride[0] - 1], hidden_states], dim=2)
            started.append(True)
        residual = _space_to_depth(hidden_states, module.stride).unflatten(1, (-1, module.group_size)).mean(dim=2)
        return _space_to_depth(module.conv(hidden_states, causal=causal), module.stride) + residual

    return forward


def _space_to_depth(hidden_states: torch.Tensor, stride: Any) -> torch.Tensor:
    # The channel order of LTX2VideoDownsampler3d: (channel, t-offset, h-offset, w-offset).
    folded = hidden_states.unflatten(4, (-1, stride[2])).unflatten(3, (-1, stride[1])).unflatten(2, (-1, stride[0]))
    return folded.permute(0, 1, 3, 5, 7, 2, 4, 6).flatten(1, 4)
