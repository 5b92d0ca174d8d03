"""Recomputing only the changed window of each feature map gives the full pass's taps and input gradient
(engine/models/window.py); an edit through it is the same edit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import api, edit
from engine.models.taps import run_stages
from engine.models.window import LocalForward, Window, changed_window
from engine.objective.optimise import to_network

TAPS = ["relu2_2", "relu3_3", "relu4_3", "pool5", "fc7"]
WINDOWS = {
    "mouth": Window(125, 201, 51, 171),
    "top-left corner": Window(0, 30, 0, 45),  # the network's zero padding at two edges
    "bottom-right corner": Window(190, 224, 200, 224),
    "one pixel": Window(100, 101, 57, 58),
    "most of the input": Window(10, 214, 5, 220),  # grows to the whole map early
}


def _image_changed_in(window: Window, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, 224, 224, generator=g) * 255
    x = base.clone()
    window.of(x).copy_(torch.rand(window.of(x).shape, generator=g) * 255)
    return base, x


@pytest.mark.parametrize("where", list(WINDOWS))
def test_windowed_taps_and_gradient_equal_the_full_pass(vgg_backbone, where):
    net, window = vgg_backbone.module, WINDOWS[where]
    base, x = _image_changed_in(window, seed=len(where))
    local = LocalForward(net.stages(), net.stage_kinds(), net.normalise(base), window, TAPS)

    def taps_and_grad(forward):
        xx = x.clone().requires_grad_(True)
        out = forward(net.normalise(xx))
        sum((v * torch.linspace(-1, 1, v.numel()).view(v.shape)).sum() for v in out.values()).backward()
        return {k: v.detach() for k, v in out.items()}, xx.grad

    full, full_grad = taps_and_grad(lambda t: run_stages(net.stages(), t, TAPS))
    part, part_grad = taps_and_grad(local)
    for tap in TAPS:
        assert part[tap].shape == full[tap].shape, tap
        scale = float(full[tap].abs().max())
        assert torch.allclose(part[tap], full[tap], rtol=1e-5, atol=1e-5 * scale), (tap, where)
    inside = window.of(full_grad)
    assert torch.allclose(window.of(part_grad), inside, rtol=1e-4, atol=1e-5 * float(inside.abs().max()))
    outside = part_grad.clone()
    window.of(outside).zero_()
    assert outside.abs().max() == 0  # pixels outside the window are the base's: no gradient reaches them


@pytest.mark.parametrize("where", ["mouth", "most of the input"])
def test_taps_asked_for_as_boxes_are_those_boxes_of_the_full_maps(vgg_backbone, where):
    """LocalForward(x, boxes): a box inside the tap's window (a slice of the window), one reaching beyond it, one
    on a map the window has grown to cover; the same values and input gradient as cropping the full pass."""
    net, window = vgg_backbone.module, WINDOWS[where]
    base, x = _image_changed_in(window, seed=3)
    local = LocalForward(net.stages(), net.stage_kinds(), net.normalise(base), window, TAPS)
    boxes = {"relu2_2": (slice(70, 95), slice(40, 80)), "relu3_3": (slice(0, 40), slice(10, 30)),
             "pool5": (slice(2, 6), slice(1, 7))}

    def taps_and_grad(forward):
        xx = x.clone().requires_grad_(True)
        out = forward(net.normalise(xx))
        sum((v * torch.linspace(-1, 1, v.numel()).view(v.shape)).sum() for v in out.values()).backward()
        return {k: v.detach() for k, v in out.items()}, xx.grad

    def cropped_full(t):
        out = run_stages(net.stages(), t, TAPS)
        return {k: v[..., boxes[k][0], boxes[k][1]] if k in boxes else v for k, v in out.items()}

    full, full_grad = taps_and_grad(cropped_full)
    part, part_grad = taps_and_grad(lambda t: local(t, boxes))
    for tap in TAPS:
        assert part[tap].shape == full[tap].shape, tap
        assert torch.allclose(part[tap], full[tap], rtol=1e-5, atol=1e-5 * float(full[tap].abs().max())), tap
    inside = window.of(full_grad)  # outside the window the pixels are the base's: no gradient (test above)
    assert torch.allclose(window.of(part_grad), inside, rtol=1e-4, atol=1e-5 * float(inside.abs().max()))


@pytest.mark.parametrize("window", [Window(50, 62, 48, 60), Window(0, 9, 20, 35), Window(30, 31, 59, 60)])
def test_odd_sized_maps_where_the_pool_drops_a_row(vgg_backbone, window):
    """A 60 x 62 input pools to 30 x 31, 15 x 15, 7 x 7: odd maps whose last row or column the 2x2 pool drops."""
    net = vgg_backbone.module
    g = torch.Generator().manual_seed(window.y0)
    base = torch.rand(1, 3, 60, 62, generator=g) * 255
    x = base.clone()
    window.of(x).copy_(torch.rand(window.of(x).shape, generator=g) * 255)
    taps = ["relu2_2", "relu3_3", "relu4_3", "pool5"]
    local = LocalForward(net.stages(), net.stage_kinds(), net.normalise(base), window, taps)
    with torch.no_grad():
        full, part = run_stages(net.stages(), net.normalise(x), taps), local(net.normalise(x))
    for tap in taps:
        assert torch.allclose(part[tap], full[tap], rtol=1e-5, atol=1e-5 * float(full[tap].abs().max())), tap


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no bf16 in oneDNN here")
def test_the_bf16_channels_last_windowed_pass_matches_its_full_pass(vgg_backbone):
    """The path the edits take by default with VGG-Face: bf16, channels-last, through Backbone.local_features."""
    bb, window = vgg_backbone, WINDOWS["mouth"]
    base, x = _image_changed_in(window, seed=11)
    mask = torch.zeros(224, 224)
    Window(window.y0 + 2, window.y1 - 2, window.x0 + 2, window.x1 - 2).of(mask).fill_(1)  # changed_window adds 2
    bb.precision = "bf16"
    try:
        local = bb.local_features(base, mask, TAPS)
        assert local is not None

        def taps_and_grad(forward):
            xx = x.clone().requires_grad_(True)
            out = forward(xx)
            sum(v.square().mean() for v in out.values()).backward()
            return {k: v.detach() for k, v in out.items()}, window.of(xx.grad)

        full, full_grad = taps_and_grad(lambda t: bb.features(t, TAPS))
        part, part_grad = taps_and_grad(local)
    finally:
        bb.precision = "fp32"
    for tap in TAPS:
        assert part[tap].dtype == torch.float32
        assert float((part[tap] - full[tap]).norm() / full[tap].norm()) < 1e-3, tap
    assert float((part_grad - full_grad).norm() / full_grad.norm()) < 0.03  # bf16 sums in another order


def test_a_change_outside_the_window_is_not_seen(vgg_backbone):
    """The contract: outside its window the image is taken to be the base (the edit's mask guarantees it)."""
    net, window = vgg_backbone.module, WINDOWS["mouth"]
    base, x = _image_changed_in(window, seed=3)
    local = LocalForward(net.stages(), net.stage_kinds(), net.normalise(base), window, TAPS)
    y = x.clone()
    y[..., :20, :20] = 0
    with torch.no_grad():
        a, b = local(net.normalise(x)), local(net.normalise(y))
    assert all(torch.equal(a[k], b[k]) for k in TAPS)


def test_changed_window_is_the_masks_support_grown():
    mask = torch.zeros(224, 224)
    assert changed_window(mask) is None
    mask[100:110, 50:70] = 0.3
    assert changed_window(mask, margin=2) == Window(98, 112, 48, 72)
    mask[0, 0] = 1
    assert changed_window(mask, margin=2) == Window(0, 112, 0, 72)


def test_backbones_without_stage_geometry_or_with_a_whole_face_mask_use_the_full_pass(dlib_backbone, vgg_backbone):
    small = torch.zeros(224, 224)
    small[120:160, 60:150] = 1
    for bb, mask in ((dlib_backbone, small[:150, :150]), (vgg_backbone, torch.ones(224, 224)),
                     (vgg_backbone, torch.zeros(224, 224))):
        assert bb.local_features(torch.rand(1, 3, *bb.input_size) * 255, mask, bb.taps[:1]) is None
    base = torch.rand(1, 3, 224, 224) * 255
    local = vgg_backbone.local_features(base, small, ["fc7"])
    assert local is not None
    with torch.no_grad():
        assert torch.allclose(local(base)["fc7"], vgg_backbone.features(base, ["fc7"])["fc7"], atol=1e-5)


def test_an_edit_through_the_window_is_the_same_edit(small_pair, vgg_backbone, monkeypatch):
    """fp32: the L-BFGS path and the result are the full pass's (float summation order aside)."""
    ref, guide = small_pair
    built = []
    original = api.build_problem

    def build(*args, local: bool, **kwargs):
        problem = original(*args, **kwargs)
        problem.local = local
        built.append(problem)
        return problem

    runs = {}
    for local in (False, True):
        monkeypatch.setattr(api, "build_problem", lambda *a, _l=local, **k: build(*a, local=_l, **k))
        runs[local] = edit(ref, guide=guide, backbone=vgg_backbone, precision="fp32", iterations=8)
    assert [p.local for p in built] == [False, True]
    mouth = built[1]
    base = to_network(mouth.init.clamp(0, 255), vgg_backbone.input_size)
    assert vgg_backbone.local_pass(base, mouth.network_mask, mouth.layers) is not None  # the window did run
    assert len(runs[True].history) == len(runs[False].history)
    assert np.allclose([h["total"] for h in runs[True].history], [h["total"] for h in runs[False].history],
                       rtol=1e-4)
    d = np.abs(runs[True].image - runs[False].image)
    assert d.max() <= 1.0


def test_layer_costs_count_the_windows(vgg_backbone):
    """The bench's roofline: a whole-input window costs the full pass, layer by layer, as the bench's hooks count
    it (multiply-adds, weights); a mouth-sized one a fraction of the arithmetic and all of the weights."""
    from engine.frontends.bench import layer_costs

    net = vgg_backbone.module
    x = torch.rand(1, 3, 224, 224) * 255
    full = layer_costs(net, x, ["fc7"])
    whole = LocalForward(net.stages(), net.stage_kinds(), net.normalise(x), Window(0, 224, 0, 224), ["fc7"])
    assert np.allclose(whole.layer_costs(), full)
    mouth = LocalForward(net.stages(), net.stage_kinds(), net.normalise(x), WINDOWS["mouth"], ["fc7"])
    whole_adds, mouth_adds = (sum(m for m, _ in local.layer_costs()) for local in (whole, mouth))
    assert whole_adds == pytest.approx(sum(m for m, _ in full))
    assert 0.2 * whole_adds < mouth_adds < 0.7 * whole_adds
    assert [w for _, w in mouth.layer_costs()] == [w for _, w in full]


@pytest.mark.skipif(not __import__("engine.models.packed_linear", fromlist=["x"]).packing_available(),
                    reason="this torch build cannot pack bf16 weights (no oneDNN bf16)")
def test_packed_linear_layers_give_nn_linears_outputs_and_input_gradient():
    """engine/models/packed_linear.py: large bf16 layers become PackedLinear and give nn.Linear's outputs (bit for
    bit: the same oneDNN product on another weight layout) and input gradient, with and without a transposed
    weight given; each packs once, at first use; small layers are left alone, other shapes take nn.Linear's path."""
    import copy

    from engine.models.packed_linear import PackedLinear, packed_linears, transposed_weights

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.ReLU(), torch.nn.Linear(200, 50)).bfloat16()
    for p in net.parameters():
        p.requires_grad_(False)
    given = copy.deepcopy(net)
    calls = []
    packed_linears(given, lambda: calls.append(1) or transposed_weights(given, large=20_000), large=20_000)
    own = packed_linears(copy.deepcopy(net), large=20_000)
    assert isinstance(given[0], PackedLinear) and type(given[2]) is torch.nn.Linear  # 60,000 vs 10,000
    x = torch.randn(1, 300, dtype=torch.bfloat16)
    up = torch.randn(1, 50, dtype=torch.bfloat16)

    def grad(module):
        xx = x.clone().requires_grad_(True)
        out = module(xx)
        out.backward(up)
        return out.detach(), xx.grad

    def close(a, b):  # another oneDNN kernel: equal here (AVX512-BF16), within a bf16 step on other CPUs
        return torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2)

    (a, ga) = grad(net)
    seen = []
    for fast in (given, own, given):  # `given` twice: packed once, reused
        b, gb = grad(fast)
        assert close(a, b) and close(ga, gb)
        if fast is given:
            seen.append((given[0].__dict__["_packed"], given[0].__dict__["_packed_t"]))
    assert seen[0][0] is seen[1][0] and seen[0][1] is seen[1][1]
    assert calls == [1] and "_transposed" not in given[0].__dict__
    with torch.no_grad():
        assert close(given(x), net(x))
        two = torch.randn(2, 300, dtype=torch.bfloat16)
        assert close(given(two), net(two))  # packed for one image, right for a batch too


