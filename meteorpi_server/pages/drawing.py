"""Geometry for the pages' SVG drawings: computed here, drawn by the templates as attributes
(never as inline styles, which the Content-Security-Policy forbids).

* the camera map: an equirectangular projection of the cameras' bounding box (x scaled by the
  cosine of the middle latitude, so a degree looks as long both ways), with a graticule;
* the visible sky regions of a status: polygons in sensor pixels;
* events per night: a bar chart.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field

from meteorpi_model import CameraStatus

MAP_WIDTH = 640.0
MIN_SPAN_DEGREES = 4.0
MIN_ASPECT, MAX_ASPECT = 1.5, 2.5  # map width / height: a strip of cameras still gives a readable map
GRID_STEPS = (0.5, 1, 2, 5, 10, 15, 30, 45, 90)
CHART_WIDTH, CHART_HEIGHT, CHART_BOTTOM = 640.0, 200.0, 24.0


@dataclass
class MapPoint:
    x: float
    y: float
    camera_id: str
    silent: bool


@dataclass
class GridLine:
    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    lx: float
    ly: float


@dataclass
class CameraMap:
    width: float
    height: float
    points: list[MapPoint] = field(default_factory=list)
    lines: list[GridLine] = field(default_factory=list)


def _grid_step(span: float) -> float:
    return next((s for s in GRID_STEPS if span / s <= 8), 90)


def camera_map(cameras: list[tuple[str, float, float, bool]]) -> CameraMap | None:
    """The map of ``(camera_id, lat, long, silent)``; None with no cameras."""
    if not cameras:
        return None
    lats, longs = [c[1] for c in cameras], [c[2] for c in cameras]
    lat_mid, long_mid = (min(lats) + max(lats)) / 2, (min(longs) + max(longs)) / 2
    lat_span = max(max(lats) - min(lats), MIN_SPAN_DEGREES) * 1.2
    long_span = max(max(longs) - min(longs), MIN_SPAN_DEGREES) * 1.2
    squash = max(math.cos(math.radians(lat_mid)), 0.1)
    long_span = max(long_span, lat_span * MIN_ASPECT / squash)
    lat_span = max(lat_span, long_span * squash / MAX_ASPECT)
    south, north = max(lat_mid - lat_span / 2, -90.0), min(lat_mid + lat_span / 2, 90.0)
    west, east = max(long_mid - long_span / 2, -180.0), min(long_mid + long_span / 2, 180.0)
    scale = MAP_WIDTH / ((east - west) * squash)
    height = max((north - south) * scale, 120.0)

    def xy(lat: float, long: float) -> tuple[float, float]:
        return round((long - west) * squash * scale, 1), round((north - lat) * scale, 1)

    drawing = CameraMap(width=MAP_WIDTH, height=round(height, 1))
    step = _grid_step(max(north - south, east - west))
    lat = math.ceil(south / step) * step
    while lat <= north:
        _, y = xy(lat, west)
        drawing.lines.append(GridLine(0, y, MAP_WIDTH, y, f"{lat:g}°", 4, y - 3))
        lat += step
    long = math.ceil(west / step) * step
    while long <= east:
        x, _ = xy(north, long)
        drawing.lines.append(GridLine(x, 0, x, drawing.height, f"{long:g}°", x + 3, drawing.height - 4))
        long += step
    for camera_id, lat, long, silent in cameras:
        x, y = xy(lat, long)
        drawing.points.append(MapPoint(x, y, camera_id, silent))
    return drawing


@dataclass
class SkyRegions:
    width: int
    height: int
    polygons: list[str]
    margin: int = 0

    @property
    def view_box(self) -> str:
        """The sensor's extent with a margin, so outlines on its edge stay visible."""
        return f"{-self.margin} {-self.margin} {self.width + 2 * self.margin} {self.height + 2 * self.margin}"


def sky_regions(status: CameraStatus) -> SkyRegions | None:
    """The status' regions as SVG polygon point lists over the sensor's extent; None if none."""
    regions = [r for r in status.regions if r]
    if not regions:
        return None
    width = max(p.x for r in regions for p in r) or 1
    height = max(p.y for r in regions for p in r) or 1
    return SkyRegions(width=width, height=height, margin=max(width, height) // 40 + 1,
                      polygons=[" ".join(f"{p.x},{p.y}" for p in r) for r in regions])


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    night: _dt.date
    count: int


@dataclass
class BarChart:
    width: float
    height: float
    bars: list[Bar]
    top: int
    first: _dt.date
    last: _dt.date
    total: int


def night_chart(nights: list[tuple[_dt.date, int]]) -> BarChart | None:
    """Bars of events per night, oldest left; None without nights."""
    if not nights:
        return None
    top = max(max(c for _, c in nights), 1)
    slot = CHART_WIDTH / len(nights)
    plot = CHART_HEIGHT - CHART_BOTTOM
    bars = [Bar(x=round(i * slot + slot * 0.1, 1), y=round(plot - plot * c / top, 1), width=round(slot * 0.8, 1),
                height=round(plot * c / top, 1), night=night, count=c)
            for i, (night, c) in enumerate(nights)]
    return BarChart(width=CHART_WIDTH, height=CHART_HEIGHT, bars=bars, top=top, first=nights[0][0],
                    last=nights[-1][0], total=sum(c for _, c in nights))
