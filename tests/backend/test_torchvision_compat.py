"""Tests for rsseg.compat.torchvision_ops (the torchvision shim for a CPU-only torch).

Importing torchvision and registering operators are process-global, so everything that imports
torchvision runs in a fresh interpreter (sys.executable); this process only imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

ENSURE = "from rsseg.compat import ensure_torchvision\nmode = ensure_torchvision()\n"


def run_python(code: str, ensure: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter, after `mode = ensure_torchvision()` unless ensure=False."""
    code = (ENSURE if ensure else "") + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(f"subprocess failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def last_json(proc: subprocess.CompletedProcess):
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def libs() -> dict:
    """One fresh interpreter: ensure twice, import the model libraries, run a tiny open_clip CLIP."""
    return last_json(run_python("""
        import json, time
        from rsseg.compat import torchvision_mode
        t = time.perf_counter()
        again = ensure_torchvision()
        second_call_s = time.perf_counter() - t
        import torchvision, open_clip, timm, segment_anything
        import torch
        torch.manual_seed(0)
        model = open_clip.model.CLIP(
            embed_dim=32,
            vision_cfg=dict(layers=1, width=64, patch_size=16, image_size=32, head_width=32),
            text_cfg=dict(context_length=8, vocab_size=100, width=32, heads=2, layers=1),
        ).eval()
        with torch.no_grad():
            image_features, text_features, _ = model(torch.rand(2, 3, 32, 32), torch.randint(0, 100, (2, 8)))
        print(json.dumps({"mode": mode, "again": again, "reported": torchvision_mode(),
                          "second_call_s": second_call_s, "tv": torchvision.__version__,
                          "image": list(image_features.shape), "text": list(text_features.shape),
                          "norm": image_features.norm(dim=-1).tolist()}))
    """))


def test_import_fails_without_shim(libs):
    if libs["mode"] == "native":
        pytest.skip("this machine has a matching torch+torchvision pair: plain `import torchvision` works")
    proc = run_python("import torchvision", ensure=False, check=False)
    assert proc.returncode != 0
    assert "torchvision::nms" in proc.stderr


def test_mode_is_cpu_fallback_here(libs):
    if libs["mode"] == "native":
        pytest.skip("this machine has a matching torch+torchvision pair (mode 'native')")
    assert libs["mode"] == "cpu-fallback"


def test_model_libraries_import_after_ensure(libs):
    assert libs["mode"] in ("native", "cpu-fallback")
    assert libs["tv"]


def test_ensure_twice_is_cheap_and_stable(libs):
    assert libs["again"] == libs["reported"] == libs["mode"]
    assert libs["second_call_s"] < 0.01


def test_tiny_open_clip_model_forward(libs):
    assert libs["image"] == [2, 32] and libs["text"] == [2, 32]
    assert libs["norm"] == pytest.approx([1.0, 1.0], abs=1e-5)  # CLIP normalises its embeddings


def reference_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Greedy NMS written out plainly: in decreasing score order, keep a box unless a box kept
    before it overlaps it with IoU > thr."""
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if keep:
            kept = boxes[keep]
            w = np.clip(np.minimum(kept[:, 2], boxes[i, 2]) - np.maximum(kept[:, 0], boxes[i, 0]), 0, None)
            h = np.clip(np.minimum(kept[:, 3], boxes[i, 3]) - np.maximum(kept[:, 1], boxes[i, 1]), 0, None)
            inter = w * h
            area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
            if np.any(inter / (area(kept) + area(boxes[i]) - inter) > thr):
                continue
        keep.append(int(i))
    return keep


def reference_batched_nms(boxes, scores, idxs, thr) -> list[int]:
    keep = []
    for c in np.unique(idxs):
        members = np.flatnonzero(idxs == c)
        keep += [int(members[k]) for k in reference_nms(boxes[members], scores[members], thr)]
    return sorted(keep, key=lambda i: -scores[i])


def random_boxes(rng: np.random.Generator, n: int):
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(1, 30, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    boxes[n // 2 : n // 2 + 5] = boxes[:5]  # a few exact duplicates (IoU 1)
    scores = rng.permutation(n) / n + rng.uniform(0, 1e-3, n) / n  # distinct: no ties
    assert len(np.unique(scores)) == n
    return boxes, scores


THRESHOLDS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.95)


@pytest.fixture(scope="module")
def nms_cases():
    rng = np.random.default_rng(20240611)
    cases = []
    # 200 boxes: batched_nms uses the coordinate trick; 1500 boxes: the per-class loop (CPU > 4000 numbers)
    for n, classes in ((1, 1), (50, 3), (200, 4), (1500, 5)):
        boxes, scores = random_boxes(rng, n)
        cases.append((boxes, scores, rng.integers(0, classes, n)))
    return cases


@pytest.fixture(scope="module")
def ops(nms_cases, tmp_path_factory) -> dict:
    """One fresh interpreter: torchvision ops and transforms after ensure_torchvision()."""
    path = tmp_path_factory.mktemp("nms") / "cases.pt"
    torch.save([tuple(torch.from_numpy(a) for a in case) for case in nms_cases], path)
    return last_json(run_python(f"""
        import json, warnings, torch, torchvision
        import torchvision.transforms.functional as F
        from torchvision import transforms
        from torchvision.ops import batched_nms, nms, roi_align
        out = {{"nms": []}}
        for boxes, scores, idxs in torch.load({str(path)!r}):
            for thr in {THRESHOLDS!r}:
                k, k32 = nms(boxes, scores, thr), nms(boxes.float(), scores.float(), thr)
                kb = batched_nms(boxes, scores, idxs, thr)
                assert k.dtype == k32.dtype == kb.dtype == torch.int64
                out["nms"].append([k.tolist(), k32.tolist(), kb.tolist()])
        empty = nms(torch.empty(0, 4), torch.empty(0), 0.5)
        out["empty"] = [list(empty.shape), str(empty.dtype)]

        boxes, scores = torch.load({str(path)!r})[2][:2]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensor creation is deprecated in torch
            qb = torch.quantize_per_tensor(boxes.float(), 0.25, 2, torch.quint8)
            qs = torch.quantize_per_tensor(scores.float(), 0.01, 0, torch.quint8)
        out["qnms_same"] = nms(qb, qs, 0.4).tolist() == nms(qb.dequantize(), qs.dequantize(), 0.4).tolist()

        feat = torch.arange(64.0).reshape(1, 1, 8, 8)
        rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
        out["pooled"] = roi_align(feat, rois, output_size=2, aligned=True).flatten().tolist()

        small = F.resize(torch.rand(3, 40, 50), [20, 25], antialias=True)
        out["resized"] = list(small.shape)
        out["normalized_finite"] = bool(transforms.Normalize([0.5] * 3, [0.25] * 3)(small).isfinite().all())

        # torchvision already imported: clear the cached mode to reach the "only report" path
        import rsseg.compat.torchvision_ops as shim
        shim._mode = None
        out["mode"], out["mode_when_imported_first"] = mode, shim.ensure_torchvision()
        print(json.dumps(out))
    """))


def test_nms_and_batched_nms_match_reference(ops, nms_cases):
    results = iter(ops["nms"])
    for boxes, scores, idxs in nms_cases:
        for thr in THRESHOLDS:
            keep, keep32, keep_batched = next(results)
            expected = reference_nms(boxes, scores, thr)
            assert keep == expected, f"nms n={len(boxes)} thr={thr}"
            assert keep32 == expected, f"float32 nms n={len(boxes)} thr={thr}"
            assert keep_batched == reference_batched_nms(boxes, scores, idxs, thr), f"batched n={len(boxes)}"
    assert ops["empty"] == [[0], "torch.int64"]
    # the cases really exercise suppression
    assert len(reference_nms(*nms_cases[-1][:2], 0.3)) < len(nms_cases[-1][0]) // 2


def test_quantized_nms(ops):
    assert ops["qnms_same"]


def test_roi_align(ops):
    # aligned 2x2 pooling of the top-left 4x4 pixels of the ramp 8*y + x: each bin averages the
    # 2x2 pixel centres of its quadrant
    assert ops["pooled"] == pytest.approx([4.5, 6.5, 20.5, 22.5])


def test_transforms_resize_on_tensor(ops):
    assert ops["resized"] == [3, 20, 25] and ops["normalized_finite"]


def test_mode_reported_when_torchvision_was_imported_first(ops):
    assert ops["mode_when_imported_first"] == ops["mode"]
