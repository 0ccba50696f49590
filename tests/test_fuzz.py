"""Property-based fuzzing of what users type and write (issue 14, item 5): policy files,
hardware TOML files and the numeric command-line options. Every outcome is either success or
exit code 2 with one line on stderr; never a traceback, never a NaN cost.

Policy and hardware files go through the real ``haq cost`` command (cheap on the tiny test
model). The numeric options are fuzzed at the door: the parser and, for ``haq search``, the
configuration check that runs before any data is loaded. Running the commands themselves
with valid numbers is what the other tests do.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from haq.cli import build_parser, main
from haq.errors import HaqError
from haq.hardware.config import PRESET_DIR
from haq.options import given_options
from haq.search.config import SearchConfig
from haq.search.ddpg import DDPGConfig

# HAQ_FUZZ_EXAMPLES: more examples per test for a soak (1,500 found the overflowing total)
EXAMPLES = int(os.environ.get("HAQ_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TINY = ["--model", "tests.conftest:TinyNet", "--input-shape", "1,8,8"]
NAMES = ["body.0", "body.2", "body.5", "head"]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``haq ARGV`` in this process: (exit code, stdout, stderr); a traceback fails the test,
    and so does a RuntimeWarning (numpy's overflow warnings reach a user's terminal)."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    shown = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not shown, (argv, shown)
    return code, out.getvalue(), err.getvalue()


def finite_json(text: str) -> dict:
    """A JSON report that must hold no NaN or Infinity (not JSON, and not a cost)."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a JSON report")

    return json.loads(text, parse_constant=refuse)


def assert_clean(code: int, err: str) -> None:
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err


def write_tmp(data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix)
    with open(fd, "wb") as fh:
        fh.write(data)
    return Path(name)


