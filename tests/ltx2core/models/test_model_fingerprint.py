"""Component fingerprints: the same in every process and folder, different when a config or weight changes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ltx2core.models.fingerprint import component_fingerprint
from ltx2core.models.source import COMPONENTS, ModelSource, resolve_source

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def tiny_copy(tiny: ModelSource, tmp_path: Path) -> ModelSource:
    shutil.copytree(tiny.name_or_path, tmp_path / "model")
    return resolve_source(str(tmp_path / "model"))


def test_fingerprints_match_in_another_process_and_another_folder(tiny: ModelSource, tiny_copy: ModelSource) -> None:
    here = {c: component_fingerprint(tiny, c) for c in COMPONENTS}
    script = (
        "import json, sys; from ltx2core.models.fingerprint import component_fingerprint; "
        "from ltx2core.models.source import COMPONENTS; from ltx2core.models.source import resolve_source; "
        "s = resolve_source(sys.argv[1]); print(json.dumps({c: component_fingerprint(s, c) for c in COMPONENTS}))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, tiny_copy.name_or_path], capture_output=True, text=True, check=True,
        cwd=REPO_ROOT,
    )
    assert json.loads(other.stdout.strip().splitlines()[-1]) == here
    assert len(set(here.values())) == len(COMPONENTS)  # the component is part of the key


def test_a_config_change_moves_only_that_components_fingerprint(tiny_copy: ModelSource) -> None:
    before = {c: component_fingerprint(tiny_copy, c) for c in COMPONENTS}
    config_path = Path(tiny_copy.name_or_path) / "vae" / "config.json"
    config = json.loads(config_path.read_text())
    config["_diffusers_version"] = "9.9.9"  # bookkeeping: same model
    config_path.write_text(json.dumps(config))
    assert component_fingerprint(tiny_copy, "vae") == before["vae"]

    config["scaling_factor"] = 0.5
    config_path.write_text(json.dumps(config))
    after = {c: component_fingerprint(tiny_copy, c) for c in COMPONENTS}
    assert after["vae"] != before["vae"]
    assert {c: v for c, v in after.items() if c != "vae"} == {c: v for c, v in before.items() if c != "vae"}


def test_a_weight_change_moves_the_fingerprint(tiny_copy: ModelSource) -> None:
    before = component_fingerprint(tiny_copy, "connectors")
    weights = Path(tiny_copy.name_or_path) / "connectors" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # same size, one bit of one weight
    weights.write_bytes(bytes(data))
    assert component_fingerprint(tiny_copy, "connectors") != before


def test_an_uncached_hub_id_offline_is_keyed_by_id_and_component(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    source = resolve_source("Lightricks/LTX-2", cache_dir=tmp_path)  # nothing cached: id + flavour
    assert component_fingerprint(source, "vae") == component_fingerprint(source, "vae")
    assert component_fingerprint(source, "vae") != component_fingerprint(source, "transformer")
