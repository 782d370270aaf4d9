"""The system lab's VM image: Debian 12 with systemd as PID 1, bootstrapped and cached.

The image is a raw ext4 file system made from a mmdebstrap tree (the debootstrap of apt)
with ``mkfs.ext4 -d`` (no loop devices, no mounts), plus the kernel and a small initramfs
taken out of the tree, plus an SSH key the runner logs in with. It lives in
``.lab-cache/system-lab/image-<hash>/``, where the hash covers everything that decides its
content: the package lists, the code that builds and configures the tree, the package's own
run-time dependencies (from debian/control) and the mirror. Any change to one of them builds
a new image; the old one is deleted once the new one is complete. VMs boot it with
``snapshot=on``, so a run never changes the cached image.

Nothing is installed from the network at run time: the image carries every dependency of
the nodenetd package, and the lab's apt sources are only the local repository of the .deb
under test.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "NODENETD_SYSTEM_LAB_MIRROR"
# The guest: systemd as PID 1 with udev and journald, sshd for the runner, the tools the
# checks read the kernel with; ansible-core (and python3-apt for its apt module) for the
# Ansible tests, which run in a container booted from the same image (run.py says why).
PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "openssh-server", "python3", "python3-apt",
    "iproute2", "ethtool", "procps", "kmod", "initramfs-tools", "ansible-core",
    # Shared libraries the .deb depends on through dh_shlibdeps (debian/control cannot name
    # them); the runner checks the built package's Depends against packages.txt.
    "libyaml-0-2",
)
KERNEL_PACKAGE = "linux-image-amd64"
# The initramfs only has to find an ext4 root on virtio-blk: a short module list keeps it
# small, which matters under TCG (everything is emulated, decompression included).
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "crc32c_generic")
# Units a throwaway VM does not need; under emulation each costs seconds of boot.
# systemd-networkd took 51 s to start under TCG, and sshd waits for network.target: a
# oneshot with three `ip` commands (lab-network.service) configures the one NIC instead.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service",
    "apt-daily-upgrade.service", "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer",
    "getty@tty1.service", "systemd-networkd.service", "systemd-networkd.socket",
    "systemd-networkd-wait-online.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount",
    "dev-hugepages.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "modprobe@drm.service", "modprobe@dm_mod.service", "modprobe@efi_pstore.service",
    "modprobe@fuse.service", "systemd-pstore.service", "systemd-update-utmp-runlevel.service",
)
# Modules udev would load for the emulated machine's devices (floppy, IDE, PS/2, speaker,
# crypto for the CPU's flags): none is needed, each costs seconds under TCG.
BLACKLISTED_MODULES = (
    "floppy", "ata_piix", "ata_generic", "pata_acpi", "i2c_piix4", "pcspkr", "parport_pc",
    "ppdev", "serio_raw", "evdev", "psmouse", "joydev", "button", "qemu_fw_cfg", "sg",
    "sr_mod", "kvm", "kvm_intel", "kvm_amd", "intel_rapl_msr", "intel_rapl_common",
    "aesni_intel", "ghash_clmulni_intel", "crc32_pclmul", "crct10dif_pclmul",
    "polyval_clmulni", "sha1_ssse3", "sha256_ssse3", "sha512_ssse3",
)
GUEST_ADDRESS = "10.0.2.15/24"  # qemu user networking: the guest, the host is 10.0.2.2
GUEST_GATEWAY = "10.0.2.2"
IMAGE_SIZE = 3 * 1024**3  # sparse; the tree is ~0.9 GiB, the rest is room for the runs
KERNEL_CMDLINE = (
    "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 mitigations=off quiet "
    "systemd.show_status=false"
)


@dataclass(frozen=True)
class Image:
    dir: Path

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs.raw"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def ssh_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def recipe(self) -> dict[str, object]:
        return json.loads((self.dir / "recipe.json").read_text())

    def complete(self) -> bool:
        return all(p.exists() for p in (self.rootfs, self.kernel, self.initrd, self.ssh_key,
                                        self.dir / "recipe.json", self.dir / "packages.txt"))

    def packages(self) -> dict[str, str]:
        """What is installed in the image: {package: version}."""
        lines = (self.dir / "packages.txt").read_text().splitlines()
        return dict(line.split(" ", 1) for line in lines if " " in line)


def package_depends(control: Path = REPO / "debian" / "control") -> list[str]:
    """The nodenetd binary package's literal Depends (substitution variables and version
    constraints left out; the first of alternatives), so the image can install the .deb with
    no network."""
    text = control.read_text()
    stanzas = [s for s in re.split(r"\n\s*\n", text) if re.search(r"^Package:\s*nodenetd\s*$",
                                                                    s, re.M)]
    if not stanzas:
        return []
    found = re.search(r"^Depends:(.*(?:\n[ \t].*)*)", stanzas[0], re.M)
    if not found:
        return []
    names = []
    for item in found.group(1).replace("\n", " ").split(","):
        first = item.split("|")[0].strip()
        name = re.sub(r"\s*\(.*?\)|\s*\[.*?\]|:any", "", first).strip()
        if name and not name.startswith("${"):
            names.append(name)
    return names


def mirror() -> str:
    """The Debian mirror: $NODENETD_SYSTEM_LAB_MIRROR, else the first one apt is configured
    with for the main archive, else deb.debian.org."""
    if forced := os.environ.get(MIRROR_ENV):
        return forced
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.*)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1).rstrip("/")
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                return parts[1].rstrip("/")
    return DEFAULT_MIRROR


def recipe() -> dict[str, object]:
    return {
        "suite": SUITE,
        "mirror": mirror(),
        "packages": sorted({*PACKAGES, *package_depends()}),
        "kernel": KERNEL_PACKAGE,
        "masked_units": sorted(MASKED_UNITS),
        "blacklisted_modules": sorted(BLACKLISTED_MODULES),
        "initramfs_modules": list(INITRAMFS_MODULES),
        "size": IMAGE_SIZE,
        "builder_sha256": hashlib.sha256("".join(
            inspect.getsource(fn) for fn in (build, _configure, _clean, _write)
        ).encode()).hexdigest(),
    }


def recipe_hash(spec: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # another run building the same cache waits
        yield


def ensure_image(cache: Path, say: Callable[[str], None]) -> tuple[Image, float | None]:
    """The image for the current recipe, built if missing. Returns it and the build time in
    seconds (None when it came from the cache)."""
    spec = recipe()
    image = Image(cache / f"image-{recipe_hash(spec)}")
    with _locked(cache / ".image.lock"):
        if image.complete():
            say(f"image: cached {image.dir.name} (recipe unchanged)")
            return image, None
        started = time.monotonic()
        say(f"image: building {image.dir.name} ({spec['suite']} from {spec['mirror']})")
        build(image, spec, say)
        for old in cache.glob("image-*"):
            if old != image.dir:
                safe_rmtree(old)
        took = time.monotonic() - started
        say(f"image: built in {took:.0f}s")
        return image, took


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo), deepest first."""
    base = os.path.realpath(path)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == base or point.startswith(base + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def safe_rmtree(path: Path) -> None:
    """rmtree that first unmounts whatever is mounted below ``path`` (an interrupted
    bootstrap leaves /proc, /sys and /dev mounted in its tree: deleting through those would
    reach the host's), and refuses to delete while anything stays mounted."""
    if not os.path.lexists(path):
        return
    for point in mounts_under(path):
        subprocess.run(["umount", "-R", point], capture_output=True, check=False)
    if left := mounts_under(path):
        for point in left:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        if left := mounts_under(path):
            raise RuntimeError(f"not deleting {path}: still mounted there: {left}")
    shutil.rmtree(path, ignore_errors=True)


def _run(argv: list[str], log: Path, timeout: float = 900) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                              check=False, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive",
                                                "LC_ALL": "C.UTF-8"})
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{argv[0]} failed (exit {proc.returncode}); log {log}:\n{tail}")


