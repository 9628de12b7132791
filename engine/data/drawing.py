"""One procedural synthetic chest X-ray: :func:`render` draws it.

The drawing is a posterior-anterior chest radiograph from simple geometry:
a soft-tissue thorax on a dark background, two dark lung fields cut at the
bottom by the diaphragm domes, curved rib bands, clavicles, the spine and
mediastinum, and the heart shadow to the image right of centre (the patient's
left). Class ``covid`` adds bilateral, peripheral, lower-zone ground-glass
opacities; class ``normal`` has none.

A patient seed decides the anatomy, habitual pose and disease, so that images
drawn with one patient seed are views of one patient; the image's own seed
decides its pose jitter, exposure and noise. Each simulated hospital
(:data:`SOURCES`) has its own exposure, noise and blur style and a burnt-in
side marker. ``engine.data.synthetic`` writes data sets of these images.

Only numpy, Pillow and the standard library are imported: this module runs in
spawned worker processes, which must start fast and must never load TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter

CLASSES = ("covid", "normal")
SOURCES = ("siteA", "siteB", "siteC")
# The grid that slowly varying layers (textures, hila, opacities) are drawn on
# before being upsampled: they have no detail finer than this.
_COARSE = 64
# Densest ground-glass opacity, in attenuation units (lung air is about 0.4).
_OPACITY_CAP = 0.3
# Bitmaps of the side markers, one row a string.
_GLYPHS = {
    "R": ("###.", "#..#", "###.", "#.#.", "#..#"),
    "L": ("#...", "#...", "#...", "#...", "####"),
}


@dataclass(frozen=True)
class _Style:
    """How one source's images look.

    Attributes:
        exposure: Brightness offset added after the contrast stretch.
        contrast: Gain applied to the attenuation map.
        gamma: Exponent of the final tone curve (above 1 darkens mid-tones).
        noise: Standard deviation of the pixel noise, in units of full scale.
        blur: Gaussian blur radius in pixels at 299 px (scaled with the size).
        marker: Side-marker letter, or an empty string for none.
        corner: Marker corner as (row, column), each 0 (top/left) or 1.
    """

    exposure: float
    contrast: float
    gamma: float
    noise: float
    blur: float
    marker: str
    corner: tuple[int, int]


_STYLES = {
    "siteA": _Style(exposure=0.02, contrast=1.00, gamma=1.00, noise=0.022, blur=0.6,
                    marker="R", corner=(0, 0)),
    "siteB": _Style(exposure=0.07, contrast=0.85, gamma=0.85, noise=0.045, blur=0.3,
                    marker="L", corner=(0, 1)),
    "siteC": _Style(exposure=-0.02, contrast=1.12, gamma=1.20, noise=0.015, blur=1.1,
                    marker="", corner=(1, 1)),
}


@dataclass(frozen=True)
class _Anatomy:
    """One patient's body, in body coordinates (x right, y down, both in [-1, 1])."""

    body_w: float      # half width of the torso
    habitus: float     # soft-tissue density (thin to large patients)
    lung_top: float    # y of the lung apices
    lung_base: float   # y of the lateral costophrenic angles (image-left lung)
    left_drop: float   # how much lower the image-right hemidiaphragm sits
    lung_w: float      # width of each lung at its base
    gap: float         # half width of the mediastinum between the lungs
    dome_h: float      # height of the diaphragm domes
    heart_x: float
    heart_y: float
    heart_w: float
    heart_h: float
    heart_angle: float
    rib_top: float
    rib_span: float
    rib_count: float
    rib_spread: float  # how much wider the lower rib spaces are than the upper ones
    rib_curve: float
    rib_width: float   # rib thickness as a fraction of the rib period
    clavicle_y: float
    waves: np.ndarray  # (n, 4) plane waves of the lung texture: kx, ky, phase, weight


@dataclass(frozen=True)
class _Pose:
    """Where the body sits in the image: shift, rotation (radians) and scale."""

    dx: float
    dy: float
    angle: float
    scale: float


