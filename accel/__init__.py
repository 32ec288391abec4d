"""accel: node-local TCP acceleration with sockmap/sk_msg.

Public entry points are the ``accel`` command (:mod:`accel.cli`) and the
lifecycle object :class:`accel.datapath.Datapath`.
"""

__version__ = "0.1.0"
