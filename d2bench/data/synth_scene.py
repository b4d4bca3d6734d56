"""Procedural video scenes for the synthetic DAVIS set: what moves where, and how it looks.

A scene is drawn back to front: a textured background that pans, unannotated distractors,
the annotated objects, then (in some scenes) an occluder bar sweeping across in front of
everything. The cue a small network can learn: annotated objects are smooth, deforming blobs
in warm colours; distractors are hard-cornered polygons in cool colours of similar size,
texture and speed; background and occluder are nearly grey. Every random choice comes from
one ``numpy.random.Generator``, so a seed fixes the video bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TAU = 2.0 * math.pi


def hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Vectorised HSV → RGB (all in [0, 1]; hue wraps); returns …×3 float32."""
    hue = np.mod(hue, 1.0) * 6.0
    sector = np.floor(hue)
    fraction = hue - sector
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    sector = sector.astype(np.int64) % 6
    red = np.choose(sector, [value, q, p, p, t, value])
    green = np.choose(sector, [t, value, value, q, p, p])
    blue = np.choose(sector, [p, p, t, value, value, q])
    return np.stack([red, green, blue], axis=-1).astype(np.float32)


@dataclass(frozen=True)
class Grid:
    """Pixel-centre coordinates of a frame and its scale (the shorter side)."""

    y: np.ndarray
    x: np.ndarray
    scale: float

    @classmethod
    def of(cls, height: int, width: int) -> Grid:
        y, x = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
        return cls(y=y, x=x, scale=float(min(height, width)))


def _stripes(grid: Grid, cy: float, cx: float, angle: float, period: float) -> np.ndarray:
    """A smooth stripe pattern in [0, 1] attached to a point and an orientation."""
    u = (grid.x - cx) * math.cos(angle) + (grid.y - cy) * math.sin(angle)
    return 0.5 + 0.5 * np.sin(TAU * u / period)


@dataclass(frozen=True)
class Background:
    """Sum of drifting plane waves in a desaturated colour: texture with camera motion."""

    hue: float
    saturation: float
    waves: tuple[tuple[float, float, float, float, float], ...]  # (ky, kx, phase, amp, hue_amp)
    velocity: tuple[float, float]  # pixels per frame (y, x)

    @classmethod
    def sample(cls, rng: np.random.Generator, scale: float) -> Background:
        waves = []
        for _ in range(6):
            direction = rng.uniform(0, TAU)
            wavelength = rng.uniform(0.12, 0.6) * scale
            waves.append(
                (
                    math.sin(direction) * TAU / wavelength,
                    math.cos(direction) * TAU / wavelength,
                    rng.uniform(0, TAU),
                    rng.uniform(0.04, 0.12),
                    rng.uniform(-0.04, 0.04),
                )
            )
        heading = rng.uniform(0, TAU)
        speed = rng.uniform(0.2, 0.8) * scale / 64.0
        return cls(
            hue=rng.uniform(0, 1),
            saturation=rng.uniform(0.05, 0.2),
            waves=tuple(waves),
            velocity=(speed * math.sin(heading), speed * math.cos(heading)),
        )

    def render(self, grid: Grid, t: float) -> np.ndarray:
        y = grid.y + self.velocity[0] * t
        x = grid.x + self.velocity[1] * t
        value = np.full_like(grid.y, 0.5)
        hue = np.full_like(grid.y, self.hue)
        for ky, kx, phase, amp, hue_amp in self.waves:
            wave = np.sin(ky * y + kx * x + phase)
            value += amp * wave
            hue += hue_amp * wave
        saturation = np.full_like(value, self.saturation)
        return hsv_to_rgb(hue, saturation, np.clip(value, 0.0, 1.0))


