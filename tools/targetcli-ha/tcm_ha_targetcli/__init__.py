# SPDX-License-Identifier: GPL-2.0
"""Teaches the distribution's rtslib-fb and targetcli-fb the `ha` backstore
of tcm_ha.ko, without editing their installed files.

Stock rtslib-fb maps configfs HBA prefixes (core/<prefix>_<N>) to storage
object classes in rtslib_fb.tcm.so_mapping, and to backstore names in
rtslib_fb.tcm.bs_params; an unknown prefix raises KeyError in every listing
(RTSRoot.storage_objects), so stock targetcli cannot even `ls` once an `ha`
device exists. register() adds `ha` to both maps (RTSRoot.restore uses the
same so_mapping object) and a /backstores/ha node to targetcli's
/backstores, and makes saveconfig and restore carry the node's HA settings
(see persist.py). run_stock() then runs an installed tool's normal main.
"""
from __future__ import annotations

import runpy

__version__ = "0.1"

_registered = False


def register_rtslib() -> None:
    """Adds the `ha` storage object to rtslib-fb's maps and the node's HA
    settings to its save and restore (idempotent)."""
    from rtslib_fb import tcm

    from . import persist
    from .storage import PLUGIN, HaStorageObject

    tcm.so_mapping[PLUGIN] = HaStorageObject
    tcm.bs_params[HaStorageObject] = {"name": PLUGIN}
    persist.install()


def register_targetcli() -> None:
    """Adds /backstores/ha to targetcli-fb's backstore list (idempotent)."""
    from targetcli import ui_backstore

    from .ui import UIHaBackstore

    cls = ui_backstore.UIBackstores
    if getattr(cls.refresh, "_tcm_ha", False):
        return
    stock_refresh = cls.refresh

    def refresh(self):
        stock_refresh(self)
        UIHaBackstore(self)

    refresh._tcm_ha = True
    cls.refresh = refresh


def register(targetcli: bool = True) -> None:
    global _registered
    if _registered:
        return
    register_rtslib()
    if targetcli:
        register_targetcli()
    _registered = True


def run_stock(script: str, targetcli: bool = True) -> None:
    """Registers `ha`, then runs the installed tool `script` (e.g.
    /usr/bin/targetcli) as its own __main__, with our argv."""
    register(targetcli=targetcli)
    runpy.run_path(script, run_name="__main__")
