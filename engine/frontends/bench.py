"""`python -m engine bench`: where an edit's time goes on this machine, from one run.

For each installed backbone: the machine's matrix-multiply peak (fp32, bf16) and memory
read bandwidth, forward passes in torch and ONNX Runtime, forward + input gradient per
precision, the time per optimiser evaluation as a ratio of its roofline estimate (each
layer at its FLOPs / peak or its weights' bytes / bandwidth, whichever is longer: the
fully connected layers of one image are memory-bound), a whole edit
split into its stages (warm, in this process) and a cold start (a new process). Machines
are noisy and shared: compare the ratios within one run, not numbers across runs. Each timing is the fastest of
several tries (as timeit reports), whole edits and cold starts included (EDIT_TRIES; the JSON keeps every cold
start's wall time; the first command after an install is tried once, each try needing an empty cache): one try of
a 3-5 s command varied by +-0.5 s from run to run here, more than a cold start's own cost changes.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from engine.project import PROJECT

EDIT_TRIES = 3  # whole edits (warm) and cold starts, the fastest kept
REFERENCE = PROJECT / "examples" / "biden_1.jpg"
GUIDE = PROJECT / "examples" / "obama_1.jpg"


def best_of(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_peak(dtype, n: int = 2048) -> float:
    """GFLOP/s of one n x n matrix product."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / best_of(lambda: a @ b, repeats=5) / 1e9


def read_bandwidth(megabytes: int = 256) -> float:
    """GB/s of one pass reading a tensor far larger than the caches (a sum)."""
    import torch

    a = torch.ones(megabytes * 2**20 // 4)
    return a.numel() * 4 / best_of(lambda: a.sum(), repeats=5) / 1e9


def layer_costs(module, image, taps: list[str]) -> list[tuple[float, float]]:
    """(multiply-adds, weight elements) of every conv and linear layer the pass to `taps` runs (hooks count them)."""
    import torch
    from torch import nn

    costs: list[tuple[float, float]] = []

    def count(layer, _inputs, output) -> None:
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1] * layer.in_channels // layer.groups
            costs.append((float(k) * output.numel(), float(layer.weight.numel())))
        elif isinstance(layer, nn.Linear):
            costs.append((float(layer.in_features) * output.numel(), float(layer.weight.numel())))

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module(image, taps)
    finally:
        for h in hooks:
            h.remove()
    return costs


def roofline(costs: list[tuple[float, float]], peak_gflops: float, bandwidth_gbs: float,
             element_bytes: int) -> dict[str, float]:
    """Seconds of a forward + input gradient (each layer twice: the gradient costs what the pass does) at the
    roofline: every layer at its arithmetic or at reading its weights, whichever is longer. Also the compute-only
    figure (FLOPs / peak), the estimate the bench gave before the memory term."""
    compute = [2 * m / (peak_gflops * 1e9) for m, _ in costs]
    memory = [w * element_bytes / (bandwidth_gbs * 1e9) for _, w in costs]
    return {"roofline_s": 2 * sum(max(c, r) for c, r in zip(compute, memory, strict=True)),
            "compute_only_s": 2 * sum(compute), "weights_mb": sum(w for _, w in costs) * element_bytes / 1e6}


def example_mask(bb):
    """The bundled example edit's region at the network's input size (what the windowed pass recomputes)."""
    import torch

    from engine.api import edit
    from engine.objective.optimise import to_network

    r = edit(REFERENCE, guide=GUIDE, backbone=bb, precision="fp32", iterations=0)
    return to_network(torch.from_numpy(r.frame.mask)[None, None].float(), bb.input_size)[0, 0]


def network_figures(bb, recipe, peaks: dict[str, float], bandwidth: float, mask) -> dict:
    """Forward and forward + input-gradient passes at the network's input size, per path and precision (the
    network alone: the taps' gradients are given, as the roofline counts no loss); the windowed pass
    (engine/models/window.py) on the bundled example's region where the backbone has one, its attribute taps
    coming as the boxes their losses read, as in an edit (from the network-size mask here). The optimiser's own
    evaluations, losses included, are timed in the whole edit (edit_figures). The backbone's precision is left as
    it was."""
    previous = bb.precision
    try:
        return _network_figures(bb, recipe, peaks, bandwidth, mask)
    finally:
        bb.precision = previous


