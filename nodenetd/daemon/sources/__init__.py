"""The daemon's event sources: non-blocking fds on the one event loop (``loop.add_reader``).

- ``rtnl``: links, addresses and routes (rtnetlink); keeps the ``LinkView`` and reports
  ``LinkChange`` values; the hotplug trigger.
- ``ethtool_monitor``: ethtool notifications (features, channels, rings, coalescing).
- ``udev``: optional udev properties; absent without udevd and in other network namespaces.
"""
