# SPDX-License-Identifier: GPL-2.0
"""rtslib-fb storage object for the `ha` backstore (tcm_ha.ko).

configfs layout: /sys/kernel/config/target/core/ha_<N>/<name>, configured by
writing a control string (comma-separated key=value pairs: dev=, lun_id=,
ha_role=, readonly=) and then 1 to `enable`. The module shows its settings
in `info` as one line:

    HA device: <name> dev: <path> lun_id: <n>|(derived) ha_role: <role>|node default readonly: 0|1
            capacity: <n> sectors, block size <n>       (only once enabled)
"""
from __future__ import annotations

import errno
import os
import re
import stat

from rtslib_fb.tcm import StorageObject
from rtslib_fb.utils import RTSLibError, fread

PLUGIN = "ha"
MAX_LUN_ID = 16383
ROLES = ("primary", "secondary")
# LIO's udev_path holds 512 bytes with the terminator; the module takes the same.
MAX_PATH = 511

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_readonly(value) -> bool:
    """readonly= as a bool: 0/1, true/false, yes/no, on/off (or a bool)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise RTSLibError(f"ha: bad value '{value}' for readonly: expected 0 or 1")


def parse_lun_id(value) -> int | None:
    if value is None or value == "":
        return None
    try:
        n = int(str(value).strip(), 10)
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_LUN_ID:
        raise RTSLibError(f"ha: bad value '{value}' for lun_id: expected an integer 0..{MAX_LUN_ID}")
    return n


def parse_role(value) -> str | None:
    if value is None or value == "":
        return None
    if value not in ROLES:
        raise RTSLibError(f"ha: bad value '{value}' for ha_role: expected primary or secondary")
    return value


def check_dev(dev) -> str:
    """dev= must name an existing block device by absolute path."""
    if dev is None or str(dev).strip() == "":
        raise RTSLibError("ha: dev= is required: the backing block device, e.g. dev=/dev/sdb")
    dev = str(dev).strip()
    if not dev.startswith("/") or len(dev) > MAX_PATH or any(c in dev for c in ",\n\0"):
        raise RTSLibError(f"ha: bad value '{dev}' for dev: expected an absolute path "
                          f"of at most {MAX_PATH} bytes without commas")
    try:
        mode = os.stat(dev).st_mode
    except OSError as e:
        raise RTSLibError(f"ha: dev={dev}: {os.strerror(e.errno)}") from None
    if not stat.S_ISBLK(mode):
        raise RTSLibError(f"ha: dev={dev} is not a block device")
    return dev


def control_string(dev, lun_id=None, ha_role=None, readonly=False) -> str:
    """The control string for these settings, after checking each of them
    (so that a bad value is refused before anything exists in configfs)."""
    pairs = [f"dev={check_dev(dev)}"]
    lun_id = parse_lun_id(lun_id)
    if lun_id is not None:
        pairs.append(f"lun_id={lun_id}")
    role = parse_role(ha_role)
    if role is not None:
        pairs.append(f"ha_role={role}")
    pairs.append(f"readonly={int(parse_readonly(readonly))}")
    return ",".join(pairs)


_INFO_RE = re.compile(
    r"HA device: (?P<name>\S+) dev: (?P<dev>.+?) lun_id: (?P<lun_id>\S+) "
    r"ha_role: (?P<ha_role>.+?) readonly: (?P<readonly>[01])")
_CAPACITY_RE = re.compile(r"capacity: (?P<sectors>\d+) sectors, block size (?P<bs>\d+)")


def parse_info(text: str) -> dict:
    """The module's settings from an `info` file (see the module docstring)."""
    flat = " ".join(text.split())
    m = _INFO_RE.search(flat)
    if not m:
        raise RTSLibError("ha: cannot parse the device's info (is tcm_ha.ko the matching version?): "
                          + flat)
    out = {
        "dev": None if m["dev"] == "(none)" else m["dev"],
        "lun_id": int(m["lun_id"]) if m["lun_id"].isdigit() else None,
        "ha_role": m["ha_role"] if m["ha_role"] in ROLES else None,
        "readonly": m["readonly"] == "1",
        "size": None,
    }
    c = _CAPACITY_RE.search(flat)
    if c:
        out["size"] = int(c["sectors"]) * 512
    return out


class HaStorageObject(StorageObject):
    """A storage object of the `ha` backstore.

    HaStorageObject(name, dev=..., ...) creates it (configfs directory,
    control string, udev_path, enable, unit serial); HaStorageObject(name)
    looks up an existing one. A failed creation removes what it made.
    """

    def __init__(self, name, dev=None, lun_id=None, ha_role=None, readonly=False,
                 wwn=None, index=None):
        if dev is None:
            if lun_id is not None or ha_role is not None or wwn is not None:
                raise RTSLibError("ha: dev= is required: the backing block device, e.g. dev=/dev/sdb")
            super().__init__(name, "lookup", index)
            return
        control = control_string(dev, lun_id, ha_role, readonly)
        super().__init__(name, "create", index)
        try:
            self._configure_ha(control, str(dev).strip(), wwn)
        except BaseException:
            self.delete()
            raise

    def _configure_ha(self, control: str, dev: str, wwn) -> None:
        self._check_self()
        try:
            self._control(control)
        except OSError as e:
            raise RTSLibError(f"ha/{self.name}: the module refused control '{control}': "
                              f"{os.strerror(e.errno)} (dmesg names the key)") from None
        self._set_udev_path(dev)
        try:
            self._enable()
        except OSError as e:
            hint = " (in use by another holder?)" if e.errno == errno.EBUSY else ""
            raise RTSLibError(f"ha/{self.name}: cannot enable on dev={dev}: "
                              f"{os.strerror(e.errno)}{hint}; dmesg has the module's reason") from None
        # Unit serial (generated when not given) and saved PR metadata.
        super()._configure(wwn)

    def _ha_info(self) -> dict:
        self._check_self()
        return parse_info(fread(f"{self.path}/info"))

    def _get_dev(self):
        return self._ha_info()["dev"]

    def _get_lun_id(self):
        return self._ha_info()["lun_id"]

    def _get_ha_role(self):
        return self._ha_info()["ha_role"]

    def _get_readonly(self):
        return self._ha_info()["readonly"]

    def _get_size(self):
        return self._ha_info()["size"]

    def _get_alua_supported(self):
        # The backstore owns ALUA (TRANSPORT_FLAG_PASSTHROUGH_ALUA): LIO's
        # target port groups do not apply to it.
        return False

    def _list_alua_tpgs(self):
        return iter(())

    dev = property(_get_dev, doc="The backing block device (control dev=).")
    lun_id = property(_get_lun_id, doc="The HA LUN identity, or None when derived.")
    ha_role = property(_get_ha_role, doc="primary, secondary, or None for the node default.")
    readonly = property(_get_readonly, doc="True if the backing device is opened read-only (readonly=1).")
    size = property(_get_size, doc="Capacity in bytes once enabled, else None.")
    alua_supported = property(_get_alua_supported,
                              doc="False: the ha backstore answers ALUA itself.")
    alua_tpgs = property(_list_alua_tpgs, doc="Always empty for ha (see alua_supported).")

    def dump(self):
        d = super().dump()
        info = self._ha_info()
        d["dev"] = info["dev"]
        d["readonly"] = info["readonly"]
        if info["lun_id"] is not None:
            d["lun_id"] = info["lun_id"]
        if info["ha_role"] is not None:
            d["ha_role"] = info["ha_role"]
        d["wwn"] = self.wwn
        return d
