"""What the backend and its callers share: job contracts, protocol records and the client.

Standard library only (enforced by tests/test_boundaries.py): the QGIS plugin imports this package
through its `rs_refseg_plugin/protocol` link without pulling in torch or numpy.
"""

from .messages import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
