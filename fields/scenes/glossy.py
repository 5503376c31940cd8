"""The built-in glossy scene (``SceneSpec(name="glossy")``): shiny objects whose exact
geometry is known, for surfaces from images where reflections break multi-view consistency
(Ref-NeuS's problem).

On the tabletop's table (a polished dark wood, checkerboard of two close tones, Fresnel
reflectance 12% head-on rising to 100% at grazing angles, Schlick's approximation):

- a chrome-like sphere (base reflectance 0.8, a warm tint) in front;
- a glossy blue capsule standing upright (base reflectance 0.35);
- the tabletop's upright hue torus and striped box (diffuse), so that the shiny surfaces
  reflect textured objects, not only the sky.

A reflective surface's colour is ``(1 - F) diffuse + F tint L(r)``, with r the view direction
mirrored about the normal and L(r) one bounce: the diffuse shading of the first surface a
secondary ray meets, or an environment (a sky gradient, a sun at the key light, a band of
coloured blocks on the horizon, a dark ground) when it meets nothing. The images are in the
Blender format like the tabletop's (RGB on white plus alpha), so masks come with them.

``SceneSpec(name="shiny")`` is the same scene on a matte table: the tabletop's high-contrast
checkerboard, without reflection, so that the only multi-view inconsistency left is the
reflections of the sphere and the capsule (on the polished table, the low-contrast dark wood
leaves the table top between the objects weakly constrained, an error of its own).

``SceneSpec(name="chrome")`` is the shiny scene with a mirror-like rounded box (`CHROME_BOX`,
base reflectance 0.9, a near-black diffuse colour) in place of the sphere: flat mirrors, which
the silhouettes do not pin down as they do a sphere (`chrome_sdf`).
"""

from __future__ import annotations

import math

import torch

from fields.scenes.shading import CHECKER, LIGHT, TABLE_TOP, first_hits, solid_noise

