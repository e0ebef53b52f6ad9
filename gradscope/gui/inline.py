"""One figure of the export as the bytes of a PNG or SVG file, for ``Results.figure`` and Jupyter.

    render_view(results, experiment, "through_time", "png", (1400, 800)) -> bytes

The same Figure classes and renderer as the export (figures.py), one page at a time; "composite" is the
export's composite, rendered into a temporary folder and read back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from . import style
from .figures import ensure_app, figure_pages, render_figures, run_data_from_results, slug


def render_view(results, experiment, view: str, fmt: str, size=(1400, 800)) -> bytes:
    """The bytes of the file the export writes for ``view`` (plots/<view>.<fmt>), drawn at ``size``."""
    from . import svg
    from .rendering import encode_png, render_page

    ensure_app()
    runs = run_data_from_results(results)
    title = getattr(experiment, "name", "") or ""
    if view == "composite":
        with tempfile.TemporaryDirectory(prefix="gradscope-figure-") as folder:
            render_figures(runs, folder, title=title, formats=(fmt,))
            path = Path(folder) / f"composite.{fmt}"
            if not path.exists():
                raise ValueError("nothing to draw: no run has recorded anything")
            return path.read_bytes()
    wanted = f"waterfall_{slug(runs[0].name)}" if view == "waterfall" and runs else view
    stems = []
    for stem, widget, _figure in figure_pages(runs, size):
        if stem == wanted:
            page = render_page(widget, (fmt,))
            if fmt == "png":
                return encode_png(page.rgb)
            return svg.document(
                page.width, page.height, style.BACKGROUND, page.svg_defs, page.svg_body, title=f"GradScope: {stem}"
            )
        stems.append(stem)
    raise ValueError(
        f"view: got {view!r}; these runs have {', '.join(repr(s) for s in [*stems, 'composite'])} "
        f"(and 'waterfall' for the first run's)"
    )


__all__ = ["render_view"]