def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft inside indicator: 0 well outside (d < 0), 1 well inside, linear across ``width``."""
    r = d * (1.0 / width)
    r += 0.5
    # In place: these maps are full-size, and allocation is a large part of their cost.
    np.minimum(r, 1.0, out=r)
    np.maximum(r, 0.0, out=r)
    return r


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Draws one patient's anatomy."""
    n_waves = 24
    freq = rng.uniform(6.0, 22.0, n_waves)
    theta = rng.uniform(0.0, math.pi, n_waves)
    waves = np.stack([freq * np.cos(theta), freq * np.sin(theta),
                      rng.uniform(0.0, 2 * math.pi, n_waves),
                      rng.normal(0.0, 1.0, n_waves) / math.sqrt(n_waves)], axis=1)
    lung_top = rng.uniform(-0.74, -0.62)
    lung_base = rng.uniform(0.36, 0.52)
    return _Anatomy(
        body_w=rng.uniform(0.80, 0.94),
        habitus=rng.uniform(0.85, 1.15),
        lung_top=lung_top,
        lung_base=lung_base,
        left_drop=rng.uniform(0.01, 0.06),
        lung_w=rng.uniform(0.56, 0.66),
        gap=rng.uniform(0.07, 0.11),
        dome_h=rng.uniform(0.09, 0.16),
        heart_x=rng.uniform(0.16, 0.22),
        heart_y=lung_base - rng.uniform(0.15, 0.22),
        heart_w=rng.uniform(0.34, 0.4),
        heart_h=rng.uniform(0.22, 0.27),
        heart_angle=rng.uniform(0.3, 0.5),
        rib_top=lung_top - rng.uniform(0.02, 0.08),
        rib_span=rng.uniform(1.1, 1.3),
        rib_count=rng.uniform(8.5, 10.5),
        rib_spread=rng.uniform(0.15, 0.35),
        rib_curve=rng.uniform(0.6, 0.9),
        rib_width=rng.uniform(0.35, 0.5),
        clavicle_y=lung_top + rng.uniform(0.02, 0.1),
        waves=waves.astype(np.float32),
    )


def _sample_disease(rng: np.random.Generator) -> np.ndarray:
    """Draws a patient's ground-glass opacities.

    Returns:
        Array (n, 6) of Gaussian patches in lung coordinates (see :func:`_lung`):
        side (-1 image left, +1 image right), centre u (0 on the lung's centre
        line, 1 at its lateral edge), centre v (0 apex, 1 base), radius (as a
        fraction of the lung width), elongation (above 1: wider than tall) and
        density. Both lungs always get at least one patch: the pattern is
        bilateral.
    """
    # Overall severity: many patients are mild, a few are extensive. Even the
    # mildest haze is clearly visible at 75 px (peak density 0.23 or more before
    # saturation): with fainter opacities (version 1 of the set, from 0.06) an
    # InceptionV3 trained from scratch for the quick preset's 60 steps stayed
    # near chance, so its study showed nothing (benchmarks/RESULTS.md).
    severity = rng.beta(2.0, 2.2)
    patches = []
    for side in (-1.0, 1.0):
        for _ in range(1 + rng.poisson(1.0 + 2.0 * severity)):
            patches.append((
                side,
                rng.uniform(0.55, 1.0),                  # peripheral
                1.0 - 0.75 * rng.beta(1.2, 2.2),         # mostly lower zones
                rng.uniform(0.18, 0.32) * (0.8 + 0.8 * severity),
                rng.uniform(0.7, 1.5),
                (0.25 + 0.55 * severity) * rng.uniform(0.7, 1.2) + 0.1,
            ))
    return np.asarray(patches, dtype=np.float32)


def _sample_pose(rng: np.random.Generator) -> _Pose:
    """Draws a patient's habitual position in the image."""
    return _Pose(dx=rng.normal(0.0, 0.03), dy=rng.normal(0.02, 0.03),
                 angle=rng.normal(0.0, 0.04), scale=rng.uniform(0.9, 1.04))


