"""Small helpers the flow widgets share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import Container


def current_plane(viewer, layer) -> np.ndarray:
    """The 2D plane of ``layer`` that the viewer shows now (the layer itself when it is 2D)."""
    if layer.ndim == 2:
        return np.asarray(layer.data)
    index = layer.world_to_data(viewer.dims.point)[: layer.ndim - 2]
    index = tuple(int(np.clip(round(i), 0, n - 1)) for i, n in zip(index, layer.data.shape))
    return np.asarray(layer.data[index])


def chosen_path(value) -> Path | None:
    """A FileEdit's value as a path, or None when nothing was chosen."""
    return Path(value) if str(value) not in ("", ".") else None


def geometry(layer, translate: bool = True) -> dict:
    """Scale, translate and units of the last two axes of ``layer``, for a layer drawn over it (or, without the
    translate, for a new image at the same pixel size)."""
    out = {"scale": tuple(layer.scale[-2:]), "units": tuple(layer.units[-2:])}
    if translate:
        out["translate"] = tuple(layer.translate[-2:])
    return out


class Dock(Container):
    """A flow widget's labelled column of controls that scrolls when the screen is short.

    magicgui's ``scrollable`` puts the column in a ``QScrollArea``, but napari docks ``.native``,
    which magicgui gives as the column inside it: ``native`` here is the scroll area, so the dock
    scrolls, and ``body`` is the column (for Qt widgets added below the magicgui ones).
    """

    def __init__(self, **kwargs):
        super().__init__(labels=True, scrollable=True, **kwargs)
        self.sections: list = []  # folded sections (collapsible), each a Container of its own

    @property
    def native(self):
        return self.root_native_widget

    @property
    def body(self):
        return self.root_native_widget.widget()

    def fit_width(self, stretch: bool = True) -> None:
        """The dock is never narrower than its widest row, measured whenever the column's layout changes (magicgui
        counts only its own widgets when built, before napari's style sets the fonts): nothing is cut off."""
        from qtpy.QtCore import QEvent, QObject

        scroll = self.root_native_widget

        class FitWidth(QObject):
            def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
                if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Show, QEvent.Type.StyleChange):
                    width = scroll.widget().minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width()
                    if width != scroll.minimumWidth():
                        scroll.setMinimumWidth(width)
                return False

        self._fit = FitWidth(scroll)
        self.body.installEventFilter(self._fit)
        scroll.installEventFilter(self._fit)
        if stretch:  # napari adds no stretch below a scroll area: keep the rows together at the top of a tall dock
            self.body.layout().addStretch(1)

    def add_section(self, widgets: list, title: str = "Advanced", before=None):
        """A folded section of ``widgets`` above ``before`` (one of this dock's widgets) or at the end."""
        section = collapsible(self, widgets, title, before=before)
        self.sections.append(section)
        return section


def collapsible(container, widgets: list, title: str = "Advanced", before=None):
    """Put ``widgets`` in a folded section (superqt's ``QCollapsible``) of ``container``, above ``before`` (a widget
    of ``container``) or at the end. The section keeps its own labelled magicgui container: returns it."""
    from superqt import QCollapsible

    inner = Container(widgets=widgets, labels=True)
    inner.margins = (0, 0, 0, 0)
    box = QCollapsible(title)
    box.addWidget(inner.native)
    layout = container.body.layout()
    index = layout.count()
    if before is not None:
        for i in range(layout.count()):
            w = layout.itemAt(i).widget()
            if w is not None and (w is before.native or w.isAncestorOf(before.native)):  # a labelled row holds it
                index = i
                break
    layout.insertWidget(index, box)
    inner.section = box  # the QCollapsible, to expand or fold it from code
    return inner


def tooltip_gaps(container) -> list[str]:
    """Labels of the controls in ``container`` (and its sections) that have no tooltip: the tests keep this empty."""
    from magicgui.widgets import Label

    gaps = []
    for w in container:
        if isinstance(w, Container) and not hasattr(w, "value"):
            gaps += tooltip_gaps(w)
        elif not isinstance(w, Label) and not (w.tooltip or "").strip():
            gaps.append(w.label or getattr(w, "text", "") or w.name or type(w).__name__)
    for section in getattr(container, "sections", ()):
        gaps += tooltip_gaps(section)
    return gaps
