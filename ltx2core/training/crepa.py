"""CREPA: align the transformer's video hidden states with a frozen vision encoder's features of the clean frames.

The video hidden states after block `block_index` ([B, F*H*W, D], frame-major) go through a trainable
projector (LayerNorm -> Linear to the encoder's width). Per latent frame t and patch p, the cosine
similarity with the encoder feature of the same patch is taken in frame t itself and in the frames at
exactly `adjacent_distance` d before and after (those that exist), the neighbours weighted exp(-d/tau):

    score(t) = mean_p cos(z[t,p], f[t,p]) + exp(-d/tau) * sum_{s = t +- d} mean_p cos(z[t,p], f[s,p])
    loss = -weight * mean over clips and frames of score(t)

(distance 0: the frame itself only). The features of a latent frame are the encoder's patch tokens of one
pixel frame, the last one the latent frame covers (pixel frame 0 for latent frame 0, which covers it
alone), resized to `image_size`, ImageNet-normalised, then interpolated from the encoder's patch grid to
the latent grid so that patch p is the same place in both.

Where the clean frames come from, a choice: they are DECODED FROM THE CLEAN LATENTS WITH THE VAE AT
TRAIN TIME (`Crepa.loss`), as SimpleTuner does. It needs no new stage or table and stays correct whatever
the cache holds (a changed latent cache cannot leave stale features behind); the price is one VAE decode
plus one encoder pass per step (for a 121x768x512 clip: the decode, then dinov2_vitg14 on 16 images of
518x518). The cheaper alternative is a cache stage that runs `crepa_features` on the original frames once
per clip and stores its output (bf16, latent grid: 16 x 384 x 1536 x 2 B = 19 MB per such clip with vitg14,
4.7 MB with vits14); `crepa_features` takes any [-1, 1] frames, so that stage would reuse it unchanged and
`CrepaRegularizer.loss` would take the stored features. Decoded frames are the VAE's reconstruction, close
to but not the original pixels; the encoder is frozen and the target only has to be stable, so this does
not bias the LoRA towards anything but the clip.

The encoder is DINOv2 loaded from a local torch hub copy (no network here): `load_dinov2`. Any module
with DINOv2's interface (`patch_size`, `embed_dim`, `forward_features(x)["x_norm_patchtokens"]`) can be
passed instead (tests use a tiny random one).

The projector is trained with the LoRA (put `Crepa.regularizer.parameters()` in the optimizer) and its
`state_dict()` is training state: it belongs in the checkpoint for resume, not in the LoRA files users
load (the pipeline never runs it).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ltx2core.models.scale import LTX2
from ltx2core.models.vae import decode_video
from ltx2core.models.vae_options import VaeOptions

log = logging.getLogger(__name__)

# torch hub entry point -> the weights file its hubconf downloads into <hub dir>/checkpoints
DINOV2_WEIGHTS = {
    f"dinov2_{arch}14{suffix}": f"dinov2_{arch}14{suffix.replace('_reg', '_reg4')}_pretrain.pth"
    for arch in ("vits", "vitb", "vitl", "vitg") for suffix in ("", "_reg")
}
DINOV2_REPO = "facebookresearch_dinov2_main"  # the folder torch.hub.load("facebookresearch/dinov2", ...) fills
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CrepaSettings:
    block_index: int = 8  # crepa_block_index: the block whose output is aligned
    weight: float = 0.5  # crepa_lambda
    adjacent_distance: int = 1  # crepa_adjacent_distance d (0 = own frame only)
    adjacent_tau: float = 1.0  # crepa_adjacent_tau: neighbours weigh exp(-d/tau)
    image_size: int = 518  # crepa_encoder_image_size: square encoder input, a multiple of its patch

    def __post_init__(self) -> None:
        problems = []
        if self.block_index < 0:
            problems.append(f"crepa_block_index {self.block_index} must be 0 or more")
        if self.weight < 0:
            problems.append(f"crepa_lambda {self.weight} must be 0 or more")
        if self.adjacent_distance < 0:
            problems.append(f"crepa_adjacent_distance {self.adjacent_distance} must be 0 or more")
        if self.adjacent_tau <= 0:
            problems.append(f"crepa_adjacent_tau {self.adjacent_tau} must be positive")
        if self.image_size < 1:
            problems.append(f"crepa_encoder_image_size {self.image_size} must be positive")
        if problems:
            raise ValueError("; ".join(problems))


def temporal_weights(frames: int, distance: int, tau: float) -> torch.Tensor:
    """[F, F]: 1 on the diagonal, exp(-d/tau) at |t - s| = d (d > 0), 0 elsewhere."""
    t = torch.arange(frames)
    gap = (t[:, None] - t[None, :]).abs()
    weights = (gap == 0).float()
    if distance > 0:
        weights += (gap == distance).float() * math.exp(-distance / tau)
    return weights


def crepa_loss(
    projected: torch.Tensor, features: torch.Tensor, *, weight: float, distance: int, tau: float
) -> torch.Tensor:
    """-weight * mean_{clips, frames} score(t) (module docstring). projected, features: [B, F, P, E] -> []."""
    z = F.normalize(projected.float(), dim=-1)
    f = F.normalize(features.float(), dim=-1)
    similarity = torch.einsum("btpe,bspe->bts", z, f) / z.shape[2]  # [B, F, F]: mean_p cos(z[t,p], f[s,p])
    weights = temporal_weights(z.shape[1], distance, tau).to(similarity.device)
    score = (similarity * weights).sum(dim=-1)  # [B, F]
    return -weight * score.mean()


class CrepaRegularizer(nn.Module):
    """The trainable projector and the loss. Its state_dict is the projector's weights (checkpoint them)."""

    def __init__(self, settings: CrepaSettings, *, hidden_dim: int, encoder_dim: int, seed: int) -> None:
        super().__init__()
        self.settings = settings
        with torch.random.fork_rng(devices=[]):  # the same projector for the same seed, RNG left alone
            torch.manual_seed(seed)
            self.projector = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, encoder_dim))

    def loss(self, hidden_states: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """hidden_states [B, F*P, D] frame-major, features [B, F, P, E] -> the weighted CREPA loss []."""
        batch, frames, patches = features.shape[:3]
        if hidden_states.shape[:2] != (batch, frames * patches):
            raise ValueError(
                f"hidden states {tuple(hidden_states.shape)} at block {self.settings.block_index} do not hold the "
                f"{frames}x{patches} video tokens of the features: is crepa_block_index inside a TREAD route? "
                "Move it before start_layer_idx or after end_layer_idx"
            )
        projected = self.projector(hidden_states).view(batch, frames, patches, -1)
        settings = self.settings
        return crepa_loss(projected, features, weight=settings.weight, distance=settings.adjacent_distance,
                          tau=settings.adjacent_tau)


@torch.no_grad()
def crepa_features(
    encoder: nn.Module, frames: torch.Tensor, *, latent_grid: tuple[int, int, int], image_size: int
) -> torch.Tensor:
    """Pixel frames [B, 3, F_pix, H, W] in [-1, 1] -> encoder patch features on the latent grid [B, F, H'*W', E].

    `latent_grid` is (F, H', W') of the clip's latents; F_pix must be the frame count they decode to.
    """
    latent_frames, height, width = latent_grid
    batch, _, pixel_frames = frames.shape[:3]
    if LTX2.latent_frames(pixel_frames) != latent_frames:
        raise ValueError(f"{pixel_frames} pixel frames do not make {latent_frames} latent frames")
    patch = int(encoder.patch_size)
    if image_size % patch:
        below = max(patch, image_size // patch * patch)
        raise ValueError(f"crepa_encoder_image_size {image_size} is not a multiple of the encoder's patch size "
                         f"{patch}: use {below} or {below + patch}")
    picked = frames[:, :, [k * LTX2.temporal for k in range(latent_frames)]]  # last pixel frame of each
    images = picked.transpose(1, 2).flatten(0, 1).float()  # [B*F, 3, H, W]
    images = F.interpolate((images + 1) / 2, size=(image_size, image_size), mode="bilinear", antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    reference = next(encoder.parameters())
    tokens = encoder.forward_features(((images - mean) / std).to(reference))["x_norm_patchtokens"]  # [B*F, g*g, E]
    grid = image_size // patch
    tokens = tokens.float().transpose(1, 2).reshape(tokens.shape[0], -1, grid, grid)
    pooled = F.interpolate(tokens, size=(height, width), mode="bilinear", antialias=True)  # [B*F, E, H', W']
    return pooled.flatten(2).transpose(1, 2).reshape(batch, latent_frames, height * width, -1)


def load_dinov2(name: str, *, repo: Path | None = None, weights: Path | None = None) -> nn.Module:
    """A frozen DINOv2 from local files: its code (a dinov2 checkout with hubconf.py) and its weights file.

    Defaults are where `torch.hub.load("facebookresearch/dinov2", name)` leaves them:
    <torch hub dir>/facebookresearch_dinov2_main and <torch hub dir>/checkpoints/<name>_pretrain.pth.
    Raises FileNotFoundError saying where it looked and how to bring the files here.
    """
    if name not in DINOV2_WEIGHTS:
        raise ValueError(f"crepa_encoder {name!r} is not supported: use one of {', '.join(DINOV2_WEIGHTS)}")
    hub = Path(torch.hub.get_dir())
    repo = Path(repo) if repo is not None else hub / DINOV2_REPO
    weights = Path(weights) if weights is not None else hub / "checkpoints" / DINOV2_WEIGHTS[name]
    code_ok, weights_ok = (repo / "hubconf.py").is_file(), weights.is_file()
    if not (code_ok and weights_ok):
        raise FileNotFoundError(
            f"CREPA needs the vision encoder {name} (crepa_encoder) and this machine cannot download it. Looked for "
            f"its code at {repo / 'hubconf.py'} ({'found' if code_ok else 'MISSING'}) and its weights at {weights} "
            f"({'found' if weights_ok else 'MISSING'}). On a machine with network run "
            f"`python -c \"import torch; torch.hub.load('facebookresearch/dinov2', '{name}')\"`, then copy its "
            f"torch hub folder (`python -c \"import torch; print(torch.hub.get_dir())\"`: {DINOV2_REPO}/ and "
            f"checkpoints/{DINOV2_WEIGHTS[name]}) to {hub} here, or set TORCH_HOME to a folder whose hub/ holds "
            "them; or set crepa_enabled to false"
        )
    model = torch.hub.load(str(repo), name, source="local", pretrained=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    log.info("CREPA encoder %s from %s, weights %s", name, repo, weights)
    return model.eval().requires_grad_(False)


class Crepa:
    """CREPA wired to one transformer: captures block `block_index`'s output during each training forward;
    `loss(latents)` then returns the weighted CREPA loss of that forward (add it to the step's loss).

    Captures only inside a top-level forward in train mode with grad enabled, so validation and the block
    recomputation of gradient checkpointing leave nothing behind. `remove()` takes the hooks off.
    """

    def __init__(
        self,
        transformer: Any,
        *,
        encoder: nn.Module,
        vae: Any,
        settings: CrepaSettings,
        seed: int,
        vae_options: VaeOptions = VaeOptions(),
    ) -> None:
        blocks = transformer.transformer_blocks
        if settings.block_index >= len(blocks):
            raise ValueError(f"crepa_block_index {settings.block_index} is past the transformer's {len(blocks)} "
                             f"blocks: use 0..{len(blocks) - 1}")
        config = transformer.config
        self.regularizer = CrepaRegularizer(
            settings, hidden_dim=config.num_attention_heads * config.attention_head_dim,
            encoder_dim=int(encoder.embed_dim), seed=seed,
        ).to(next(transformer.parameters()).device)
        self.encoder, self.vae, self.vae_options = encoder, vae, vae_options
        self._capturing = False
        self._hidden: torch.Tensor | None = None
        self._handles = [
            transformer.register_forward_pre_hook(self._start),
            transformer.register_forward_hook(self._stop),
            blocks[settings.block_index].register_forward_hook(self._capture),
        ]

    def loss(self, latents: torch.Tensor) -> torch.Tensor:
        """Clean latents [B, C, F, H, W] of the batch just forwarded -> the weighted CREPA loss [] (with grad)."""
        hidden, self._hidden = self._hidden, None
        if hidden is None:
            raise RuntimeError("Crepa.loss needs a training forward of the transformer first (train mode, grad on)")
        frames = decode_video(self.vae, latents, options=self.vae_options)  # [B, 3, F_pix, H, W]
        features = crepa_features(self.encoder, frames, latent_grid=tuple(latents.shape[2:]),
                                  image_size=self.regularizer.settings.image_size)
        return self.regularizer.loss(hidden, features.to(hidden.device))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._hidden = None

    def _start(self, transformer: Any, args: tuple[Any, ...]) -> None:
        self._capturing = transformer.training and torch.is_grad_enabled()
        self._hidden = None

    def _stop(self, transformer: Any, args: tuple[Any, ...], output: Any) -> None:
        self._capturing = False

    def _capture(self, block: Any, args: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        if self._capturing:
            self._hidden = output[0]