def _jitter_pose(pose: _Pose, rng: np.random.Generator) -> _Pose:
    """Moves a patient slightly between views."""
    return _Pose(dx=pose.dx + rng.normal(0.0, 0.015), dy=pose.dy + rng.normal(0.0, 0.015),
                 angle=pose.angle + rng.normal(0.0, 0.02),
                 scale=pose.scale * rng.uniform(0.98, 1.02))


def _body_grid(size: int, pose: _Pose) -> tuple[np.ndarray, np.ndarray]:
    """Body coordinates (x, y) of every pixel centre of a ``size`` square image."""
    t = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(2.0 / size) - np.float32(1.0)
    x = t[None, :] - np.float32(pose.dx)
    y = t[:, None] - np.float32(pose.dy)
    c = np.float32(math.cos(pose.angle) / pose.scale)
    s = np.float32(math.sin(pose.angle) / pose.scale)
    return c * x + s * y, c * y - s * x


def _box(size: int, pose: _Pose, x0: float, x1: float, y0: float,
         y1: float) -> tuple[slice, slice]:
    """The pixel rows and columns covering the body-space rectangle [x0, x1] x [y0, y1].

    Structures that cover a small part of the image are drawn only inside
    their box, which saves most of their cost.
    """
    c, s = math.cos(pose.angle), math.sin(pose.angle)
    xs, ys = [], []
    for xb in (x0, x1):
        for yb in (y0, y1):
            xs.append(pose.dx + pose.scale * (c * xb - s * yb))
            ys.append(pose.dy + pose.scale * (s * xb + c * yb))

    def span(lo: float, hi: float) -> slice:
        first = min(size, max(0, math.floor((lo + 1.0) * size / 2.0 - 1.5)))
        last = min(size, max(0, math.ceil((hi + 1.0) * size / 2.0 + 1.5)))
        return slice(first, max(first, last))

    return span(min(ys), max(ys)), span(min(xs), max(xs))


def _diaphragm(xb: np.ndarray, a: _Anatomy, side: int) -> np.ndarray:
    """The y of one hemidiaphragm below each x: a dome highest a little medial of
    the lung's centre line, falling to the sharp lateral costophrenic angle."""
    base = a.lung_base + (a.left_drop if side > 0 else 0.0)
    d = (xb - side * (a.gap + 0.5 * a.lung_w)) * side
    w = (d + 0.1 * a.lung_w) * (1.0 / (0.62 * a.lung_w))
    return base - a.dome_h * np.clip(1.0 - w * w, 0.0, 1.0)


def _lung_box(size: int, pose: _Pose, a: _Anatomy, side: int) -> tuple[slice, slice]:
    """Pixel box holding one lung field, with a margin for its soft edge."""
    inner, outer = a.gap - 0.03, a.gap + 1.1 * a.lung_w
    x0, x1 = (inner, outer) if side > 0 else (-outer, -inner)
    return _box(size, pose, x0, x1, a.lung_top - 0.03, a.lung_base + a.left_drop + 0.06)


