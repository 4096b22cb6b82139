"""Prefect flows that compose stages, and the `ltx2` command line."""

import logging

# torchao (imported by peft and diffusers when installed) warns at import that its CUDA kernels do not load on a
# CPU build of torch, torch that torchao registers enums the old way, and diffusers that torchao renamed classes
# diffusers' own torchao loader looks for (not a path we use): lines of noise before every run.
for _noisy in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)
