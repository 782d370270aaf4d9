"""nodenetd: per-node network tuning and failover for Linux."""

__version__ = "0.1.0"