def _lung(xb: np.ndarray, yb: np.ndarray, a: _Anatomy, side: int,
          edge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One lung field.

    Args:
        xb: Body x coordinates.
        yb: Body y coordinates.
        a: The anatomy.
        side: -1 for the image-left lung (patient's right), +1 for the other.
        edge: Width of the soft border, in body units.

    Returns:
        (mask, u, v): the soft lung mask; u, the position across the lung
        (0 at the centre line, 1 at the lateral edge, negative medially); v, the
        position down the lung (0 at the apex, 1 at the costophrenic angle).
    """
    base = a.lung_base + (a.left_drop if side > 0 else 0.0)
    v = (yb - a.lung_top) * (1.0 / (base - a.lung_top))
    # A rounded apex (a half ellipse down to 40 % of the height), then sides that
    # widen slightly toward the base.
    vv = np.clip(v * 2.5, 0.0, 1.0)
    half = (0.5 * a.lung_w) * np.sqrt(vv * (2.0 - vv)) * (0.92 + 0.1 * np.clip(v, 0.0, 1.2))
    centre = side * (a.gap + 0.5 * a.lung_w)
    d = (xb - centre) * side
    u = d / (half + 1e-3)
    dome = _diaphragm(xb, a, side)
    mask = _ramp(np.minimum(np.minimum(half - np.abs(d), dome - yb), yb - a.lung_top), edge)
    return mask, u, v


def _ribs(xb: np.ndarray, yb: np.ndarray, a: _Anatomy, s: np.ndarray) -> np.ndarray:
    """Posterior ribs (arches that droop laterally) plus fainter anterior ribs."""
    # Posterior ribs rise a little from the spine, peak, then fall toward the flank.
    arch = s - 0.18
    yr = yb - a.rib_curve * arch * arch
    z = (yr - a.rib_top) * (1.0 / a.rib_span)
    # A quadratic phase: the rib period grows steadily toward the bases.
    zc = np.clip(z, 0.0, 1.0)
    phase = zc * (a.rib_count * (1.0 + a.rib_spread)) - (a.rib_count * a.rib_spread) * zc * zc
    t = phase - np.floor(phase) - 0.5
    k = 2.0 / a.rib_width
    posterior = np.clip(1.0 - (t * k) ** 2, 0.0, 1.0)
    posterior *= _ramp(z, 0.02) * _ramp(1.0 - z, 0.05)
    # Anterior ribs slope down toward the midline and fade where the costal
    # cartilage (invisible on X-ray) takes over.
    za = (yb + 0.5 * s - a.rib_top - 0.2) * (1.0 / a.rib_span)
    ta = a.rib_count * 0.7 * za
    ta = ta - np.floor(ta) - 0.5
    anterior = np.clip(1.0 - (ta * (k * 1.4)) ** 2, 0.0, 1.0)
    anterior *= _ramp(s - 0.3, 0.15) * _ramp(za, 0.05) * _ramp(0.8 - za, 0.1)
    return (posterior + 0.4 * anterior) * _ramp(s - 0.07, 0.03) * _ramp(a.body_w - 0.04 - s, 0.04)


def _clavicles(xb: np.ndarray, yb: np.ndarray, a: _Anatomy, s: np.ndarray) -> np.ndarray:
    """Both clavicles as thick soft segments, mirrored about the midline."""
    ax, ay = 0.07, a.clavicle_y
    bx, by = 0.62 * a.body_w, a.clavicle_y - 0.16
    dx, dy = bx - ax, by - ay
    t = np.clip(((s - ax) * dx + (yb - ay) * dy) * (1.0 / (dx * dx + dy * dy)), 0.0, 1.0)
    ex = s - ax - t * dx
    ey = yb - ay - t * dy
    # Bowed: lift the middle of the shaft.
    ey += 0.1 * t * (1.0 - t)
    # (r^2 - d^2) / 2r is the distance to the edge near the edge, without a sqrt.
    radius = 0.028
    return _ramp((radius * radius - ex * ex - ey * ey) * (0.5 / radius), 0.012)


def _heart(xb: np.ndarray, yb: np.ndarray, a: _Anatomy, edge: float) -> np.ndarray:
    """The heart shadow: a tilted ellipse, denser toward its middle."""
    c, s = math.cos(a.heart_angle), math.sin(a.heart_angle)
    dx = xb - a.heart_x
    dy = yb - a.heart_y
    p = (c * dx + s * dy) * (1.0 / a.heart_w)
    q = (c * dy - s * dx) * (1.0 / a.heart_h)
    r2 = p * p + q * q
    return _ramp((1.0 - r2) * (0.5 * a.heart_h), edge) * (1.0 - 0.3 * np.minimum(r2, 1.0))


def _coarse_layers(size: int, a: _Anatomy, pose: _Pose,
                   disease: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The slowly varying layers, drawn on a coarse grid and upsampled.

    Returns:
        (texture, opacity) at full size, as attenuation: ``texture`` is lung
        markings and hilar shadows (signed), ``opacity`` the ground-glass density
        (non-negative, zero for a normal patient).
    """
    m = min(size, _COARSE)
    xb, yb = _body_grid(m, pose)
    w = a.waves
    phase = xb[..., None] * w[:, 0] + yb[..., None] * w[:, 1] + w[:, 2]
    markings = (np.cos(phase) * w[:, 3]).sum(axis=-1)
    opacity = np.zeros_like(xb)
    if disease is not None and len(disease):
        fields = {side: _lung(xb, yb, a, int(side), 0.05)[1:] for side in (-1.0, 1.0)}
        for side, u0, v0, radius, elong, density in disease:
            u, v = fields[float(side)]
            # Distances in lung coordinates, scaled so radius is a fraction of the lung width.
            du = (u - u0) * 0.5
            dv = (v - v0) * ((a.lung_base - a.lung_top) / a.lung_w)
            opacity += density * np.exp(-(du * du / elong + dv * dv * elong) / (radius * radius))
        # Mottle the haze so that it is patchy rather than smooth.
        opacity *= np.clip(1.0 + 0.8 * markings, 0.2, 1.8)
        # Ground glass stays hazy where patches overlap: saturate below the lung's
        # air contrast so the lung never turns as white as solid tissue.
        opacity = _OPACITY_CAP * (1.0 - np.exp(opacity * (-1.0 / _OPACITY_CAP)))
    # Hila: vessels and bronchi at the lung roots, fading outward.
    hila = np.zeros_like(xb)
    hy = a.lung_top + 0.5 * (a.lung_base - a.lung_top)
    for side in (-1.0, 1.0):
        hx = side * (a.gap + 0.07)
        hila += np.exp(-(((xb - hx) / 0.1) ** 2 + ((yb - hy) / 0.16) ** 2))
    texture = 0.07 * markings * (0.6 + hila) + 0.1 * hila
    return _upsample(texture, size), _upsample(opacity, size)


def _upsample(layer: np.ndarray, size: int) -> np.ndarray:
    """Bicubic upsampling of a float layer to ``size`` square."""
    if layer.shape[0] == size:
        return layer.astype(np.float32, copy=False)
    im = Image.fromarray(layer.astype(np.float32))
    return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _stamp_marker(img: np.ndarray, style: _Style, rng: np.random.Generator) -> None:
    """Burns the source's side marker into a corner, in place."""
    if not style.marker:
        return
    size = img.shape[0]
    glyph = np.array([[c == "#" for c in row] for row in _GLYPHS[style.marker]], dtype=np.float32)
    cell = max(1, round(size / 110))
    mark = np.kron(glyph, np.ones((cell, cell), dtype=np.float32))
    h, w = mark.shape
    margin = int(size * rng.uniform(0.03, 0.07))
    r0 = margin if style.corner[0] == 0 else size - margin - h
    c0 = margin if style.corner[1] == 0 else size - margin - w
    if r0 < 0 or c0 < 0 or r0 + h > size or c0 + w > size:
        return
    patch = img[r0:r0 + h, c0:c0 + w]
    np.maximum(patch, mark * rng.uniform(0.85, 1.0), out=patch)


def render(seed: int, label: str, size: int = 299, patient: int | None = None,
           source: str = SOURCES[0]) -> np.ndarray:
    """Renders one synthetic chest X-ray.

    Args:
        seed: Seed of this image: pose jitter, exposure, noise.
        label: ``"covid"`` (adds ground-glass opacities) or ``"normal"``.
        size: Side of the square image in pixels.
        patient: Seed of the patient: anatomy, habitual pose and disease. Images
            with the same patient seed are views of one patient. Defaults to
            ``seed``. The same patient seed gives the same anatomy for both
            labels, so a covid and a normal render differ only by the opacities.
        source: One of :data:`SOURCES`; decides the image style.

    Returns:
        Grayscale image, uint8, shape (size, size).

    Raises:
        ValueError: For an unknown label or source, a size below 16 or a
            negative seed.
    """
    if label not in CLASSES:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(CLASSES)}")
    if source not in _STYLES:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if size < 16:
        raise ValueError(f"image size {size} is too small; use at least 16 px")
    patient = seed if patient is None else patient
    if seed < 0 or patient < 0:
        raise ValueError(f"seeds must be non-negative, got seed={seed}, patient={patient}")
    # Independent streams, so anatomy does not depend on the label and the
    # image-level draws do not depend on either.
    anatomy_rng = np.random.default_rng([patient, 0])
    disease_rng = np.random.default_rng([patient, 1])
    rng = np.random.default_rng([seed, 2])

    a = _sample_anatomy(anatomy_rng)
    pose = _jitter_pose(_sample_pose(anatomy_rng), rng)
    # Depth of inspiration varies between views.
    a = replace(a, lung_base=a.lung_base + rng.normal(0.0, 0.015))
    # Follow-up views: the same pattern, a little more or less dense. Drawn for
    # both labels so that the label changes nothing but the opacities.
    progression = rng.uniform(0.85, 1.15)
    disease = _sample_disease(disease_rng) if label == "covid" else None
    if disease is not None:
        disease[:, 5] *= progression

    style = _STYLES[source]
    attenuation = _attenuation(size, a, pose, disease)
    img = _expose(attenuation, style, rng)
    _stamp_marker(img, style, rng)
    # Smaller images stand for downsampled films, whose pixels average out noise.
    noise = style.noise * rng.uniform(0.8, 1.2) * math.sqrt(min(size, 299) / 299.0)
    # Quantum noise grows with the detected signal.
    img += rng.standard_normal(img.shape, dtype=np.float32) * (noise * (0.5 + 0.7 * img))
    out = Image.fromarray(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8))
    radius = style.blur * (size / 299.0) * rng.uniform(0.8, 1.2)
    if radius > 0.15:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(out)


