/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Input of bindgen for tcm_ha's LIO bindings (rust/lio/bindings_generated.rs,
 * built, never committed) and the prototypes of rust/helpers.c.
 */
#ifndef TCM_HA_LIO_H
#define TCM_HA_LIO_H

#include <target/target_core_base.h>
#include <target/target_core_backend.h>
#include <target/target_core_fabric.h>

struct file;

/* rust/helpers.c: static inlines and macros of the LIO headers. */
bool tcm_ha_dev_configured(struct se_device *dev);
sector_t tcm_ha_bdev_nr_sectors(struct file *bdev_file);
unsigned int tcm_ha_bdev_logical_block_size(struct file *bdev_file);

#endif /* TCM_HA_LIO_H */
