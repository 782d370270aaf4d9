"""Queue counts (``ethtool -L``): rx, tx, other, combined."""

from nodenetd.tuning.kinds.limits import LimitsKind


class ChannelsKind(LimitsKind):
    name = "channels"
    what = "channels"
