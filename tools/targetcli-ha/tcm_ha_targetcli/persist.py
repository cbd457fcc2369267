# SPDX-License-Identifier: GPL-2.0
"""The node's HA settings and the target ports' relative ids in saveconfig
files, for rtslib-fb's RTSRoot.dump() and RTSRoot.restore().

saveconfig (targetcli-ha saveconfig, targetctl-ha save) adds a top-level
object with the writable settings of /sys/kernel/config/tcm_ha/:

    "tcm_ha": {"failover": "manual", "ha_id": 1, "ha_mode": 0,
               "ha_peer": "listen 192.0.2.1:7788", "ha_role": "primary"}

and to every target portal group its relative target port id ("rtpi"),
which rtslib-fb does not save (both nodes of a pair need distinct ids).

The pre-shared key is write-only in configfs and never saved. At restore it
is read from a root-only file (KEY_FILE_ENV, else tcm_ha.key next to
rtslib's default saveconfig.json) and written to ha_key.

A full restore (no target= or storage_object= filter) writes the node
settings before any storage object is created, in the order ha_key, ha_id,
ha_mode, failover, ha_role, ha_peer (the link starts with everything set);
settings equal to the running ones are not written again. The key file and
the saved values are checked before anything changes, the clearing of the
old configuration included. TPGs with a saved rtpi are created disabled,
given the id, then enabled as saved.
"""
from __future__ import annotations

import inspect
import os
import stat

from rtslib_fb.utils import RTSLibError

NODE_DIR = "/sys/kernel/config/tcm_ha"
# Overrides the key file's path.
KEY_FILE_ENV = "TCM_HA_KEY_FILE"
# primary or secondary: restore the node's ha_role as this instead of the
# saved one (for example a node that must never come back as primary by
# itself after a reboot).
ROLE_ENV = "TCM_HA_RESTORE_ROLE"
KEY_NAME = "tcm_ha.key"
MIN_KEY, MAX_KEY = 16, 128

# Application order at restore; ha_key goes first, separately.
NODE_ATTRS = ("ha_id", "ha_mode", "failover", "ha_role", "ha_peer")
_INT_ATTRS = ("ha_id", "ha_mode")
_CHOICES = {"ha_id": (0, 1, 2), "ha_mode": (0, 1, 2), "failover": ("manual", "auto"),
            "ha_role": ("primary", "secondary")}

_installed = False


def default_key_file() -> str:
    """tcm_ha.key in the directory of rtslib's default saveconfig.json
    (Debian: /etc/rtslib-fb-target), unless KEY_FILE_ENV names a file."""
    path = os.environ.get(KEY_FILE_ENV)
    if path:
        return path
    from rtslib_fb import root
    return os.path.join(os.path.dirname(root.default_save_file), KEY_NAME)


def read_node(node_dir: str | None = None) -> dict | None:
    """The writable node settings, or None when tcm_ha is not loaded."""
    node_dir = node_dir or NODE_DIR
    if not os.path.isdir(node_dir):
        return None
    out = {}
    for attr in NODE_ATTRS:
        try:
            with open(os.path.join(node_dir, attr)) as f:
                value = f.read().strip()
        except FileNotFoundError:
            # A module without this setting: nothing to save.
            continue
        except OSError as e:
            raise RTSLibError(f"tcm_ha: cannot read {node_dir}/{attr}: {os.strerror(e.errno)}") from None
        out[attr] = int(value) if attr in _INT_ATTRS else value
    return out


