"""Coarse class logits -> per-pixel logits, guided by the image.

Why: a CLIP ViT-B/16 open-vocabulary segmenter scores classes on a 1/16 grid (14x14 for a 224
window). Bilinear upsampling puts every class edge somewhere in a 16-32 px wide ramp; the image
knows where the edge really is. Two classic, training-free ways to move the edge onto the image's
edge are implemented here in plain torch (CPU and GPU, no extra dependency):

- "guided": the guided filter of He, Sun and Tang (ECCV 2010 / TPAMI 2013) applied to the bilinear
  upsample: inside every (2r+1)² window the output is an affine function of the guide, fitted to
  the logits by ridge regression (eps is the ridge). Box sums are separable `avg_pool2d` passes, so
  the cost does not grow with r²; `subsample` is the "fast guided filter" (He and Sun 2015): the
  regression is fitted at 1/s resolution and its coefficients upsampled, which loses almost nothing
  here because the input is itself a smooth upsample.
- "jbu": joint bilateral upsampling (Kopf et al., SIGGRAPH 2007): each output pixel is a weighted
  mean of the coarse cells around it, with a spatial Gaussian (in coarse cells) times a range
  Gaussian comparing the pixel's guide value with the cell's mean guide value.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

METHODS = ("bilinear", "guided", "jbu")


def upsample_logits(coarse: torch.Tensor, guide: torch.Tensor, method: str = "jbu", **options: Any) -> torch.Tensor:
    """Upsample class logits [K,h,w] or [B,K,h,w] to the guide's size: returns [B,K,H,W] float.

    `guide` is the image, [B,C,H,W] (or [C,H,W]) in 0..1 (any number of bands; 1 = grey). `options`
    go to the method: guided_upsample(radius, eps, subsample), joint_bilateral_upsample(radius,
    sigma_spatial, sigma_range). Logits stay logits: the filters are linear (guided) or convex
    (jbu) combinations of logit values, so the argmax can be read off directly.
    """
    coarse, guide = _batched(coarse, guide)
    if method == "bilinear":
        if options:
            raise TypeError(f"bilinear takes no options, got {sorted(options)}")
        return bilinear(coarse, guide.shape[-2:])
    if method == "guided":
        return guided_upsample(coarse, guide, **options)
    if method == "jbu":
        return joint_bilateral_upsample(coarse, guide, **options)
    raise ValueError(f"unknown upsampling method {method!r}; expected one of {', '.join(METHODS)}")


def _batched(coarse: torch.Tensor, guide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if guide.dim() == 3:
        guide = guide[None]
    if coarse.dim() == 3:
        coarse = coarse[None].expand(guide.shape[0], -1, -1, -1)
    if coarse.dim() != 4 or guide.dim() != 4:
        raise ValueError(f"expected coarse [K,h,w] or [B,K,h,w] and guide [B,C,H,W]; got {tuple(coarse.shape)} "
                         f"and {tuple(guide.shape)}")
    if coarse.shape[0] != guide.shape[0]:
        raise ValueError(f"batch sizes differ: logits {coarse.shape[0]}, guide {guide.shape[0]}")
    dtype = coarse.dtype if coarse.dtype.is_floating_point else torch.float32
    return coarse.to(dtype), guide.to(device=coarse.device, dtype=dtype)


def bilinear(coarse: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """The baseline (and the first step of "guided"): torch's bilinear, half-pixel centres."""
    return F.interpolate(coarse, size=tuple(size), mode="bilinear", align_corners=False)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)² window around each pixel of [N,C,H,W], windows clipped at the border.

    Two separable avg_pool2d passes with count_include_pad=False: exact per-pixel counts at the
    borders, O(r) per pixel, and no large cumulative sums (which lose float32 precision at 512²).
    """
    if radius <= 0:
        return x
    k = 2 * radius + 1
    x = F.avg_pool2d(x, (k, 1), stride=1, padding=(radius, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, k), stride=1, padding=(0, radius), count_include_pad=False)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int = 8, eps: float = 1e-3,
                  subsample: int = 1) -> torch.Tensor:
    """He et al.'s guided filter of src [B,K,H,W] by guide [B,C,H,W] (C=1 grey, C>1 colour).

    Each class map is filtered separately; the guide's per-window covariance (CxC) is shared by all
    classes. Large eps -> a ~ 0 -> plain box smoothing of src; small eps -> edges follow the guide.
    `subsample` > 1 fits the coefficients at 1/subsample resolution (the fast guided filter).
    """
    full_guide = guide
    if subsample > 1:
        low = (max(1, round(guide.shape[-2] / subsample)), max(1, round(guide.shape[-1] / subsample)))
        guide = F.interpolate(guide, size=low, mode="bilinear", align_corners=False, antialias=True)
        src = F.interpolate(src, size=low, mode="bilinear", align_corners=False, antialias=True)
        radius = max(1, round(radius / subsample))
    b, k, h, w = src.shape
    c = guide.shape[1]
    mean_i = box_mean(guide, radius)                                            # [B,C,h,w]
    mean_p = box_mean(src, radius)                                              # [B,K,h,w]
    # cov(I_c, p_k) for every band/class pair, as one pooled tensor
    prod = (guide[:, None] * src[:, :, None]).reshape(b, k * c, h, w)
    cov_ip = box_mean(prod, radius).reshape(b, k, c, h, w) - mean_i[:, None] * mean_p[:, :, None]
    if c == 1:
        var_i = box_mean(guide * guide, radius) - mean_i * mean_i               # [B,1,h,w]
        a = cov_ip[:, :, 0] / (var_i + eps)                                     # [B,K,h,w]
        bias = mean_p - a * mean_i
        mean_a, mean_b = box_mean(a, radius), box_mean(bias, radius)
        if subsample > 1:
            mean_a, mean_b = _resize(mean_a, full_guide), _resize(mean_b, full_guide)
        return mean_a * full_guide + mean_b
    # colour guide: a = (Sigma + eps*I)^-1 cov_Ip, Sigma the CxC covariance of the guide in the window
    pairs = (guide[:, :, None] * guide[:, None]).reshape(b, c * c, h, w)
    sigma = box_mean(pairs, radius).reshape(b, c, c, h, w) - mean_i[:, :, None] * mean_i[:, None]
    sigma = sigma.permute(0, 3, 4, 1, 2) + eps * torch.eye(c, dtype=src.dtype, device=src.device)
    cov = cov_ip.permute(0, 3, 4, 2, 1)                                         # [B,h,w,C,K]
    a = torch.linalg.solve(sigma, cov).permute(0, 4, 3, 1, 2)                   # [B,K,C,h,w]
    bias = mean_p - (a * mean_i[:, None]).sum(2)
    mean_a = box_mean(a.reshape(b, k * c, h, w), radius)
    mean_b = box_mean(bias, radius)
    if subsample > 1:
        mean_a, mean_b = _resize(mean_a, full_guide), _resize(mean_b, full_guide)
    hh, ww = full_guide.shape[-2:]
    return (mean_a.reshape(b, k, c, hh, ww) * full_guide[:, None]).sum(2) + mean_b


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def guided_upsample(coarse: torch.Tensor, guide: torch.Tensor, radius: int | None = None, eps: float = 1e-3,
                    subsample: int | None = None) -> torch.Tensor:
    """Bilinear upsample, then the guided filter.

    radius defaults to a quarter of the upsampling factor (4 px for CLIP ViT-B/16). A radius that
    spans the whole bilinear ramp (16) sounds right but measured badly: the filter's box means
    erase objects narrower than the window (see docs/refinement.md). subsample defaults to
    radius // 4 (the fast guided filter), 1 for the default radius.
    """
    coarse, guide = _batched(coarse, guide)
    factor = max(guide.shape[-2] / coarse.shape[-2], guide.shape[-1] / coarse.shape[-1])
    radius = max(1, round(factor / 4)) if radius is None else radius
    subsample = max(1, radius // 4) if subsample is None else subsample
    return guided_filter(guide, bilinear(coarse, guide.shape[-2:]), radius, eps, subsample)


def joint_bilateral_upsample(coarse: torch.Tensor, guide: torch.Tensor, radius: int = 1,
                             sigma_spatial: float = 0.35, sigma_range: float = 0.2) -> torch.Tensor:
    """Kopf et al.'s joint bilateral upsampling of coarse [B,K,h,w] to the guide [B,C,H,W].

    out(p) = sum_q f(|p' - q|) g(|I(p) - Ī(q)|) L(q) / sum_q f g, over the (2 radius+1)² coarse cells
    q around p' (p in coarse coordinates); f is Gaussian in coarse cells (sigma_spatial), g Gaussian
    in guide units (sigma_range, on the band-mean squared difference), Ī(q) the guide averaged
    over the cell. The window is walked offset by offset rather than unfolded: peak memory is a
    few [B,K+C,H,W] tensors whatever the radius (an unfold at 512² with 20 classes and radius 2
    would hold 25 x 21 x 512² floats, 550 MB).

    Defaults, from the study: sigma_spatial 0.35 cells keeps a cell's own value dominant (a wider
    Gaussian, e.g. Kopf's ~1 cell, averages small objects away: IoU of buildings fell from 0.65 to
    0.2); at that width cells 2 away weigh < 1e-4, so radius 1 (3x3 cells) gives the same numbers
    as radius 2 in 9 passes instead of 25. sigma_range 0.2 acts on strong contrast only.
    """
    coarse, guide = _batched(coarse, guide)
    b, k, h, w = coarse.shape
    hh, ww = guide.shape[-2:]
    cell_guide = F.adaptive_avg_pool2d(guide, (h, w))                          # Ī: what each cell saw
    dev, dt = coarse.device, coarse.dtype
    ys = (torch.arange(hh, device=dev, dtype=dt) + 0.5) * (h / hh) - 0.5      # pixel centres, coarse units
    xs = (torch.arange(ww, device=dev, dtype=dt) + 0.5) * (w / ww) - 0.5
    cy, cx = ys.round().long(), xs.round().long()
    num = torch.zeros(b, k, hh, ww, device=dev, dtype=dt)
    den = torch.zeros(b, 1, hh, ww, device=dev, dtype=dt)
    two_ss, two_sr = 2 * sigma_spatial ** 2, 2 * sigma_range ** 2
    for dy in range(-radius, radius + 1):
        qy = cy + dy
        valid_y = (qy >= 0) & (qy < h)
        qy_c = qy.clamp(0, h - 1)
        wy = torch.exp(-((ys - qy) ** 2) / two_ss) * valid_y                   # [H]
        rows_l, rows_g = coarse[:, :, qy_c], cell_guide[:, :, qy_c]            # [B,*,H,w]
        for dx in range(-radius, radius + 1):
            qx = cx + dx
            valid_x = (qx >= 0) & (qx < w)
            qx_c = qx.clamp(0, w - 1)
            wx = torch.exp(-((xs - qx) ** 2) / two_ss) * valid_x               # [W]
            diff = ((guide - rows_g[..., qx_c]) ** 2).mean(1, keepdim=True)    # [B,1,H,W]
            weight = torch.exp(-diff / two_sr).clamp_min(1e-6) * (wy[:, None] * wx[None, :])
            num += weight * rows_l[..., qx_c]
            den += weight
    return num / den.clamp_min(1e-12)
