"""The full-size configs build the models the releases ship: parameter counts on the meta device (no memory)."""

from __future__ import annotations

import pytest

from ltx2core.models import full_size

# Counted by the research (../shared/research/ltx2_flavours.md, section 2) and by bench/train_bench.py on the GPU.
TRANSFORMER_PARAMETERS = {"2.0": 18_876_174_592, "2.3": 18_988_838_144, "2.5": 18_987_859_200}


def _parameters(cls, config: dict) -> int:
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls.from_config(config) if hasattr(cls, "from_config") else cls(**config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("flavour", ["2.0", "2.3", "2.5", "2.5-distilled"])
def test_the_full_size_transformer_has_the_release_s_parameter_count(flavour: str) -> None:
    from diffusers import LTX2VideoTransformer3DModel

    release = flavour.split("-")[0]
    assert _parameters(LTX2VideoTransformer3DModel, full_size.transformer(flavour)) == TRANSFORMER_PARAMETERS[release]


@pytest.mark.parametrize(("flavour", "billions"), [("2.0", 1.43), ("2.3", 3.17)])
def test_the_full_size_connectors_have_the_release_s_parameter_count(flavour: str, billions: float) -> None:
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    count = _parameters(LTX2TextConnectors, full_size.connectors(flavour))
    assert round(count / 1e9, 2) == billions
