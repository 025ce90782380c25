#!/usr/bin/env python3
"""Golden data for RITUAL's image transforms (vision/image_transforms.h, docs/modulation.md).

A torch reference written from torchvision.transforms.v2's uint8 tensor kernels (rotate_image with
nearest interpolation, adjust_brightness / contrast / saturation / hue, gaussian_blur), with torch
ops in the same order (grid_sample for the rotation, conv2d for the blur), since torchvision is not
installed where the goldens are made. Inputs are small hand-made images (a pseudo-random pattern with
grey, black and white pixels so every HSV branch runs). Writes tests/golden/image_transforms.safetensors:
  img_a U8 [5, 7, 3], img_sq U8 [6, 6, 3], img_b U8 [12, 16, 3]   inputs (H, W, C)
  <case>                                      U8 [H, W, 3]     outputs
Runs with torch alone: /usr/bin/python3 tools/golden/image_transforms.py
"""
import argparse, json, math, os, sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pruning import ROOT, write_safetensors  # noqa: E402


def pattern(h, w, seed):
    """A deterministic uint8 image [3, h, w] (LCG), with a grey, a black and a white pixel."""
    x, vals = seed, []
    for _ in range(3 * h * w):
        x = (1103515245 * x + 12345) % 2 ** 31
        vals.append((x >> 16) % 256)
    img = torch.tensor(vals, dtype=torch.uint8).view(3, h, w)
    img[:, 0, 0] = 128
    img[:, 1, 1] = 0
    img[:, h - 1, w - 1] = 255
    return img


# --- geometry (v2 rotate_image, nearest, expand False, centre None, fill 0) --------------------------

def rotate(img, angle):
    angle = angle % 360
    c, h, w = img.shape
    if angle == 0:
        return img.clone()
    if angle == 180:
        return torch.rot90(img, 2, dims=(-2, -1))
    if angle in (90, 270) and h == w:
        return torch.rot90(img, 1 if angle == 90 else 3, dims=(-2, -1))
    # inverse affine matrix of a rotation by -angle about (0, 0), no shear / scale / translation
    rot = math.radians(-angle)
    a, b, cc, d = math.cos(rot), -math.sin(rot), math.sin(rot), math.cos(rot)
    matrix = [d, -b, 0.0, -cc, a, 0.0]
    theta = torch.tensor(matrix, dtype=torch.float32).reshape(1, 2, 3)
    # the sampling grid: pixel offsets from the centre, theta applied, normalised by size / 2
    base = torch.empty(1, h, w, 3, dtype=torch.float32)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h).unsqueeze(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32)
    grid = base.view(1, h * w, 3).bmm(scaled).view(1, h, w, 2)
    x = torch.cat([img.to(torch.float32), torch.ones(1, h, w)], 0)[None]  # + the fill mask
    y = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
    out, mask = y[:3], y[3:].expand(3, h, w)
    out = torch.where(mask < 0.5, torch.zeros_like(out), out)
    return out.to(torch.uint8)


# --- colour (v2 _color.py kernels for uint8) -----------------------------------------------------

def blend(img, other, ratio):
    ratio = float(ratio)
    return img.mul(ratio).add_(other, alpha=1.0 - ratio).clamp_(0, 255).to(torch.uint8)


def grey_floor(img):
    r, g, b = img.unbind(0)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(0).floor_()


def brightness(img, f):
    return img.mul(f).clamp_(0, 255).to(torch.uint8)


def contrast(img, f):
    return blend(img, torch.mean(grey_floor(img), dim=(-3, -2, -1), keepdim=True), f)


def saturation(img, f):
    return blend(img, grey_floor(img), f)


def rgb_to_hsv(x):
    r, g, _ = x.unbind(0)
    minc, maxc = torch.aminmax(x, dim=0)
    eqc = maxc == minc
    rng = maxc - minc
    ones = torch.ones_like(maxc)
    s = rng / torch.where(eqc, ones, maxc)
    rc, gc, bc = ((maxc.unsqueeze(0) - x) / torch.where(eqc, ones, rng).unsqueeze(0)).unbind(0)
    hg = (rc + 2.0 - bc) * ((maxc == g) & (maxc != r))
    hr = (bc - gc) * (maxc == r)
    hb = (gc + 4.0 - rc) * ((maxc != r) & (maxc != g))
    h = (hr + hg + hb).mul_(1.0 / 6.0).add_(1.0).fmod_(1.0)
    return torch.stack((h, s, maxc), 0)


