"""The ``emdenoise`` command: every flow of the plugin, scriptable.

A package of thin commands, one module per family (``denoise``, ``train``, ``data``,
``bench``, ``info``): each ``_add_<name>`` builds a subcommand's parser and each
``_cmd_<name>`` parses nothing more, calls the one core function the widgets call too, and
drives any long job through :func:`._common.run_job`. Errors the user can fix end with one
line on stderr and exit code 2; a batch where some files failed exits 1 after processing the rest.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..io import DiskFullError, ImageFileError
from . import bench, data, denoise, info, train
from ._common import UsageError

__all__ = ["UsageError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emdenoise",
        description="Denoise atomic-resolution STEM images; simulate test data; inspect TIFFs.",
        epilog="Run 'emdenoise COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (bench._add_demo, bench._add_bench, denoise._add_denoise, denoise._add_check, data._add_mask, data._add_synth,
                train._add_train, data._add_simulate, data._add_scenes, info._add_info):
        add(sub)
    return parser


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except KeyboardInterrupt:  # Ctrl-C while the commands load
        print("emdenoise: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    import signal
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
        # SIGTERM before a command's own handler (e.g. while torch loads) ends like Ctrl-C: one line, exit 130
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ImageFileError, FileExistsError) as exc:
        print(f"emdenoise {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except DiskFullError as exc:  # no room to write (a full disk, a file-size limit): what and where, in one line
        print(f"emdenoise {args.command}: error: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emdenoise {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
