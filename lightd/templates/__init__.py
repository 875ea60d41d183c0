"""Templates: eggs imported as lightd templates, their variables, startup and config files.

Pure rooms: :mod:`.eggs` (egg JSON -> :class:`~lightd.spec.template.TemplateSpec`),
:mod:`.rules` (variable validation), :mod:`.startup` (safe substitution, start
detection, stop), :mod:`.configfiles` (text in, text out, per parser) and
:mod:`.resolve` (a container document plus its template -> the effective spec). Nothing
here reads or writes files, talks to the engine or awaits anything: the reconciler and
the desired side call these and do the I/O themselves.
"""