def hsv_to_rgb(x):
    h, s, v = x.unbind(0)
    h6 = h.mul(6)
    i = torch.floor(h6)
    f = h6 - i
    i = i.to(torch.int32).remainder(6)
    sxf = s * f
    oms = 1.0 - s
    q = (1.0 - sxf).mul_(v).clamp_(0.0, 1.0)
    t = (sxf + oms).mul_(v).clamp_(0.0, 1.0)
    p = (oms * v).clamp_(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), 0)
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], dtype=torch.long)[:, i.long()]
    return vpqt.gather(0, select)


def hue(img, f):
    x = img.to(torch.float32).mul_(1.0 / 255)
    hsv = rgb_to_hsv(x)
    h, s, v = hsv.unbind(0)
    h = h.add(f).remainder_(1.0)
    out = hsv_to_rgb(torch.stack((h, s, v), 0))
    return out.mul(255 + 1.0 - 1e-3).to(torch.uint8)


def color_jitter(img, order, b, c, s, h):
    fns = [lambda x: brightness(x, b), lambda x: contrast(x, c), lambda x: saturation(x, s), lambda x: hue(x, h)]
    for i in order:
        img = fns[i](img)
    return img


# --- blur (v2 gaussian_blur_image) ------------------------------------------------------------------

def blur(img, k, sigma):
    lim = (k - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=k, dtype=torch.float32)
    k1 = torch.softmax(x.div(sigma).pow(2).neg(), dim=0)
    k2 = (k1.unsqueeze(-1) * k1).expand(3, 1, k, k)
    y = F.pad(img.to(torch.float32)[None], [k // 2] * 4, mode="reflect")
    return F.conv2d(y, k2, groups=3)[0].round_().to(torch.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    a, sq, b = pattern(5, 7, 1), pattern(6, 6, 2), pattern(12, 16, 3)
    cases = {
        "hflip_a": a.flip(-1), "vflip_a": a.flip(-2),
        "rotate_a_30": rotate(a, 30.0), "rotate_a_m137_5": rotate(a, -137.5), "rotate_a_180": rotate(a, 180.0),
        "rotate_a_400": rotate(a, 400.0), "rotate_sq_90": rotate(sq, 90.0), "rotate_sq_m90": rotate(sq, -90.0),
        "rotate_sq_45": rotate(sq, 45.0),
        "brightness_a_1_37": brightness(a, 1.37), "brightness_a_0": brightness(a, 0.0),
        "contrast_a_0_61": contrast(a, 0.61), "contrast_a_1_9": contrast(a, 1.9),
        "saturation_a_1_8": saturation(a, 1.8), "saturation_a_0": saturation(a, 0.0),
        "hue_a_0_23": hue(a, 0.23), "hue_a_m0_41": hue(a, -0.41), "hue_a_0_5": hue(a, 0.5), "hue_sq_m0_5": hue(sq, -0.5),
        "jitter_a": color_jitter(a, [2, 0, 3, 1], 1.2, 0.7, 1.5, -0.2),
        "blur_b_13_1_7": blur(b, 13, 1.7), "blur_b_13_2_0": blur(b, 13, 2.0), "blur_b_3_0_8": blur(b, 3, 0.8),
    }
    out = {"img_a": a, "img_sq": sq, "img_b": b}
    for name, t in cases.items():
        out[name] = t
    out = {k: v.permute(1, 2, 0).contiguous() for k, v in out.items()}  # HWC as mmattn's Image
    path = os.path.join(args.out, "image_transforms.safetensors")
    write_safetensors(path, out, {"meta": json.dumps({"spec": "vision/image_transforms.h; tools/golden/image_transforms.py",
                                                      "torch": torch.__version__})})
    print("wrote %s (%d tensors)" % (path, len(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