@dataclass(frozen=True)
class Blob:
    """An annotated object: a deforming, rotating, scaling, textured blob on a smooth path."""

    centre: tuple[float, float]
    amplitude: tuple[float, float]
    frequency: tuple[float, float]  # radians per frame (y, x)
    phase: tuple[float, float]
    radius: float
    growth: float  # log-scale change over the whole video
    pulse: tuple[float, float, float]  # (amplitude, radians per frame, phase) of scale change
    lobes: tuple[tuple[int, float, float, float], ...]  # (order, amplitude, phase, speed)
    spin: float  # radians per frame
    colours: tuple[tuple[float, float, float], tuple[float, float, float]]  # two HSV
    stripe_period: float

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        grid: Grid,
        height: int,
        width: int,
        x_range: tuple[float, float],
    ) -> Blob:
        scale = grid.scale
        radius = rng.uniform(0.15, 0.22) * scale
        hue = rng.uniform(-0.06, 0.1)
        colours = (
            (hue, rng.uniform(0.65, 0.95), rng.uniform(0.75, 0.95)),
            (hue + rng.uniform(0.02, 0.07), rng.uniform(0.6, 0.9), rng.uniform(0.45, 0.65)),
        )
        lobes = tuple(
            (order, rng.uniform(0.04, 0.12), rng.uniform(0, TAU), rng.uniform(-0.3, 0.3))
            for order in (2, 3, 4)
        )
        low, high = x_range
        return cls(
            centre=(rng.uniform(0.4, 0.6) * height, rng.uniform(low, high) * width),
            amplitude=(rng.uniform(0.1, 0.25) * height, rng.uniform(0.08, 0.18) * width),
            frequency=(rng.uniform(0.08, 0.25), rng.uniform(0.06, 0.2)),
            phase=(rng.uniform(0, TAU), rng.uniform(0, TAU)),
            radius=radius,
            growth=rng.uniform(-0.5, 0.5),
            pulse=(rng.uniform(0.1, 0.25), rng.uniform(0.15, 0.4), rng.uniform(0, TAU)),
            lobes=lobes,
            spin=rng.uniform(-0.08, 0.08),
            colours=colours,
            stripe_period=rng.uniform(0.35, 0.7) * radius,
        )

    def render(self, grid: Grid, t: float, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB H×W×3, inside H×W bool) at frame t of a video of ``length`` frames."""
        cy = self.centre[0] + self.amplitude[0] * math.sin(self.frequency[0] * t + self.phase[0])
        cx = self.centre[1] + self.amplitude[1] * math.sin(self.frequency[1] * t + self.phase[1])
        progress = t / max(length - 1, 1) - 0.5
        pulse_amp, pulse_freq, pulse_phase = self.pulse
        size = self.radius * math.exp(self.growth * progress)
        size *= 1.0 + pulse_amp * math.sin(pulse_freq * t + pulse_phase)
        angle = self.spin * t
        dy, dx = grid.y - cy, grid.x - cx
        distance = np.hypot(dy, dx)
        theta = np.arctan2(dy, dx) - angle
        boundary = np.ones_like(distance)
        for order, amp, phase, speed in self.lobes:
            boundary += amp * np.sin(order * theta + phase + speed * t)
        boundary *= size
        inside = distance < boundary
        stripes = _stripes(grid, cy, cx, angle + 0.6, self.stripe_period)
        shading = 1.0 - 0.35 * np.clip(distance / np.maximum(boundary, 1e-6), 0.0, 1.0) ** 2
        (h0, s0, v0), (h1, s1, v1) = self.colours
        hue = h0 + (h1 - h0) * stripes
        saturation = s0 + (s1 - s0) * stripes
        value = (v0 + (v1 - v0) * stripes) * shading
        return hsv_to_rgb(hue, saturation, value), inside


@dataclass(frozen=True)
class Polygon:
    """A distractor: a regular polygon (3–5 corners, maybe stretched) in cool colours, drifting."""

    start: tuple[float, float]
    velocity: tuple[float, float]
    corners: int
    radius: float
    stretch: float
    rotation: float
    spin: float
    colours: tuple[tuple[float, float, float], tuple[float, float, float]]
    stripe_period: float

    @classmethod
    def sample(cls, rng: np.random.Generator, grid: Grid, height: int, width: int) -> Polygon:
        scale = grid.scale
        radius = rng.uniform(0.14, 0.24) * scale
        heading = rng.uniform(0, TAU)
        speed = rng.uniform(0.3, 1.2) * scale / 64.0
        hue = rng.uniform(0.36, 0.68)
        return cls(
            start=(rng.uniform(0.1, 0.9) * height, rng.uniform(0.05, 0.95) * width),
            velocity=(speed * math.sin(heading), speed * math.cos(heading)),
            corners=int(rng.integers(3, 6)),
            radius=radius,
            stretch=rng.uniform(0.7, 1.3),
            rotation=rng.uniform(0, TAU),
            spin=rng.uniform(-0.06, 0.06),
            colours=(
                (hue, rng.uniform(0.6, 0.95), rng.uniform(0.7, 0.95)),
                (hue + rng.uniform(-0.05, 0.05), rng.uniform(0.55, 0.9), rng.uniform(0.4, 0.65)),
            ),
            stripe_period=rng.uniform(0.35, 0.7) * radius,
        )

    def render(self, grid: Grid, t: float) -> tuple[np.ndarray, np.ndarray]:
        cy = self.start[0] + self.velocity[0] * t
        cx = self.start[1] + self.velocity[1] * t
        angle = self.rotation + self.spin * t
        dy, dx = grid.y - cy, grid.x - cx
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        u = u / self.stretch
        distance = np.hypot(u, v)
        sector = TAU / self.corners
        theta = np.mod(np.arctan2(v, u), sector) - sector / 2
        inside = distance * np.cos(theta) < self.radius * math.cos(math.pi / self.corners)
        stripes = _stripes(grid, cy, cx, angle + 0.6, self.stripe_period)
        (h0, s0, v0), (h1, s1, v1) = self.colours
        rgb = hsv_to_rgb(
            h0 + (h1 - h0) * stripes, s0 + (s1 - s0) * stripes, v0 + (v1 - v0) * stripes
        )
        return rgb, inside


@dataclass(frozen=True)
class Occluder:
    """A dark, nearly grey bar sweeping across the frame during the middle of the video."""

    width: float
    tilt: float  # horizontal shift per pixel of height
    enter: float  # frame at which it enters on the left (or right)
    leave: float
    leftwards: bool
    value: float
    stripe_period: float

    @classmethod
    def sample(cls, rng: np.random.Generator, grid: Grid, length: int) -> Occluder:
        return cls(
            width=rng.uniform(0.14, 0.22) * grid.scale,
            tilt=rng.uniform(-0.3, 0.3),
            enter=rng.uniform(0.15, 0.3) * (length - 1),
            leave=rng.uniform(0.7, 0.85) * (length - 1),
            leftwards=bool(rng.integers(0, 2)),
            value=rng.uniform(0.15, 0.35),
            stripe_period=rng.uniform(0.05, 0.1) * grid.scale,
        )

    def render(self, grid: Grid, t: float, width: int) -> tuple[np.ndarray, np.ndarray]:
        height = float(grid.y.shape[0])
        overhang = self.width / 2 + abs(self.tilt) * height / 2  # fully outside beyond this
        progress = (t - self.enter) / max(self.leave - self.enter, 1e-6)
        centre = -overhang + progress * (width + 2 * overhang)
        if self.leftwards:
            centre = width - centre
        offset = grid.x - self.tilt * (grid.y - height / 2) - centre
        inside = np.abs(offset) < self.width / 2
        stripes = 0.5 + 0.5 * np.sin(TAU * grid.y / self.stripe_period)
        value = self.value * (0.8 + 0.4 * stripes)
        rgb = hsv_to_rgb(np.full_like(value, 0.08), np.full_like(value, 0.15), value)
        return rgb, inside


@dataclass(frozen=True)
class Scene:
    """Everything one synthetic video is made of."""

    height: int
    width: int
    length: int
    background: Background
    distractors: tuple[Polygon, ...]
    objects: tuple[Blob, ...]
    occluder: Occluder | None

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        height: int,
        width: int,
        length: int,
        num_objects: int,
        num_distractors: int,
        occluded: bool,
    ) -> Scene:
        grid = Grid.of(height, width)
        background = Background.sample(rng, grid.scale)
        distractors = tuple(
            Polygon.sample(rng, grid, height, width) for _ in range(num_distractors)
        )
        if num_objects == 1:
            ranges = [(0.35, 0.65)]
        else:  # side by side at the start, so every object is visible in the first frame
            ranges = [
                (0.1 + 0.8 * k / num_objects, 0.1 + 0.8 * (k + 1) / num_objects)
                for k in range(num_objects)
            ]
        objects = tuple(Blob.sample(rng, grid, height, width, x_range) for x_range in ranges)
        occluder = Occluder.sample(rng, grid, length) if occluded else None
        return cls(height, width, length, background, distractors, objects, occluder)

    def render(self, t: int, grid: Grid | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frame t: (uint8 H×W×3 image, uint8 H×W object ids 0..K)."""
        grid = grid or Grid.of(self.height, self.width)
        image = self.background.render(grid, t)
        ids = np.zeros((self.height, self.width), dtype=np.uint8)
        for distractor in self.distractors:
            rgb, inside = distractor.render(grid, t)
            image[inside] = rgb[inside]
        for number, blob in enumerate(self.objects, start=1):
            rgb, inside = blob.render(grid, t, self.length)
            image[inside] = rgb[inside]
            ids[inside] = number
        if self.occluder is not None:
            rgb, inside = self.occluder.render(grid, t, self.width)
            image[inside] = rgb[inside]
            ids[inside] = 0
        pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        return pixels, ids