def _network_figures(bb, recipe, peaks: dict[str, float], bandwidth: float, mask) -> dict:
    import numpy as np
    import torch

    from engine.objective.losses import mask_box

    taps = list(dict.fromkeys([*recipe.identity_layers, *recipe.attribute_layers]))
    x = torch.rand(1, 3, *bb.input_size) * 255
    out: dict = {"taps": taps}
    t = time.perf_counter()
    bb.module  # noqa: B018  (load the torch module: part of the cold start)
    out["load_torch_s"] = time.perf_counter() - t
    t = time.perf_counter()
    bb.session  # noqa: B018
    out["load_ort_s"] = time.perf_counter() - t
    costs = layer_costs(bb.module, x, taps)
    out["forward_gflop"] = 2 * sum(m for m, _ in costs) / 1e9
    out["ort_forward_s"] = best_of(lambda: bb.features_fast(x.numpy(), taps))
    with torch.no_grad():  # d(loss)/d(tap), given
        upstream = {t: torch.randn_like(v) for t, v in bb.module(x, taps).items()}
    boxes = {t: box for t in recipe.attribute_layers if t not in recipe.identity_layers
             and (box := mask_box(mask, upstream[t])) is not None}  # Problem.features
    boxed = {t: v[..., boxes[t][0], boxes[t][1]] if t in boxes else v for t, v in upstream.items()}
    for precision in ("fp32", "bf16"):
        bb.precision = precision
        size = 2 if precision == "bf16" else 4

        def forward() -> None:
            with torch.no_grad():
                bb.features(x, taps)

        def forward_backward() -> None:  # the network's own passes: no loss arithmetic on top
            xg = x.clone().requires_grad_(True)
            f = bb.features(xg, taps)
            torch.autograd.backward([f[t] for t in taps], [upstream[t] for t in taps])

        fwd, fb = best_of(forward), best_of(forward_backward)
        roof = roofline(costs, peaks[precision], bandwidth, size)
        out[precision] = {"torch_forward_s": fwd, "forward_backward_s": fb, **roof,
                          "ratio_to_roofline": fb / roof["roofline_s"]}
        local = bb.local_pass(x, mask, taps)
        if local is not None:
            def local_forward_backward(local=local) -> None:  # the attribute taps as their boxes, as in an edit
                xg = x.clone().requires_grad_(True)
                f = local(bb.prepare(xg), boxes)
                torch.autograd.backward([f[t] for t in taps], [boxed[t].to(f[t].dtype) for t in taps])

            local_costs = local.layer_costs()
            lfb = best_of(local_forward_backward)
            local_roof = roofline(local_costs, peaks[precision], bandwidth, size)
            out[precision]["windowed"] = {"gflop": 2 * sum(m for m, _ in local_costs) / 1e9,
                                          "forward_backward_s": lfb, **local_roof,
                                          "ratio_to_roofline": lfb / local_roof["roofline_s"], "speed_up": fb / lfb}
    bb.precision = "fp32"
    with torch.no_grad():
        ref = bb.features(x, taps)
    bb.precision = "bf16"
    with torch.no_grad():
        low = bb.features(x, taps)
    out["bf16_feature_rel_error"] = {t: float((low[t] - ref[t]).norm() / (ref[t].norm() + 1e-12)) for t in taps}
    fast = bb.features_fast(x.numpy(), taps)
    out["ort_vs_torch_max_rel"] = max(float(np.abs(fast[t] - ref[t].numpy()).max() / (np.abs(fast[t]).max() + 1e-12))
                                      for t in taps)
    return out


def edit_figures(bb, precision: str, iterations: int, out_dir: Path) -> dict:
    """A whole edit of the bundled example in this process (warm: the backbone is loaded), and the saving of its
    result as a command does (the cold start's command saves one too)."""
    import numpy as np

    from engine.api import edit

    edit(REFERENCE, guide=GUIDE, backbone=bb, precision=precision, iterations=2)  # warm caches
    tries = []
    for _ in range(EDIT_TRIES):
        reports: list[tuple[int, float]] = []  # (evaluations done, when): the optimiser reports each one
        t = time.perf_counter()
        r = edit(REFERENCE, guide=GUIDE, backbone=bb, precision=precision, iterations=iterations,
                 progress=lambda p, seen=reports: seen.append((p.step, time.perf_counter())))
        total = time.perf_counter() - t
        t = time.perf_counter()
        r.save(out_dir / f"warm-{bb.name}-{precision}.png")
        saved = time.perf_counter() - t
        tries.append((total + saved, total, saved, r, reports))
    _, total, saved, r, reports = min(tries, key=lambda x: x[0])
    per_evaluation, spent = evaluation_times(reports)
    return {"total_s": total, "save_s": saved, "stages_s": r.timings, "evaluations": len(r.history),
            "per_evaluation_s": per_evaluation, "optimise_setup_s": r.timings["optimise"] - spent,
            "image": r.rgb8(), "mask": np.asarray(r.frame.photo_mask(r.photo.rgb.shape[:2]))}


