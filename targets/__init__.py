"""Printable calibration charts: geometry in millimetres, fiducials, rendering.

``targets`` imports neither ``calib`` nor ``restore``.

Chart millimetres: x right, y down, origin at the page's top-left corner. Image
pixels: origin at the top-left pixel centre.
"""
from ._atomic import atomic_write
from ._errors import TargetError
from ._layout import (
    FORMAT_VERSION, Dot, EdgeSquare, Layout, Marker, MarkerSet, NoisePatch, Rect, ScaleBar, Screen,
    StripePatch, TextLine, layout_from_dict, layout_from_json, load_layout, save_layout,
)
from ._make import (
    CRITICAL_ANGLES_DEG, INKS, KINDS, MARKER_IDS_PER_KIND, PAPER_SIZES_MM, check_printable,
    critical_angle_distance_deg, make_layout, marker_kind, parse_paper, pixel_footprint_mm,
)
from ._markers import MarkerMatch, find_markers
from ._render import page_homography, render_layout
from ._write import ChartFiles, raster_shape, read_chart_png, srgb_decode, srgb_encode, write_chart

__all__ = [
    "CRITICAL_ANGLES_DEG", "ChartFiles", "Dot", "EdgeSquare", "FORMAT_VERSION", "INKS", "KINDS", "Layout",
    "MARKER_IDS_PER_KIND", "Marker", "MarkerMatch", "MarkerSet", "NoisePatch", "PAPER_SIZES_MM", "Rect", "ScaleBar", "Screen",
    "StripePatch", "TargetError", "TextLine", "atomic_write", "check_printable", "critical_angle_distance_deg",
    "find_markers", "layout_from_dict", "layout_from_json", "load_layout", "make_layout", "marker_kind", "page_homography",
    "parse_paper", "pixel_footprint_mm", "raster_shape", "read_chart_png", "render_layout", "save_layout",
    "srgb_decode", "srgb_encode", "write_chart",
]
