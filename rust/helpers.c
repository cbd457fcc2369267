// SPDX-License-Identifier: GPL-2.0
/*
 * C side of tcm_ha: module metadata the Rust module! macro cannot express.
 * Helpers for static inlines and macros of the LIO headers go here too
 * (helpers only, no logic).
 */
#include <linux/module.h>

MODULE_VERSION(TCM_HA_VERSION);
