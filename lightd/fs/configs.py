"""Config files of a volume rewritten before a start, through the descriptor walk.

:func:`rewrite_config_files` reads each file with :func:`lightd.fs.ops.read_limited`
(no symlink followed; a link where the file should be is an error, left alone), asks
:func:`lightd.templates.configfiles.rewrite` for the new text, and writes only a file
whose content changes, atomically (temporary file, rename), owned by the container's
user. A file that does not parse is left as it is and reported. Blocking (run it in a
thread); it must not know about HTTP or the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lightd.errors import LightdError
from lightd.fs import ops
from lightd.fs.beneath import Root
from lightd.fs.paths import parse_path
from lightd.spec.template import ConfigFile
from lightd.templates.configfiles import MAX_CONFIG_BYTES, ConfigParseError, rewrite


@dataclass
class ConfigReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) if self.errors else None


def rewrite_config_files(
    volume_path: Path,
    files: list[ConfigFile],
    placeholders: Mapping[str, str],
    *,
    owner: tuple[int, int] | None,
) -> ConfigReport:
    report = ConfigReport()
    with Root(volume_path) as root:
        for config in files:
            try:
                parts = parse_path(config.path)
                raw = ops.read_limited(root, parts, MAX_CONFIG_BYTES)
                text = raw.decode("utf-8") if raw is not None else None
                new = rewrite(text, config, placeholders)
                if new is None:
                    report.unchanged.append(config.path)
                    continue
                ops.write_file(root, parts, new.encode("utf-8"), owner=owner)
                report.written.append(config.path)
            except UnicodeDecodeError:
                report.errors.append(f"config file {config.path}: not UTF-8 text; left as it is")
            except ConfigParseError as exc:
                report.errors.append(f"config file {config.path}: {exc}; left as it is")
            except LightdError as exc:
                report.errors.append(f"config file {config.path}: {exc.message}")
            except OSError as exc:
                report.errors.append(f"config file {config.path}: {exc.strerror}")
    return report