def evaluation_times(reports: list[tuple[int, float]]) -> tuple[float | None, float]:
    """(median seconds of one optimiser evaluation, seconds from the first evaluation's end to the last's) from the
    optimiser's progress reports (evaluations done, when). The first evaluation also builds what the later ones
    reuse (the windowed pass's stored maps of the start), and the targets' passes come before it: neither is an
    evaluation's own work, which the roofline estimates, so the median is taken over the second and later ones."""
    ends: dict[int, float] = {}
    for step, when in reports:
        ends.setdefault(step, when)  # a stage's last report may repeat its count
    steps = sorted(ends)
    gaps = [(ends[b] - ends[a]) / (b - a) for a, b in zip(steps, steps[1:], strict=False) if b > a]
    if not gaps:  # a single evaluation: nothing to tell apart from its set-up
        return None, 0.0
    return statistics.median(gaps), ends[steps[-1]] - ends[steps[0]]


def cold_start(backbone: str, precision: str, iterations: int, out_dir: Path, empty_cache: bool = False,
               tries: int = EDIT_TRIES) -> dict:
    """A new process running the CLI: interpreter, imports, model load, first edit; the fastest of `tries`.
    `empty_cache`: as the first command after an install or an export (no verified hash, no memory-mapped weight
    copy in the user cache)."""
    import os
    import shutil
    import tempfile

    out = out_dir / f"cold-{Path(backbone).stem}-{precision}{'-first' if empty_cache else ''}.png"
    cmd = [sys.executable, "-m", "engine", "edit", str(REFERENCE), "--guide", str(GUIDE), "-o", str(out),
           "--backbone", backbone, "--precision", precision, "--iterations", str(iterations), "--quiet",
           "--no-service"]  # a service left running would take the edit: not a cold start
    walls, stages = [], []
    for _ in range(tries):
        cache = Path(tempfile.mkdtemp(prefix="fat-bench-cache-")) if empty_cache else None
        env = {**os.environ, "XDG_CACHE_HOME": str(cache)} if cache else None
        t = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, env=env)
        finally:
            if cache:
                shutil.rmtree(cache, ignore_errors=True)
        walls.append(time.perf_counter() - t)
        if done.returncode != 0:
            return {"error": done.stderr.strip()[-500:]}
        stages.append(json.loads(out.with_suffix(".json").read_text())["timings_s"])
    best = min(range(len(walls)), key=walls.__getitem__)
    return {"wall_s": walls[best], "walls_s": walls, "stages_s": stages[best],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def through_service(backbone: str, precision: str, iterations: int, out_dir: Path) -> dict:
    """New CLI processes while a warm engine service runs (the hand-off of engine/frontends/cli.py): the first
    edit makes the service load the model, the next ones find it loaded. The service is this bench's own, on a
    socket in a private temporary folder, started and stopped as the plug-in and `serve --stop` do."""
    import os
    import shutil
    import tempfile

    from engine.frontends import service_client as client
    from engine.frontends.service import stop

    folder = Path(tempfile.mkdtemp(prefix="fat-bench-", dir="/tmp"))
    sock = folder / client.SOCKET_NAME
    env = {**os.environ, "FAT_SERVICE_SOCKET": str(sock)}  # the CLI finds this service, no other
    t = time.perf_counter()
    try:
        client.ensure_service(sys.executable, str(PROJECT), sock_path=sock)
        out: dict = {"service_ready_s": time.perf_counter() - t, "edits_wall_s": []}
        for i in range(3):
            cmd = [sys.executable, "-m", "engine", "edit", str(REFERENCE), "--guide", str(GUIDE), "-o",
                   str(out_dir / f"served-{Path(backbone).stem}-{i}.png"), "--backbone", backbone, "--precision",
                   precision, "--iterations", str(iterations), "--quiet"]
            t = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, env=env)
            if done.returncode != 0:
                return {"error": done.stderr.strip()[-500:]}
            out["edits_wall_s"].append(time.perf_counter() - t)
        out["served"] = client.ping(sock)["served"]
        side = json.loads((out_dir / f"served-{Path(backbone).stem}-0.json").read_text())
        out["precision"] = side["settings"]["precision_used"]
        return out
    except client.ServiceError as e:
        return {"error": str(e)}
    finally:
        stop(sock)
        shutil.rmtree(folder, ignore_errors=True)