def _attenuation(size: int, a: _Anatomy, pose: _Pose, disease: np.ndarray | None) -> np.ndarray:
    """The X-ray attenuation map (0 for air outside the body, about 0.9 for the heart)."""
    xb, yb = _body_grid(size, pose)
    edge = max(3.0 / size, 0.006)
    s = np.abs(xb)
    body = _soft_tissue(xb, yb, a, s)
    att = (0.6 * a.habitus) * body
    central = _central_shadows(size, pose, xb, yb, a, edge)
    lungs, air = _lung_fields(size, pose, xb, yb, a, edge)
    # The heart and mediastinum lie in front of the lungs and hide them.
    hidden = 1.0 - central
    lungs *= hidden
    att -= air * hidden
    att += 0.17 * central * np.minimum(body * 1.5, 1.0)

    box = _box(size, pose, -0.08, 0.08, -2.0, 2.0)
    xs, ys = xb[box], yb[box]
    spine = _ramp(0.05 - np.abs(xs), edge) * (0.8 + 0.2 * np.cos(ys * (2 * math.pi / 0.11)))
    trachea = _ramp(0.022 - np.abs(xs + 0.01), edge) * _ramp(a.lung_top + 0.3 - ys, 0.04)
    att[box] += 0.08 * spine - 0.1 * trachea

    bones = 0.085 * _ribs(xb, yb, a, s)
    box = _box(size, pose, -a.body_w, a.body_w, a.clavicle_y - 0.25, a.clavicle_y + 0.08)
    bones[box] += 0.12 * _clavicles(xb[box], yb[box], a, s[box])
    # Bones show best against the dark lungs.
    att += bones * np.minimum(body * 1.6, 1.0) * (0.3 + 0.7 * lungs)

    texture, opacity = _coarse_layers(size, a, pose, disease)
    att += (texture + opacity) * lungs
    return att