@pytest.mark.skipif(not __import__("engine.models.packed_linear", fromlist=["x"]).packing_available(),
                    reason="this torch build cannot pack bf16 weights (no oneDNN bf16)")
def test_large_layers_are_packed_on_a_helper_thread_before_the_first_pass():
    """pack_in_background (a new process packs VGG-Face's fc6 / fc7 while it aligns the faces): every PackedLinear
    gets its W and W^T, the transposed weight from the loader given, and passes give what lazily packed layers give;
    with everything packed there is no thread to start."""
    import copy

    from engine.models.packed_linear import pack_in_background, packed_linears, transposed_weights

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.ReLU(), torch.nn.Linear(200, 150)).bfloat16()
    for p in net.parameters():
        p.requires_grad_(False)
    lazy = packed_linears(copy.deepcopy(net), large=20_000)
    calls = []
    early = copy.deepcopy(net)
    packed_linears(early, lambda: calls.append(1) or transposed_weights(early, large=20_000), large=20_000)
    thread = pack_in_background(early.modules())
    assert thread is not None
    thread.join(timeout=60)
    for layer in (early[0], early[2]):
        assert "_packed" in layer.__dict__ and "_packed_t" in layer.__dict__
    assert calls == [1] and pack_in_background(early.modules()) is None  # packed once: nothing left to do

    def grad(module):
        x = torch.linspace(-1, 1, 300, dtype=torch.bfloat16)[None].requires_grad_(True)
        out = module(x)
        out.backward(torch.ones_like(out))
        return out.detach(), x.grad

    (a, ga), (b, gb) = grad(lazy), grad(early)
    assert torch.equal(a, b) and torch.equal(ga, gb)


