# SPDX-License-Identifier: GPL-2.0
"""targetcli-fb nodes for the `ha` backstore: /backstores/ha and its objects."""
from __future__ import annotations

import stat

from configshell_fb import ExecutionError
from rtslib_fb.utils import RTSLibError
from targetcli.ui_backstore import (UIBackstore, UIStorageObject, bytes_to_human,
                                    complete_path)

from .storage import ROLES, HaStorageObject


class UIHaStorageObject(UIStorageObject):
    """One `ha` storage object."""

    def summary(self):
        so = self.rtsnode
        info = so._ha_info()
        parts = [info["dev"] or "(no dev)"]
        if info["size"] is not None:
            parts.append(f"({bytes_to_human(info['size'])})")
        parts.append(f"lun_id={info['lun_id'] if info['lun_id'] is not None else 'derived'}")
        parts.append(f"ha_role={info['ha_role'] or 'node-default'}")
        if info["readonly"]:
            parts.append("ro")
        parts.append(so.status)
        return " ".join(parts), True


class UIHaBackstore(UIBackstore):
    """/backstores/ha: storage objects of tcm_ha.ko's `ha` backstore."""

    def __init__(self, parent):
        self.so_cls = UIHaStorageObject
        UIBackstore.__init__(self, "ha", parent)

    def ui_command_create(self, name, dev=None, lun_id=None, ha_role=None, readonly=None,
                          wwn=None):
        '''
        Creates an ha storage object (tcm_ha.ko) on the block device "dev".

        "lun_id" (0..16383) is the LUN's identity shared by both HA nodes
        (derived when omitted); "ha_role" (primary or secondary) overrides
        the node's role for this LUN; "readonly" (0 or 1) opens the device
        read-only; "wwn" sets the unit serial (generated when omitted).
        Every value is checked before anything is created.

        EXAMPLE
        =======
        create name=disk0 dev=/dev/sdb lun_id=1 ha_role=primary
        '''
        self.assert_root()
        wwn = self.ui_eval_param(wwn, "string", None)
        try:
            so = HaStorageObject(name, dev=dev if dev is not None else "", lun_id=lun_id,
                                 ha_role=ha_role,
                                 readonly=readonly if readonly is not None else False,
                                 wwn=wwn)
        except RTSLibError as e:
            raise ExecutionError(str(e)) from None
        ui_so = UIHaStorageObject(so, self)
        self.setup_model_alias(so)
        self.shell.log.info(f"Created ha storage object {name} using {so.dev}.")
        return self.new_node(ui_so)

    def ui_complete_create(self, parameters, text, current_param):
        '''
        Completes dev (block devices), ha_role and readonly.
        '''
        if current_param == "dev":
            completions = complete_path(text, stat.S_ISBLK)
        elif current_param == "ha_role":
            completions = [r for r in ROLES if r.startswith(text)]
        elif current_param == "readonly":
            completions = [v for v in ("0", "1") if v.startswith(text)]
        else:
            return []
        if len(completions) == 1 and not completions[0].endswith("/"):
            completions = [completions[0] + " "]
        return completions
