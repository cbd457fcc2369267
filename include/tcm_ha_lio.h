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
struct bio;
struct page;
struct scatterlist;

/* rust/helpers.c: static inlines and macros of the LIO, block and
 * scatterlist headers. */
bool tcm_ha_dev_configured(struct se_device *dev);
sector_t tcm_ha_bdev_nr_sectors(struct file *bdev_file);
unsigned int tcm_ha_bdev_logical_block_size(struct file *bdev_file);
unsigned int tcm_ha_bdev_max_hw_sectors(struct file *bdev_file);
bool tcm_ha_bdev_write_cache(struct file *bdev_file);
bool tcm_ha_bdev_nonrot(struct file *bdev_file);
struct bio *tcm_ha_bio_alloc(struct file *bdev_file, unsigned short nr_vecs, unsigned int opf);
bool tcm_ha_ratelimit(void);
unsigned int tcm_ha_dev_port_ids(struct se_device *dev, u16 *ids, unsigned int max);
bool tcm_ha_caw_trylock(struct se_device *dev);
void tcm_ha_caw_unlock(struct se_device *dev);
unsigned int tcm_ha_dev_queue_cnt(struct se_device *dev);
unsigned long tcm_ha_dev_queue_lock(struct se_device *dev, unsigned int q);
void tcm_ha_dev_queue_unlock(struct se_device *dev, unsigned int q, unsigned long flags);
struct se_cmd *tcm_ha_dev_queue_next(struct se_device *dev, unsigned int q, struct se_cmd *cmd);
bool tcm_ha_cmd_abort_silently(struct se_cmd *cmd);

/* rust/helpers.c: the interlink's socket options, kthread_run() and HMAC. */
struct socket;
struct task_struct;
struct hmac_sha256_ctx;
void tcm_ha_sock_tune(struct socket *sock, unsigned int rcv_ms, unsigned int snd_ms);
struct task_struct *tcm_ha_kthread_run(int (*fn)(void *), void *data, const char *name);
bool tcm_ha_is_err(const void *ptr);
long tcm_ha_ptr_err(const void *ptr);
void tcm_ha_hmac_sha256_update(struct hmac_sha256_ctx *ctx, const u8 *data, size_t len);
void tcm_ha_link_kick(void);
void tcm_ha_link_wait(unsigned int ms);
void tcm_ha_sock_watch(struct socket *sock);
void tcm_ha_sock_unwatch(struct socket *sock);

#include <linux/reboot.h>

/* crc32c(): the interlink's frame checksum (hardware-accelerated where the
 * CPU can). */
#include <linux/crc32.h>

#endif /* TCM_HA_LIO_H */