def check_node(saved) -> dict:
    """The saved node settings, checked; RTSLibError names a bad one."""
    if not isinstance(saved, dict):
        raise RTSLibError("tcm_ha: the saved 'tcm_ha' entry is not an object")
    unknown = sorted(set(saved) - set(NODE_ATTRS))
    if unknown:
        raise RTSLibError(f"tcm_ha: unknown saved node setting(s): {', '.join(unknown)}")
    out = {}
    for attr in NODE_ATTRS:
        if attr not in saved:
            continue
        value = saved[attr]
        if attr in _CHOICES:
            # JSON true would pass as 1.
            ok = not isinstance(value, bool) and value in _CHOICES[attr]
        else:
            ok = isinstance(value, str) and "\n" not in value
        if not ok:
            raise RTSLibError(f"tcm_ha: bad saved value {value!r} for {attr}")
        out[attr] = int(value) if attr in _INT_ATTRS else value
    role = os.environ.get(ROLE_ENV, "").strip()
    if role:
        if role not in _CHOICES["ha_role"]:
            raise RTSLibError(f"tcm_ha: {ROLE_ENV}={role}: expected primary or secondary")
        out["ha_role"] = role
    return out


def load_key(path: str) -> bytes | None:
    """The key in `path` without trailing newlines, or None if there is no
    such file. Refuses a file that group or others may access, that root
    does not own or that is not a regular file, and a key the module would
    refuse (16 to 128 bytes)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RTSLibError(f"tcm_ha: key file {path}: {os.strerror(e.errno)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise RTSLibError(f"tcm_ha: key file {path} is not a regular file")
    if st.st_uid != 0:
        raise RTSLibError(f"tcm_ha: key file {path} is not owned by root: refusing to use it")
    if st.st_mode & 0o077:
        raise RTSLibError(f"tcm_ha: key file {path} is accessible by group or others "
                          f"(mode {stat.S_IMODE(st.st_mode):04o}): refusing to use it; "
                          f"run: chmod 600 {path}")
    try:
        with open(path, "rb") as f:
            key = f.read(MAX_KEY + 3)
    except OSError as e:
        raise RTSLibError(f"tcm_ha: key file {path}: {os.strerror(e.errno)}") from None
    key = key.rstrip(b"\r\n")
    if not MIN_KEY <= len(key) <= MAX_KEY:
        raise RTSLibError(f"tcm_ha: key file {path} holds {len(key)} bytes: "
                          f"the key must be {MIN_KEY} to {MAX_KEY} bytes")
    return key


def _write(node_dir: str, attr: str, data: bytes) -> None:
    fd = os.open(os.path.join(node_dir, attr), os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def apply_node(node: dict, key: bytes | None, key_path: str, err,
               node_dir: str | None = None) -> None:
    """Writes the key and the settings in `node` (see check_node) to
    configfs; every failure goes to err(message)."""
    node_dir = node_dir or NODE_DIR
    if not os.path.isdir(node_dir):
        err(f"tcm_ha: {node_dir} does not exist (load tcm_ha.ko first): "
            f"node settings not restored")
        return
    if key is not None:
        try:
            _write(node_dir, "ha_key", key)
        except OSError as e:
            err(f"tcm_ha: cannot set ha_key from {key_path}: {os.strerror(e.errno)}")
    elif node.get("ha_peer"):
        err(f"tcm_ha: no key file {key_path}: ha_key not set, so the interlink only "
            f"comes up with a loopback peer")
    current = read_node(node_dir) or {}
    for attr in NODE_ATTRS:
        if attr not in node or current.get(attr) == node[attr]:
            continue
        try:
            _write(node_dir, attr, f"{node[attr]}\n".encode())
        except OSError as e:
            err(f"tcm_ha: cannot set {attr} to '{node[attr]}': {os.strerror(e.errno)} "
                f"(dmesg has the module's reason)")


def read_rtpi(tpg_path: str) -> int | None:
    """The relative target port id of the TPG at `tpg_path` (None if the
    kernel has no rtpi file, or the id is not assigned yet)."""
    try:
        with open(os.path.join(tpg_path, "rtpi")) as f:
            value = int(f.read().strip(), 0)
    except (OSError, ValueError):
        return None
    return value or None


def _bind(fn, *args, **kwargs) -> inspect.BoundArguments:
    b = inspect.signature(fn).bind(*args, **kwargs)
    b.apply_defaults()
    return b


def install() -> None:
    """Wraps RTSRoot.dump/restore (and the partial save) and TPG.dump/setup
    of the installed rtslib-fb (idempotent). The installed files are not
    changed."""
    global _installed
    if _installed:
        return
    from rtslib_fb import root, target

    rts = root.RTSRoot
    stock_dump = rts.dump
    stock_restore = rts.restore
    stock_saveconf = getattr(rts, "_get_saveconf", None)

    def dump(self):
        d = stock_dump(self)
        node = read_node()
        if node is not None:
            d["tcm_ha"] = node
        return d

    def restore(self, config, *args, **kwargs):
        b = _bind(stock_restore, self, config, *args, **kwargs)
        a = b.arguments
        saved = config.get("tcm_ha") if isinstance(config, dict) else None
        if saved is None or a.get("target") or a.get("storage_object"):
            return stock_restore(*b.args, **b.kwargs)
        # Everything that can refuse is checked before anything changes.
        node = check_node(saved)
        key_path = default_key_file()
        key = load_key(key_path)
        errors = []
        if a.get("abort_on_error"):
            def err(msg):
                raise RTSLibError(msg)
        else:
            def err(msg):
                errors.append(msg + ", skipped")
        if a.get("clear_existing"):
            # ha_id and ha_mode cannot change while ha devices exist.
            self.clear_existing(confirm=True)
            a["clear_existing"] = False
        apply_node(node, key, key_path, err)
        return errors + list(stock_restore(*b.args, **b.kwargs) or [])

    def saveconf(self, *args, **kwargs):
        conf = stock_saveconf(self, *args, **kwargs)
        node = read_node()
        if node is not None:
            conf["tcm_ha"] = node
        return conf

    rts.dump = dump
    rts.restore = restore
    if stock_saveconf is not None:
        rts._get_saveconf = saveconf
    _install_rtpi(target.TPG)
    _installed = True


def _install_rtpi(tpg_cls) -> None:
    """Saves and restores each TPG's rtpi (only written while the TPG is
    disabled). Skipped if this rtslib's TPG.setup is not the one expected."""
    stock_setup = inspect.getattr_static(tpg_cls, "setup", None)
    if not isinstance(stock_setup, classmethod):
        return
    setup_fn = stock_setup.__func__
    if list(inspect.signature(setup_fn).parameters) != ["cls", "t_obj", "tpg", "err_func"]:
        return
    stock_dump = tpg_cls.dump

    def dump(self):
        d = stock_dump(self)
        rtpi = read_rtpi(self.path)
        if rtpi:
            d["rtpi"] = rtpi
        return d

    def setup(cls, t_obj, tpg, err_func):
        rtpi = tpg.pop("rtpi", None) if isinstance(tpg, dict) else None
        tag = tpg.get("tag") if isinstance(tpg, dict) else None
        if not rtpi or tag is None:
            return setup_fn(cls, t_obj, tpg, err_func)
        enable = tpg.get("enable", True)
        tpg["enable"] = False
        setup_fn(cls, t_obj, tpg, err_func)
        try:
            tpg_obj = cls(t_obj, tag, "lookup")
        except RTSLibError as e:
            err_func(f"tcm_ha: TPG {tag}: {e}: rtpi not restored")
            return None
        try:
            with open(os.path.join(tpg_obj.path, "rtpi"), "w") as f:
                f.write(f"{int(rtpi)}\n")
        except (OSError, ValueError) as e:
            err_func(f"tcm_ha: TPG {tag}: cannot set rtpi {rtpi!r}: {e}")
        try:
            tpg_obj.enable = enable
        except RTSLibError as e:
            err_func(f"tcm_ha: TPG {tag}: {e}")
        return None

    tpg_cls.dump = dump
    tpg_cls.setup = classmethod(setup)