def test_the_bf16_copys_packed_layers_read_their_transposed_weights_from_the_user_cache(models_dir, tmp_path,
                                                                                       monkeypatch):
    """Backbone.module_bf16 with the size threshold lowered to the test network's fc6 / fc7: they are packed, the
    first backward pass writes the transposed copy (state_cache variant bf16-t), a new backbone's passes read it
    and give the same gradient, which is the unpacked bf16 network's (within a bf16 step on other CPUs)."""
    from engine.models import packed_linear
    from engine.models.backbone import load_backbone

    if not packed_linear.packing_available():
        pytest.skip("this torch build cannot pack bf16 weights (no oneDNN bf16)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(packed_linear, "LARGE", 1000)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(5)) * 255

    def input_gradient(bb):
        xx = x.clone().requires_grad_(True)
        bb.features(xx, ["fc7"])["fc7"].square().sum().backward()
        return xx.grad

    grads = []
    for _ in range(2):  # a cold cache, then a new backbone reading the copy
        bb = load_backbone("vggface", directory=models_dir, precision="bf16")
        assert isinstance(bb.module_bf16.fc6, packed_linear.PackedLinear)
        grads.append(input_gradient(bb))
        assert len(list((tmp_path / "face-attribute-transfer" / "weights").glob("*-bf16-t-v*.pt"))) == 1
    assert torch.equal(grads[0], grads[1])
    monkeypatch.setattr(packed_linear, "LARGE", 1 << 40)  # the same bf16 network, nothing packed
    plain = load_backbone("vggface", directory=models_dir, precision="bf16")
    assert type(plain.module_bf16.fc6) is torch.nn.Linear
    unpacked = input_gradient(plain)
    assert float((grads[0] - unpacked).norm() / unpacked.norm()) < 1e-2


def test_a_bf16_edit_packs_the_layers_its_taps_reach_while_it_aligns(models_dir, tmp_path, monkeypatch):
    """Backbone.start_packing (called by engine/api.py ready_backbone): a bf16 backbone on the CPU packs the large
    layers up to its deepest tap on a helper thread (fc6 and fc7 for the identity tap fc7, not fc8); taps that stop
    before them, or an fp32 backbone, pack nothing."""
    import threading

    from engine.models import packed_linear
    from engine.models.backbone import load_backbone

    if not packed_linear.packing_available():
        pytest.skip("this torch build cannot pack bf16 weights (no oneDNN bf16)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(packed_linear, "LARGE", 100)

    def packed_after(precision: str, taps: list[str]) -> list[str]:
        bb = load_backbone("vggface", directory=models_dir, precision=precision)
        bb.start_packing(taps)
        for thread in threading.enumerate():
            if thread.name == "pack-bf16-weights":
                thread.join(timeout=60)
        if "module_bf16" not in bb.__dict__:
            return []
        return [name for name, m in bb.module_bf16.named_modules()
                if isinstance(m, packed_linear.PackedLinear) and "_packed" in m.__dict__ and "_packed_t" in m.__dict__]

    assert packed_after("bf16", ["relu3_3", "fc7"]) == ["fc6", "fc7"]
    assert packed_after("bf16", ["relu3_3"]) == []
    assert packed_after("fp32", ["fc7"]) == []


def test_an_edit_starts_packing_before_it_reads_the_photos_unless_it_runs_no_pass(monkeypatch):
    """engine/api.py ready_backbone asks the backbone to pack (Backbone.start_packing) with the recipe's taps, before
    the photos are loaded and aligned; an edit of 0 iterations (the composite alone) runs no pass and packs nothing."""
    from engine import api
    from engine.objective.recipes import recipe_for
    from engine.options import EditOptions

    calls = []

    class Stub:
        name, onnx_path, precision = "vggface", "vggface.onnx", "fp32"

        def start_packing(self, taps):
            calls.append(sorted(taps))

    recipe = recipe_for("vggface")
    taps = sorted([*recipe.identity_layers, *recipe.attribute_layers])
    api.ready_backbone(EditOptions(), Stub(), recipe, lambda _m: None)
    assert calls == [taps]
    api.ready_backbone(EditOptions(iterations=0), Stub(), recipe, lambda _m: None)
    assert calls == [taps]
