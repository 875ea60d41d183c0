"""Moving data onto this node: pulls from URLs (and node-to-node transfers).

``guard`` decides which URLs and addresses a pull may reach (pure); ``pull`` runs the
pulls. This package must not serve HTTP: the API calls it through ``Services``.
"""
