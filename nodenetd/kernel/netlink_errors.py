"""One mapping from kernel errno to nodenetd's typed kernel errors, shared by every adapter."""

from __future__ import annotations

import errno as errno_mod
import os

from nodenetd.errors import Gone, KernelError, Refused, Unsupported

ENOTSUPP = 524  # the kernel-internal "not supported" that leaks out of some drivers

_UNSUPPORTED = {errno_mod.EOPNOTSUPP, ENOTSUPP, errno_mod.EBUSY, errno_mod.ENOENT}
_GONE = {errno_mod.ENODEV, errno_mod.ENXIO}


def errno_name(code: int | None) -> str:
    if code is None:
        return "?"
    if code == ENOTSUPP:
        return "ENOTSUPP"
    return errno_mod.errorcode.get(code, str(code))


def kernel_error(target: str, setting: str, code: int | None, detail: str = "") -> KernelError:
    """Classify an errno: EOPNOTSUPP/EBUSY mean 'this device cannot', ENODEV means the
    interface went away, anything else means the kernel refused this value."""
    reason = f"{errno_name(code)}"
    if code is not None and code != ENOTSUPP and code in errno_mod.errorcode:
        reason += f" ({os.strerror(code)})"
    if detail:
        reason += f": {detail}"
    if code in _GONE:
        return Gone(target, setting, reason, code)
    if code in _UNSUPPORTED:
        return Unsupported(target, setting, reason, code)
    return Refused(target, setting, reason, code)
