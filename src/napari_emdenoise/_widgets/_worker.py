"""A napari generator worker that always closes its generator in the worker thread.

napari's ``GeneratorWorker`` stops iterating on ``quit()`` (or when its signals' Qt object
has been deleted, e.g. as napari closes) but leaves the generator unclosed until it is
garbage-collected, at some later time and in any thread, so the core generators' ``finally``
blocks (saving a training checkpoint, resetting a model's normalisation mode) would run late
or never. :class:`ClosingWorker` closes it as soon as the loop ends, whatever ended it.
"""

from __future__ import annotations

from napari.qt.threading import GeneratorWorker


class ClosingWorker(GeneratorWorker):
    def work(self):
        try:
            return super().work()
        finally:
            self._gen.close()


