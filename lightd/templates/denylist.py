"""A template's ``file_denylist``: the paths of a volume its users may not touch.

Eggs list gitignore-style patterns (``*.so``, ``RustDedicated``, ``config/``,
``!server.jar``); the Wings family refuses the file API and SFTP on every path they
match. :class:`Denylist` is that decision, in one pure place: it takes the volume's
effective patterns (those of every template its containers use) and answers for parts
of a path relative to the volume root, with gitignore's rules (a pattern without a
slash matches a name at any depth, a folder's pattern covers everything below it, a
later ``!`` pattern lets a path through again). It reads no file: the file layer asks
it through a callable (:mod:`lightd.fs` does not import templates).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from pathspec import GitIgnoreSpec

from lightd.spec.template import TemplateSpec


class Denylist:
    """Gitignore-style patterns over volume paths (parts relative to the volume root)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(p for p in (line.strip() for line in patterns) if p)
        self._spec = GitIgnoreSpec.from_lines(self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def denies(self, parts: tuple[str, ...], *, folder: bool | None = None) -> bool:
        """True when the entry at ``parts`` is denied; the volume root never is.

        ``folder``: whether the entry is a folder (None: unknown, so a folder-only
        pattern such as ``config/`` counts as well).
        """
        if not parts or not self.patterns:
            return False
        path = "/".join(parts)
        if folder is not True and self._spec.match_file(path):
            return True
        return folder is not False and self._spec.match_file(path + "/")


@functools.lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> Denylist:
    return Denylist(patterns)


def denylist_of(templates: Iterable[TemplateSpec | None]) -> Denylist | None:
    """The volume's denylist: every pattern of the templates its containers use, or None.

    Compiled once per set of patterns (the file API asks on every request).
    """
    patterns: list[str] = []
    for template in templates:
        if template is not None:
            patterns.extend(p for p in template.file_denylist if p not in patterns)
    return _compiled(tuple(patterns)) if patterns else None