SPHERE = (-0.3, -0.3, TABLE_TOP + 0.36)
CAPSULE = ((-0.5, 0.45, TABLE_TOP + 0.16), (-0.5, 0.45, TABLE_TOP + 0.62), 0.16)
TORUS = (0.32, 0.2, TABLE_TOP + 0.36)
BOX_CENTRE = (0.45, -0.5, TABLE_TOP + 0.17)
CHROME_BOX = ((0.28, 0.28, 0.28), (-0.3, -0.3, TABLE_TOP + 0.28), 0.04, 0.6)
# per object (table, sphere, capsule, torus, box): base reflectance and reflection tint
REFLECTANCE = torch.tensor([0.12, 0.8, 0.35, 0.0, 0.0])
# the `chrome` scene's (table, chrome box, capsule, torus, box)
CHROME_REFLECTANCE = torch.tensor([0.0, 0.9, 0.35, 0.0, 0.0])
TINT = torch.tensor([[1.0, 1.0, 1.0], [0.95, 0.85, 0.65], [0.9, 0.95, 1.0],
                     [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])


def glossy_sdf(p: torch.Tensor, chrome: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed distance (P,) of the glossy scene and the id (P,) of the nearest object
    (0 table, 1 sphere, 2 capsule, 3 torus, 4 box); `chrome`: the `chrome` scene, whose
    object 1 is a mirror-like box instead of the sphere."""
    from fields.scenes.shapes import box, capsule, sphere, torus

    half, centre, rounding, yaw = CHROME_BOX
    parts = [
        box((0.95, 0.95, 0.12), (0.0, 0.0, TABLE_TOP - 0.12), rounding=0.04)(p),
        box(half, centre, rounding=rounding, yaw=yaw)(p) if chrome else sphere(0.36, SPHERE)(p),
        capsule(*CAPSULE)(p),
        torus(0.3, 0.055, TORUS, axis=1)(p),
        box((0.17, 0.17, 0.17), BOX_CENTRE, rounding=0.015, yaw=0.5)(p),
    ]
    dist, obj = torch.stack(parts, dim=-1).min(dim=-1)
    return dist, obj


def chrome_sdf(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`glossy_sdf` of the `chrome` scene (object 1 the mirror-like box)."""
    return glossy_sdf(p, chrome=True)


def glossy_albedo(p: torch.Tensor, obj: torch.Tensor, matte_table: bool = False,
                  chrome: bool = False) -> torch.Tensor:
    """Diffuse colour (P, 3) of surface points p (P, 3) on objects obj (P,); `matte_table`:
    the tabletop's light checkerboard instead of the polished dark wood; `chrome`: object 1
    is the `chrome` scene's near-black mirror box."""
    x, y, z = p.unbind(-1)
    check = ((torch.floor(x * 4.2) + torch.floor(y * 4.2)) % 2).bool()
    if matte_table:
        table = torch.where(check[:, None], torch.tensor(CHECKER[0]), torch.tensor(CHECKER[1]))
    else:
        grain = 0.85 + 0.3 * solid_noise(p, 17.0, 3)  # wood-like variation, for stereo
        table = torch.where(check[:, None], torch.tensor([0.36, 0.24, 0.15]),
                            torch.tensor([0.26, 0.17, 0.1])) * grain[:, None]
    table = torch.where((z < TABLE_TOP - 0.03)[:, None], torch.tensor([0.25, 0.25, 0.3]), table)
    sphere = torch.tensor([0.06, 0.06, 0.07] if chrome else [0.25, 0.22, 0.2]).expand_as(p)
    capsule = torch.tensor([0.12, 0.25, 0.7]).expand_as(p)
    qt = p - torch.tensor(TORUS)
    ang = torch.atan2(qt[:, 2], qt[:, 0])
    torus = torch.stack((0.5 + 0.4 * torch.cos(ang), 0.5 + 0.4 * torch.cos(ang + 2.1),
                         0.5 + 0.4 * torch.cos(ang + 4.2)), -1)
    qb = p - torch.tensor([BOX_CENTRE[0], BOX_CENTRE[1], 0.0])
    u = math.cos(0.5) * qb[:, 0] + math.sin(0.5) * qb[:, 1]
    stripe = (torch.floor(u / 0.06) % 2).bool()
    box = torch.where(stripe[:, None], torch.tensor([0.95, 0.95, 0.92]),
                      torch.tensor([0.15, 0.3, 0.6]))
    box = torch.where((z > TABLE_TOP + 0.33)[:, None], torch.tensor([0.3, 0.7, 0.35]), box)
    out = torch.zeros_like(p)
    for i, colour in enumerate((table, sphere, capsule, torus, box)):
        out = torch.where((obj == i)[:, None], colour, out)
    return out


def environment(r: torch.Tensor) -> torch.Tensor:
    """Radiance (R, 3) from far away in unit directions r (R, 3): sky, sun, horizon blocks,
    ground."""
    z = r[:, 2]
    up = z.clamp(0, 1)[:, None]
    sky = torch.tensor([0.95, 0.9, 0.8]) * (1 - up) + torch.tensor([0.35, 0.55, 0.95]) * up
    ground = torch.tensor([0.3, 0.27, 0.22]).expand_as(sky)
    out = torch.where((z < 0)[:, None], ground, sky)
    az = torch.atan2(r[:, 1], r[:, 0])
    block = (z > -0.05) & (z < 0.12 + 0.08 * torch.cos(3 * az)) & (torch.cos(7 * az) > 0.2)
    hue = torch.floor((az + math.pi) * 7 / (2 * math.pi)).long() % 3
    colours = torch.tensor([[0.8, 0.25, 0.2], [0.2, 0.6, 0.3], [0.95, 0.8, 0.25]])[hue]
    out = torch.where(block[:, None], colours, out)
    sun = (r @ LIGHT.to(r.device)).clamp_min(0) ** 300 * 4.0
    return out + sun[:, None]


def _diffuse(p: torch.Tensor, n: torch.Tensor, obj: torch.Tensor, matte_table: bool,
             chrome: bool = False) -> torch.Tensor:
    lambert = (n @ LIGHT.to(n.device)).clamp_min(0)
    sky = 0.5 + 0.5 * n[:, 2]
    light = 0.22 + 0.18 * sky[:, None] + 0.62 * lambert[:, None]
    return glossy_albedo(p, obj, matte_table, chrome) * light


def shade(origins: torch.Tensor, dirs: torch.Tensor, background: torch.Tensor,
          texture: float = 0.0, matte_table: bool = False, chrome: bool = False
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour (R, 3) and coverage (R,) of rays through the glossy scene (one reflection
    bounce; `texture` is accepted for the tabletop's signature and unused); `matte_table`:
    the `shiny` scene, whose table is the tabletop's checkerboard and reflects nothing;
    `chrome`: the `chrome` scene (a mirror box for the sphere, on the matte table)."""
    sdf = chrome_sdf if chrome else glossy_sdf
    matte_table = matte_table or chrome
    hit, p, obj, n = first_hits(sdf, origins, dirs)
    rgb = background.expand(origins.shape[0], 3).clone()
    if hit.any():
        d = dirs[hit]
        diffuse = _diffuse(p, n, obj, matte_table, chrome)
        cos = (-(n * d).sum(-1)).clamp(0, 1)
        k = (CHROME_REFLECTANCE if chrome else REFLECTANCE).to(p.device)[obj]
        if matte_table:
            k = torch.where(obj == 0, torch.zeros_like(k), k)
        fresnel = torch.where(k > 0, k + (1 - k) * (1 - cos) ** 5, torch.zeros_like(k))
        shiny = fresnel > 0
        colour = diffuse
        if shiny.any():
            ns, ds = n[shiny], d[shiny]
            r = ds - 2 * (ds * ns).sum(-1, keepdim=True) * ns
            hit2, q, obj2, n2 = first_hits(sdf, p[shiny] + 3e-3 * ns, r, 120, 4.0)
            incoming = environment(r)
            if hit2.any():
                incoming[hit2] = _diffuse(q, n2, obj2, matte_table, chrome)
            f = fresnel[shiny, None]
            colour = colour.clone()
            colour[shiny] = (1 - f) * diffuse[shiny] + f * TINT.to(p.device)[obj[shiny]] * incoming
        rgb[hit] = colour.clamp(0, 1)
    return rgb, hit.float()