def build(image: Image, spec: dict[str, object], say: Callable[[str], None]) -> None:
    work = image.dir.with_name(image.dir.name + ".building")
    safe_rmtree(work)
    safe_rmtree(image.dir)
    root = work / "root"
    overlay = work / "overlay"
    work.mkdir(parents=True)
    log = work / "build.log"
    # Before any package is unpacked, so the kernel's postinst builds the small initramfs.
    _write(overlay / "etc/initramfs-tools/conf.d/lab.conf", "MODULES=list\nCOMPRESS=gzip\n")
    hook = ["#!/bin/sh", '[ "$1" = prereqs ] && exit 0',
            ". /usr/share/initramfs-tools/hook-functions",
            *(f"force_load {module}" for module in INITRAMFS_MODULES)]
    _write(overlay / "etc/initramfs-tools/hooks/lab-modules", "\n".join(hook) + "\n", 0o755)
    packages = [*spec["packages"], str(spec["kernel"])]  # type: ignore[misc]
    t0 = time.monotonic()
    # mmdebstrap rather than debootstrap: apt resolves and downloads in one go and dpkg runs
    # once, with --force-unsafe-io (no fsync per file: the tree is thrown away after mkfs).
    # Twice as fast as debootstrap here, and the kernel goes in the same run.
    _run(["mmdebstrap", "--mode=root", "--variant=minbase", "--components=main",
          "--dpkgopt=force-unsafe-io", '--aptopt=Acquire::Retries "3"',
          f"--include={','.join(packages)}", f"--setup-hook=sync-in {overlay} /",
          str(spec["suite"]), str(root), str(spec["mirror"])], log)
    say(f"image: root file system (mmdebstrap, kernel included) in {time.monotonic() - t0:.0f}s")
    _configure(root, work)
    boot = root / "boot"
    [vmlinuz] = sorted(boot.glob("vmlinuz-*"))
    [initrd] = sorted(boot.glob("initrd.img-*"))
    shutil.copyfile(vmlinuz, work / "vmlinuz")
    shutil.copyfile(initrd, work / "initrd.img")
    installed = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                                "-f", "${Package} ${Version}\n"],
                               capture_output=True, text=True, check=True).stdout
    (work / "packages.txt").write_text(installed)
    _clean(root)
    t0 = time.monotonic()
    with (work / "rootfs.raw").open("wb") as raw:
        raw.truncate(IMAGE_SIZE)
    _run(["mkfs.ext4", "-q", "-F", "-L", "labroot", "-d", str(root), str(work / "rootfs.raw")],
         log)
    say(f"image: ext4 image in {time.monotonic() - t0:.0f}s")
    safe_rmtree(root)
    safe_rmtree(overlay)
    (work / "recipe.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    work.rename(image.dir)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _configure(root: Path, work: Path) -> None:
    _write(root / "etc/hostname", "nodenetd-lab\n")
    _write(root / "etc/hosts", "127.0.0.1 localhost\n127.0.1.1 nodenetd-lab\n")
    # The kernel mounts the root read-write (rw on its command line): no fstab entry, so
    # nothing waits for udev to announce /dev/vda.
    _write(root / "etc/fstab", "")
    # The NIC of qemu's user networking, static: no DHCP and no network manager at boot.
    _write(root / "etc/systemd/system/lab-network.service", (
        "[Unit]\nDescription=system lab: the uplink of qemu's user networking\n"
        "DefaultDependencies=no\nAfter=sys-subsystem-net-devices-eth0.device\n"
        "BindsTo=sys-subsystem-net-devices-eth0.device\nAfter=network-pre.target\n"
        "Before=network.target\nWants=network.target\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
        "ExecStart=/sbin/ip link set lo up\n"
        f"ExecStart=/sbin/ip address add {GUEST_ADDRESS} dev eth0\n"
        "ExecStart=/sbin/ip link set eth0 up\n"
        f"ExecStart=/sbin/ip route add default via {GUEST_GATEWAY}\n\n"
        "[Install]\nWantedBy=multi-user.target\n"))
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        (wants / "lab-network.service").symlink_to("/etc/systemd/system/lab-network.service")
    # The one change to nodenetd's unit in the lab, made before the package arrives: under
    # TCG the interpreter alone needs ~40 s to import nodenetd on this machine, so the 60 s
    # start timeout of the shipped unit would be a coin toss. Nothing of the sandbox changes.
    _write(root / "etc/systemd/system/nodenetd.service.d/lab-emulation.conf",
           "# system lab: start-up under emulation is slow\n[Service]\nTimeoutStartSec=300\n")
    _write(root / "etc/modprobe.d/lab-blacklist.conf",
           "".join(f"blacklist {module}\n" for module in BLACKLISTED_MODULES))
    for unit in MASKED_UNITS:
        target = root / "etc/systemd/system" / unit
        target.unlink(missing_ok=True)
        target.symlink_to("/dev/null")
    # Journal in memory only: nothing to flush or rotate in a throwaway VM.
    _write(root / "etc/systemd/journald.conf.d/lab.conf", "[Journal]\nStorage=volatile\n")
    _write(root / "etc/ssh/sshd_config.d/lab.conf",
           "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
           "GSSAPIAuthentication no\nMaxSessions 50\nMaxStartups 50\n")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nodenetd-system-lab",
                    "-f", str(key)], check=True)
    _write(root / "root/.ssh/authorized_keys", (work / "id_ed25519.pub").read_text(), 0o600)
    (root / "root/.ssh").chmod(0o700)
    _write(root / "etc/apt/apt.conf.d/90lab",
           'APT::Install-Recommends "false";\nAcquire::Languages "none";\n')


def _clean(root: Path) -> None:
    # The lab's only apt source is the local repository of the package under test.
    (root / "etc/apt/sources.list").write_text("")
    for extra in (root / "etc/apt/sources.list.d").glob("*"):
        extra.unlink()
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for lists in (root / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/machine-id").write_text("")  # systemd makes one at first boot