def _soft_tissue(xb: np.ndarray, yb: np.ndarray, a: _Anatomy, s: np.ndarray) -> np.ndarray:
    """Torso and neck thickness, 0 outside the body and up to 1 on the midline.

    The torso is a rounded square whose top corners are the shoulders; its
    thickness, and so its brightness, falls toward the flanks like a cylinder's.
    """
    ty = (yb - 0.5) * (1.0 / 1.45)
    tx = xb * (1.0 / a.body_w)
    tx2 = tx * tx
    torso = _ramp(1.0 - tx2 * tx2 - (ty * ty) ** 2, 0.06)
    neck = _ramp(0.2 - s, 0.04)
    return np.maximum(torso, neck) * np.sqrt(np.clip(1.0 - tx2, 0.05, 1.0))


def _central_shadows(size: int, pose: _Pose, xb: np.ndarray, yb: np.ndarray, a: _Anatomy,
                     edge: float) -> np.ndarray:
    """Heart, mediastinum, aortic knob and abdomen: the dense tissue, in [0, 1]."""
    central = np.zeros_like(xb)

    def add(box: tuple[slice, slice], layer: np.ndarray) -> None:
        np.maximum(central[box], layer, out=central[box])

    reach = max(a.heart_w, a.heart_h) + 0.05
    box = _box(size, pose, a.heart_x - reach, a.heart_x + reach,
               a.heart_y - reach, a.heart_y + reach)
    add(box, _heart(xb[box], yb[box], a, edge))
    box = _box(size, pose, -a.gap - 0.1, a.gap + 0.1, a.lung_top - 0.15, a.heart_y + 0.05)
    add(box, _mediastinum(xb[box], yb[box], a, edge))
    # Below the diaphragm the abdomen is as dense as the heart, which is why the
    # heart's lower border disappears into it.
    reach = a.gap + a.lung_w + 0.15
    box = _box(size, pose, -reach, reach, a.lung_base - a.dome_h - 0.1, 2.0)
    xs, ys = xb[box], yb[box]
    dome = np.where(xs < 0, _diaphragm(xs, a, -1), _diaphragm(xs, a, 1))
    add(box, _ramp(ys - dome, 0.12) * _ramp(a.gap + a.lung_w - np.abs(xs), 0.2))
    return central