# --- policy files ----------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def policy_documents(draw: st.DrawFn) -> bytes:
    """Valid policies with one part replaced by anything, or arbitrary JSON, or raw bytes."""
    kind = draw(st.sampled_from(["mutated", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    layers = [{"name": n, "w_bits": 4, "a_bits": 6} for n in NAMES]
    doc: dict = {"format": "haq-policy", "version": 1, "mode": "linear", "layers": layers}
    where = draw(st.sampled_from(["w_bits", "a_bits", "name", "layer", "mode", "version", "drop"]))
    value = draw(JSON_VALUES)
    i = draw(st.integers(0, len(NAMES) - 1))
    if where in ("w_bits", "a_bits", "name"):
        layers[i][where] = value
    elif where == "layer":
        layers[i] = value
    elif where == "drop":
        del layers[i][draw(st.sampled_from(["name", "w_bits", "a_bits"]))]
    else:
        doc[where] = value
    return json.dumps(doc).encode()


@FUZZ
@given(policy_documents())
def test_fuzzed_policy_files_cost_or_fail_in_one_line(data: bytes) -> None:
    path = write_tmp(data, ".json")
    try:
        code, out, err = run_cli(["cost", *TINY, "--policy", str(path), "--format", "json"])
    finally:
        path.unlink()
    assert_clean(code, err)
    if code == 0:
        total = finite_json(out)["total"]
        assert all(math.isfinite(v) for v in total.values() if isinstance(v, float))


# --- hardware files --------------------------------------------------------------------------
TOML_VALUES = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e308", "5e-324", "true", '"8"', "[1, 2]"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=6).map(json.dumps),
)


def preset_lines(name: str) -> list[tuple[str, str]]:
    """(key, value text) of a shipped preset, comments dropped."""
    out = []
    for line in (PRESET_DIR / f"{name}.toml").read_text().splitlines():
        text = line.split("#")[0].strip() if not line.strip().startswith(("name", "desc")) else line
        if "=" in text and not text.lstrip().startswith("#"):
            key, _, value = text.partition("=")
            out.append((key.strip(), value.split(" #")[0].strip()))
    return out


@st.composite
def hardware_documents(draw: st.DrawFn) -> bytes:
    """A preset with one field replaced, removed or added, or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    lines = preset_lines(draw(st.sampled_from(["bismo-edge", "bismo-cloud", "bitfusion"])))
    i = draw(st.integers(0, len(lines) - 1))
    action = draw(st.sampled_from(["replace", "replace", "replace", "drop", "add"]))
    if action == "replace":
        lines[i] = (lines[i][0], draw(TOML_VALUES))
    elif action == "drop":
        del lines[i]
    else:
        lines.append((draw(st.from_regex(r"[a-z_]{1,8}", fullmatch=True)), draw(TOML_VALUES)))
    return "\n".join(f"{k} = {v}" for k, v in lines).encode()


@FUZZ
@given(hardware_documents())
def test_fuzzed_hardware_files_cost_or_fail_in_one_line(data: bytes) -> None:
    path = write_tmp(data, ".toml")
    try:
        code, out, err = run_cli(["cost", *TINY, "--hardware", str(path), "--format", "json"])
    finally:
        path.unlink()
    assert_clean(code, err)
    if code == 0:
        report = finite_json(out)  # the total too: every layer finite, their sum overflowing
        for row in report["layers"]:
            for key, value in row.items():
                if isinstance(value, float):
                    assert math.isfinite(value) and value >= 0, (key, value)


@pytest.mark.parametrize("preset", ["bismo-edge", "bismo-cloud", "bitfusion"])
def test_every_hardware_field_at_extreme_magnitudes_costs_or_fails_in_one_line(preset: str) -> None:
    """Each numeric field of a preset set to the largest and the smallest positive double
    (the fuzz test found a clock of 1e308 MHz, whose latencies round to 0 s, ending in a
    ZeroDivisionError; and 1e308 setup cycles per layer, finite per layer but an infinite
    total with a numpy warning): the cost is finite and positive, or refused in one line."""
    lines = preset_lines(preset)
    for i, (key, _) in enumerate(lines):
        if key in ("name", "arch", "description", "source"):
            continue
        for extreme in ("1e308", "5e-324"):
            changed = [*lines[:i], (key, extreme), *lines[i + 1 :]]
            path = write_tmp("\n".join(f"{k} = {v}" for k, v in changed).encode(), ".toml")
            try:
                code, out, err = run_cli(
                    ["cost", *TINY, "--hardware", str(path), "--format", "json"]
                )
            finally:
                path.unlink()
            assert_clean(code, err)
            if code == 0:
                total = finite_json(out)["total"]
                assert total["latency_ms"] > 0 and math.isfinite(total["latency_vs_w8a8"]), key


# --- numeric options -------------------------------------------------------------------------
NUMERIC_FLAGS = {
    "search": [
        "--batch", "--episodes", "--min-bit", "--max-bit", "--finetune-steps", "--finetune-size",
        "--heldout-size", "--check-size", "--batch-size", "--lr", "--calib-batches",
        "--sensitivity-images", "--seed", "--workers", "--crop-ratio", "--min-crop-scale",
        "--warmup", "--sigma-decay", "--search-seed", "--eval-workers", "--gpus-per-worker",
    ],
    "finetune": ["--epochs", "--lr", "--batch-size", "--seed", "--workers", "--crop-ratio"],
    "eval": ["--finetune-steps", "--lr", "--seed", "--workers", "--crop-ratio"],
    "pretrain": ["--epochs", "--lr", "--batch-size", "--seed"],
    "import": ["--workers", "--crop-ratio"],
    "cost": ["--batch"],
}  # fmt: skip
NUMBER_TEXT = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-inf", "1e999", "0", "-0", "0x10", "", "1_000", " 3", "1.5"]),
)


@FUZZ
@given(st.sampled_from([(c, f) for c, flags in NUMERIC_FLAGS.items() for f in flags]), NUMBER_TEXT)
def test_fuzzed_numeric_options_are_refused_in_one_line_or_accepted(
    command_flag: tuple[str, str], text: str
) -> None:
    command, flag = command_flag
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args([command, f"{flag}={text}"])
        except SystemExit as exc:
            assert_clean(int(exc.code or 0), err.getvalue())
            return
    if command != "search":
        value = getattr(args, flag[2:].replace("-", "_"))
    else:  # only the typed flags, as a (nested) dict of field values
        given = given_options(args, SearchConfig)
        (value,) = [v for g in given.values() for v in (g.values() if isinstance(g, dict) else [g])]
    assert isinstance(value, int | float) and math.isfinite(value)
    if command == "search":
        try:
            SearchConfig().with_overrides(given)
        except HaqError as bad:  # only a combination of values can still be refused here
            assert "bit range" in str(bad), bad


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--lr", "-1"], "argument --lr: must be > 0, got -1"),
        (["search", "--seed", "4294967296"], "argument --seed: must be <= 4294967295"),
        (["finetune", "--epochs", "nan"], "argument --epochs: must be a finite number"),
        (["eval", "--finetune-steps", "1.5"], "argument --finetune-steps: not an integer: '1.5'"),
        (["search", "--min-bit", "6", "--max-bit", "4"], "bit range 6..4"),
        (["search", "--compile", "--mode", "kmeans", "--size", "0.3x"], "--compile works with"),
    ],
)
def test_numeric_refusals_name_the_flag(argv: list[str], message: str) -> None:
    code, _, err = run_cli(argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


# --- a run's config.json ------------------------------------------------------------------------
CONFIG_FIELDS = sorted(SearchConfig().to_dict())


@FUZZ
@given(field=st.sampled_from(CONFIG_FIELDS), value=JSON_VALUES)
def test_fuzzed_config_json_fields_load_or_fail_in_one_line(field: str, value: object) -> None:
    """Any JSON value in any field of a run's config.json: it loads and validates, or the
    error is one line (issue 36: errors from deep inside torch or ddpg.py before)."""
    data = SearchConfig().to_dict()
    data[field] = value
    try:
        SearchConfig.from_dict(data).resolved()
    except HaqError as err:
        assert "\n" not in str(err) and str(err), repr(err)


@FUZZ
@given(key=st.sampled_from(sorted(DDPGConfig().__dict__)), value=JSON_VALUES)
def test_fuzzed_agent_fields_load_or_fail_in_one_line(key: str, value: object) -> None:
    data = SearchConfig().to_dict()
    data["ddpg"][key] = value
    try:
        SearchConfig.from_dict(data).resolved()
    except HaqError as err:
        assert "\n" not in str(err) and str(err), repr(err)
