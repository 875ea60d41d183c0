"""The container engine boundary: the only package that imports ``docker``.

``base`` declares the :class:`Engine` seam, ``records`` the vocabulary it shares with
the reconciler, ``docker`` the docker-py implementation (imported only by the daemon and
the CLI), ``fake`` an in-memory engine for tests, ``translate`` the error mapping. This
package file imports nothing, so that importing a record never loads docker-py.
"""