def _lung_fields(size: int, pose: _Pose, xb: np.ndarray, yb: np.ndarray, a: _Anatomy,
                 edge: float) -> tuple[np.ndarray, np.ndarray]:
    """Both lungs: (mask in [0, 1], attenuation removed by their air)."""
    lungs = np.zeros_like(xb)
    air = np.zeros_like(xb)
    for side in (-1, 1):
        box = _lung_box(size, pose, a, side)
        mask, _, v = _lung(xb[box], yb[box], a, side, edge)
        lungs[box] += mask
        # Air darkens the lungs, less toward the bases where breast and
        # diaphragm soft tissue overlap them.
        v = np.clip(v, 0.0, 1.0)
        air[box] += mask * (0.4 - 0.12 * v * v)
    return lungs, air


def _mediastinum(xb: np.ndarray, yb: np.ndarray, a: _Anatomy, edge: float) -> np.ndarray:
    """The mediastinum, widening downward into the heart, and the aortic knob."""
    widen = 0.05 * np.clip((yb - a.lung_top) * (1.0 / (a.heart_y - a.lung_top)), 0.0, 1.0)
    band = (_ramp(a.gap + widen - np.abs(xb - 0.01), edge * 3)
            * _ramp(a.heart_y - yb, 0.05) * _ramp(yb - a.lung_top + 0.05, 0.1))
    dx = xb - a.gap - 0.005
    dy = yb - a.lung_top - 0.38
    knob = _ramp(0.055 - np.sqrt(dx * dx + dy * dy), edge)
    return np.maximum(band, knob)


def _expose(att: np.ndarray, style: _Style, rng: np.random.Generator) -> np.ndarray:
    """Turns attenuation into display intensity in [0, 1] with the source's tone curve."""
    contrast = style.contrast * rng.uniform(0.9, 1.1)
    exposure = style.exposure + rng.normal(0.0, 0.03)
    gamma = style.gamma * rng.uniform(0.9, 1.1)
    # The anode heel effect: exposure drifts across the film.
    heel_angle = rng.uniform(0.0, 2 * math.pi)
    heel = rng.uniform(0.0, 0.06)
    size = att.shape[0]
    t = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    drift = heel * (math.cos(heel_angle) * t[None, :] + math.sin(heel_angle) * t[:, None])
    img = np.clip(att * (1.05 * contrast) + (exposure + 0.04) + drift, 0.0, 1.0)
    return img ** gamma