def difference(a, b, mask) -> dict:
    import numpy as np

    d = np.abs(a.astype(float) - b.astype(float)).max(-1)
    inside = mask > 0.05
    return {"mean_in_region": float(d[inside].mean()), "max_in_region": float(d[inside].max()),
            "max_outside": float(d[~inside].max())}


def bench_backbone(name: str, peaks: dict[str, float], bandwidth: float, iterations: int, out_dir: Path,
                   log) -> dict:
    from engine.models.backbone import load_backbone, resolve_path
    from engine.objective.recipes import fit_to_backbone, recipe_for

    spec_path = str(resolve_path(name))
    t = time.perf_counter()
    bb = load_backbone(spec_path)
    report: dict = {"backbone": bb.name, "spec": spec_path, "read_spec_s": time.perf_counter() - t}
    recipe = fit_to_backbone(recipe_for(bb.name), bb.spec)
    log(f"\n== {bb.name} ({spec_path})")
    net = network_figures(bb, recipe, peaks, bandwidth, example_mask(bb))
    report["network"] = net
    log(f"  load: torch module {net['load_torch_s']:.2f} s, ORT session {net['load_ort_s']:.2f} s; "
        f"forward to {', '.join(net['taps'])}: {net['forward_gflop']:.2f} GFLOP")
    log(f"  forward: ORT {net['ort_forward_s'] * 1e3:.0f} ms, torch fp32 {net['fp32']['torch_forward_s'] * 1e3:.0f} ms,"
        f" torch bf16 {net['bf16']['torch_forward_s'] * 1e3:.0f} ms (ORT vs torch max rel diff "
        f"{net['ort_vs_torch_max_rel']:.1e})")
    for p in ("fp32", "bf16"):
        n = net[p]
        log(f"  forward + input gradient {p}: {n['forward_backward_s'] * 1e3:.0f} ms, roofline "
            f"{n['roofline_s'] * 1e3:.0f} ms (compute alone {n['compute_only_s'] * 1e3:.0f} ms; weights "
            f"{n['weights_mb']:.0f} MB read twice), ratio {n['ratio_to_roofline']:.2f}")
        if "windowed" in n:
            w = n["windowed"]
            log(f"    windowed on the example's region: {w['gflop']:.1f} GFLOP ({w['gflop'] / net['forward_gflop']:.0%}"
                f" of the full pass), {w['forward_backward_s'] * 1e3:.0f} ms = {w['speed_up']:.2f}x faster, "
                f"roofline {w['roofline_s'] * 1e3:.0f} ms (compute alone {w['compute_only_s'] * 1e3:.0f} ms; weights "
                f"{w['weights_mb']:.0f} MB), ratio {w['ratio_to_roofline']:.2f}")
    log("  bf16 feature error (relative L2): " + ", ".join(f"{t} {e:.1e}" for t, e in
                                                        net["bf16_feature_rel_error"].items()))
    edits = {}
    for p in ("fp32", "bf16"):
        e = edit_figures(bb, p, iterations, out_dir)
        edits[p] = e
        stages = ", ".join(f"{k} {v:.2f}" for k, v in e["stages_s"].items())
        roof = net[p].get("windowed", net[p])["roofline_s"]  # the edit runs the windowed pass where there is one
        each = e["per_evaluation_s"]
        per = (f"at {each * 1e3:.0f} ms (median) = {each / roof:.2f} x roofline" if each is not None
               else "(one: no time per evaluation apart from its set-up)")
        log(f"  warm edit {p}: {e['total_s']:.2f} s ({stages}); {e['evaluations']} evaluations {per}, after "
            f"{e['optimise_setup_s']:.2f} s of the optimise stage for its targets, start and first evaluation; "
            f"saving the result {e['save_s']:.2f} s")
    diff = difference(edits["bf16"]["image"], edits["fp32"]["image"], edits["fp32"]["mask"])
    log(f"  bf16 vs fp32 result: mean {diff['mean_in_region']:.2f}, max {diff['max_in_region']:.0f} levels in the "
        f"region, max {diff['max_outside']:.0f} outside")
    report["edits"] = {p: {k: v for k, v in e.items() if k not in ("image", "mask")} for p, e in edits.items()}
    report["bf16_vs_fp32_pixels"] = diff
    report["cold"] = {}
    for p in ("fp32", "bf16"):
        c = cold_start(spec_path, p, iterations, out_dir)
        report["cold"][p] = c
        if "error" in c:
            log(f"  cold start {p}: failed: {c['error']}")
        else:
            warm = report["edits"][p]
            c["extra_s"] = c["wall_s"] - warm["total_s"] - warm["save_s"]  # both edits save their result
            log(f"  cold start {p} (new process, first edit, saved; fastest of {len(c['walls_s'])}: "
                f"{', '.join(f'{w:.2f}' for w in c['walls_s'])} s): {c['wall_s']:.2f} s wall = warm edit and save "
                f"+ {c['extra_s']:.2f} s; peak RSS {c['peak_rss_mb']:.0f} MB")
    from engine.models.runtime import resolve_precision

    default = resolve_precision("auto", bb.device, recipe.precision)
    first = cold_start(spec_path, default, iterations, out_dir, empty_cache=True, tries=1)
    report["cold"]["first_after_install"] = first
    if "error" in first:
        log(f"  first command after install ({default}): failed: {first['error']}")
    elif "error" not in report["cold"][default]:
        log(f"  first command after install ({default}, empty user cache: the model hashed, its weights parsed and "
            f"copied): {first['wall_s']:.2f} s wall = that cold start + "
            f"{first['wall_s'] - report['cold'][default]['wall_s']:.2f} s")
    served = through_service(spec_path, "auto", iterations, out_dir)
    report["cold"]["through_service"] = served
    if "error" in served:
        log(f"  new processes through a running service: failed: {served['error']}")
    else:
        walls = served["edits_wall_s"]
        used = served["precision"]
        warm = report["edits"][used]["total_s"] + report["edits"][used]["save_s"]
        log(f"  new processes through a running service ({used}; service ready in {served['service_ready_s']:.1f} s):"
            f" first edit {walls[0]:.2f} s (the service loads the model), next "
            + ", ".join(f"{w:.2f}" for w in walls[1:])
            + f" s = warm {used} edit and save + {min(walls[1:]) - warm:.2f} s")
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine bench", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", action="append", help="name or spec .json (repeatable; default: every installed)")
    p.add_argument("--iterations", type=int, help="evaluations per edit (default: the edit's own default)")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--out", type=Path, default=PROJECT / "out" / "bench", help="scratch folder for cold-start edits")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    import torch

    from engine.models.backbone import available_backbones
    from engine.models.runtime import cpu_has_bf16
    from engine.options import EditOptions

    args.iterations = EditOptions().iterations if args.iterations is None else args.iterations
    args.out.mkdir(parents=True, exist_ok=True)
    log = print
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    bandwidth = read_bandwidth()
    log(f"machine: {torch.get_num_threads()} torch threads, native bf16 {cpu_has_bf16()}; matmul peak fp32 "
        f"{peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s (ratio {peaks['bf16'] / peaks['fp32']:.1f}); "
        f"memory read {bandwidth:.0f} GB/s")
    if torch.cuda.is_available():
        log(f"GPU: {torch.cuda.get_device_name()} (figures below are for the CPU path)")
    names = args.backbone or available_backbones()
    report = {"peaks_gflops": peaks, "read_bandwidth_gbs": bandwidth,
              "backbones": [bench_backbone(n, peaks, bandwidth, args.iterations, args.out, log) for n in names],
              "peak_rss_mb_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    log(f"\npeak RSS of this process: {report['peak_rss_mb_this_process']:.0f} MB")
    if args.json:
        from engine.io.files import atomic_write_json

        atomic_write_json(args.json, report)
        log(f"wrote {args.json}")
    return 0
