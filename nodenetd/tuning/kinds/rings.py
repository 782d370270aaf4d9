"""Ring sizes (``ethtool -G``): rx, tx, rx-mini, rx-jumbo and buffer sizes."""

from nodenetd.tuning.kinds.limits import LimitsKind


class RingsKind(LimitsKind):
    name = "rings"
    what = "ring entries"
