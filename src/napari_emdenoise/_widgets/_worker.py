"""A napari generator worker that always closes its generator in the worker thread.

napari's ``GeneratorWorker`` stops iterating on ``quit()`` (or when its signals' Qt object
has been deleted, e.g. as napari closes) but leaves the generator unclosed until it is
garbage-collected, at some later time and in any thread, so the core generators' ``finally``
blocks (saving a training checkpoint, resetting a model's normalisation mode) would run late
or never. :class:`ClosingWorker` closes it as soon as the loop ends, whatever ended it.

It also hands the core's warnings to its ``warned`` signal through the worker thread's own channel
(:func:`napari_emdenoise.jobs.thread_warnings`): the worker's ``catch_warnings`` is process-wide, and
another worker ending meanwhile (the period estimate of the layer just picked) put back the hooks it
had found, so the job's warnings went nowhere.
"""

from __future__ import annotations

from napari.qt.threading import GeneratorWorker

from ..jobs import thread_warnings


class ClosingWorker(GeneratorWorker):
    def work(self):
        try:
            with thread_warnings(self._relay):
                return super().work()
        finally:
            self._gen.close()

    def _relay(self, message) -> None:
        self.warned.emit((message.message, message.category, message.filename, message.lineno, None, None))


