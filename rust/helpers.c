// SPDX-License-Identifier: GPL-2.0
/*
 * C side of tcm_ha: module metadata the Rust module! macro cannot express.
 * Helpers for static inlines and macros of the LIO headers go here too
 * (helpers only, no logic).
 */
#include <linux/module.h>

MODULE_VERSION(TCM_HA_VERSION);

#include "tcm_ha_lio.h"

bool tcm_ha_dev_configured(struct se_device *dev)
{
	return target_dev_configured(dev);
}

#include <linux/blkdev.h>

sector_t tcm_ha_bdev_nr_sectors(struct file *bdev_file)
{
	return bdev_nr_sectors(file_bdev(bdev_file));
}

unsigned int tcm_ha_bdev_logical_block_size(struct file *bdev_file)
{
	return bdev_logical_block_size(file_bdev(bdev_file));
}
