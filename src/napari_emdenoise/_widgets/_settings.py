"""What the flow widgets remember between napari sessions: one small JSON file per user.

Each widget names its section and the controls to keep (:func:`remember`); a stored value is
put back when the widget opens and written again whenever the user changes it. Settings are a
convenience: a file that cannot be read or written (a read-only home, a damaged file) leaves
the defaults in place and never stops a flow. ``NAPARI_EMDENOISE_SETTINGS`` names another file
(the tests use it to keep the user's own file untouched).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ENV = "NAPARI_EMDENOISE_SETTINGS"


def settings_path() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-emdenoise")) / "widgets.json"


def load() -> dict:
    try:
        data = json.loads(settings_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(section: str, key: str, value) -> None:
    data = load()
    data.setdefault(section, {})[key] = str(value) if isinstance(value, Path) else value
    path = settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass


def remember(section: str, controls: dict) -> None:
    """Put back the stored value of each control (magicgui value widgets, by key) and store every later change."""
    stored = load().get(section, {})
    if not isinstance(stored, dict):
        stored = {}
    for key, widget in controls.items():
        if key in stored:
            try:
                widget.value = stored[key]
            except (ValueError, TypeError, KeyError):  # a choice or range that no longer exists: keep the default
                pass
        widget.changed.connect(lambda value, section=section, key=key: _store(section, key, value))
