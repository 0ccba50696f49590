"""The shared options (haq.specs) are defined once: every command and the search config
inherit the very same field (flag, default, help), and library calls take the spec objects."""

from dataclasses import fields
from pathlib import Path

import pytest

from haq.cli_options import EvalOptions, ExportOptions, FinetuneOptions
from haq.export import load_for_export
from haq.finishing import job_from_run
from haq.quant.serialize import quantizer_facts
from haq.search.config import SearchConfig
from haq.search.runner import search
from haq.specs import DEFAULT_REFERENCE_MODEL, DataSpec, FinetuneSpec, ModelSpec, QuantSpec
from tests.test_search import tiny_cfg

SPECS = (ModelSpec, DataSpec, QuantSpec)  # FinetuneSpec: haq finetune only


@pytest.mark.parametrize("cls", [SearchConfig, EvalOptions, FinetuneOptions, ExportOptions])
def test_every_command_inherits_the_same_fields(cls: type) -> None:
    mine = cls.__dataclass_fields__  # type: ignore[attr-defined]
    for spec in SPECS:
        for f in fields(spec):
            assert mine[f.name] is spec.__dataclass_fields__[f.name], (cls.__name__, f.name)  # type: ignore[attr-defined]


def test_finetune_inherits_its_training_spec() -> None:
    for f in fields(FinetuneSpec):
        assert (
            FinetuneOptions.__dataclass_fields__[f.name]
            is FinetuneSpec.__dataclass_fields__[f.name]
        )  # type: ignore[attr-defined]


def test_spec_of_takes_the_fields_out_of_a_config() -> None:
    cfg = SearchConfig(per_channel=True, weight_clip="mse", calib_batches=3, crop_ratio=0.9)
    assert QuantSpec.of(cfg) == QuantSpec(per_channel=True, weight_clip="mse", calib_batches=3)
    assert DataSpec.of(cfg).crop_ratio == 0.9
    assert ModelSpec().model_name() == DEFAULT_REFERENCE_MODEL
    assert ModelSpec(checkpoint="c.pt").model_name() is None  # the checkpoint's own
    assert cfg.resolved().model == DEFAULT_REFERENCE_MODEL  # saved explicitly in config.json


def test_export_of_a_run_uses_the_runs_quantizer(tiny_ckpt: str, tmp_path: Path) -> None:
    """A run's best policy exported without a final finetune is quantized as the search
    quantized it (per-channel clips here), not with the defaults."""
    cfg = tiny_cfg(tiny_ckpt, strategy="uniform", finetune_steps=0, check_size=0,
                   per_channel=True, weight_clip="mse")  # fmt: skip
    search(cfg, tmp_path / "run", progress=False)
    q, _, _, source = load_for_export(run=tmp_path / "run")
    facts = quantizer_facts(q)
    assert "calibrated, not finetuned" in source
    assert {f["granularity"] for f in facts.values()} == {"per-channel"}
    default, _, _, _ = load_for_export(
        policy_path=tmp_path / "run" / "best_policy.json",
        model=ModelSpec(checkpoint=tiny_ckpt),
        data=DataSpec(dataset="digits"),
    )
    assert {f["granularity"] for f in quantizer_facts(default).values()} == {"per-tensor"}

    # its final finetune keeps the per-channel clips, and the file rebuilds (export, report)
    job = job_from_run(tmp_path / "run")
    assert job.quant == QuantSpec(per_channel=True, weight_clip="mse")
    job.run(FinetuneSpec(epochs=0.05, batch_size=64), progress=False)
    rebuilt, _, _, source = load_for_export(run=tmp_path / "run")
    assert "finetuned" in source
    assert {f["granularity"] for f in quantizer_facts(rebuilt).values()} == {"per-channel"}
