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

/* The device's COMPARE AND WRITE lock (LIO's caw_sem). */
bool tcm_ha_caw_trylock(struct se_device *dev)
{
	return down_trylock(&dev->caw_sem) == 0;
}

void tcm_ha_caw_unlock(struct se_device *dev)
{
	up(&dev->caw_sem);
}

/*
 * The device's per-CPU lists of commands LIO is executing, walked under
 * each list's lock (PREEMPT AND ABORT marks the preempted nexuses' ones).
 */
unsigned int tcm_ha_dev_queue_cnt(struct se_device *dev)
{
	return dev->queue_cnt;
}

unsigned long tcm_ha_dev_queue_lock(struct se_device *dev, unsigned int q)
{
	unsigned long flags;

	spin_lock_irqsave(&dev->queues[q].lock, flags);
	return flags;
}

void tcm_ha_dev_queue_unlock(struct se_device *dev, unsigned int q, unsigned long flags)
{
	spin_unlock_irqrestore(&dev->queues[q].lock, flags);
}

/* The command after @cmd on list @q (the first for NULL), NULL at the end. */
struct se_cmd *tcm_ha_dev_queue_next(struct se_device *dev, unsigned int q, struct se_cmd *cmd)
{
	struct list_head *head = &dev->queues[q].state_list;
	struct list_head *next = cmd ? cmd->state_list.next : head->next;

	return next == head ? NULL : list_entry(next, struct se_cmd, state_list);
}

/*
 * TAS 0: an aborted command ends without status. Marks @cmd aborted as a
 * task management function does (CMD_T_ABORTED without CMD_T_TAS), so that
 * target_complete_cmd() hands it to LIO's abort handling, which releases it
 * through the fabric's aborted_task() instead of sending a status. False if
 * LIO already completes or stops it (the caller then sends TASK ABORTED).
 */
bool tcm_ha_cmd_abort_silently(struct se_cmd *cmd)
{
	unsigned long flags;
	bool marked = false;

	spin_lock_irqsave(&cmd->t_state_lock, flags);
	if (!(cmd->transport_state & (CMD_T_COMPLETE | CMD_T_FABRIC_STOP | CMD_T_ABORTED))) {
		cmd->transport_state |= CMD_T_ABORTED;
		marked = true;
	}
	spin_unlock_irqrestore(&cmd->t_state_lock, flags);
	return marked;
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

unsigned int tcm_ha_bdev_max_hw_sectors(struct file *bdev_file)
{
	return queue_max_hw_sectors(bdev_get_queue(file_bdev(bdev_file)));
}

bool tcm_ha_bdev_write_cache(struct file *bdev_file)
{
	return bdev_write_cache(file_bdev(bdev_file));
}

bool tcm_ha_bdev_nonrot(struct file *bdev_file)
{
	return !bdev_rot(file_bdev(bdev_file));
}

#include <linux/bio.h>

/* GFP_NOIO: the data path must not recurse into IO to free memory. */
struct bio *tcm_ha_bio_alloc(struct file *bdev_file, unsigned short nr_vecs, unsigned int opf)
{
	return bio_alloc(file_bdev(bdev_file), nr_vecs, (__force blk_opf_t)opf, GFP_NOIO);
}

#include <linux/ratelimit.h>

/* One shared budget for tcm_ha's data-path error messages. */
static DEFINE_RATELIMIT_STATE(tcm_ha_rs, DEFAULT_RATELIMIT_INTERVAL, DEFAULT_RATELIMIT_BURST);

bool tcm_ha_ratelimit(void)
{
	return __ratelimit(&tcm_ha_rs);
}

/*
 * Relative target port ids of the LUNs exporting @dev (list_for_each_entry
 * under the device's port lock); returns how many there are, of which the
 * first @max are stored.
 */
unsigned int tcm_ha_dev_port_ids(struct se_device *dev, u16 *ids, unsigned int max)
{
	struct se_lun *lun;
	unsigned int n = 0;

	spin_lock(&dev->se_port_lock);
	list_for_each_entry(lun, &dev->dev_sep_list, lun_dev_link) {
		if (n < max)
			ids[n] = lun->lun_tpg->tpg_rtpi;
		n++;
	}
	spin_unlock(&dev->se_port_lock);
	return n;
}

/* Interlink: socket options (static inlines of net/sock.h and linux/tcp.h),
 * kthread_run() (a macro) and the HMAC update (a static inline). */
#include <linux/kthread.h>
#include <linux/tcp.h>
#include <net/sock.h>
#include <crypto/sha2.h>

void tcm_ha_sock_tune(struct socket *sock, unsigned int rcv_ms, unsigned int snd_ms)
{
	struct sock *sk = sock->sk;

	sk->sk_allocation = GFP_NOIO;
	sock_set_reuseaddr(sk);
	sock_set_keepalive(sk);
	tcp_sock_set_keepidle(sk, 1);
	tcp_sock_set_keepintvl(sk, 1);
	tcp_sock_set_keepcnt(sk, 2);
	tcp_sock_set_user_timeout(sk, 2000);
	tcp_sock_set_nodelay(sk);
	lock_sock(sk);
	sk->sk_rcvtimeo = msecs_to_jiffies(rcv_ms);
	sk->sk_sndtimeo = msecs_to_jiffies(snd_ms);
	release_sock(sk);
}

/* kthread_run() plus a task reference, dropped by kthread_stop_put(). */
struct task_struct *tcm_ha_kthread_run(int (*fn)(void *), void *data, const char *name)
{
	struct task_struct *t = kthread_run(fn, data, "%s", name);

	if (!IS_ERR(t))
		get_task_struct(t);
	return t;
}

bool tcm_ha_is_err(const void *ptr)
{
	return IS_ERR(ptr);
}

long tcm_ha_ptr_err(const void *ptr)
{
	return PTR_ERR(ptr);
}

void tcm_ha_hmac_sha256_update(struct hmac_sha256_ctx *ctx, const u8 *data, size_t len)
{
	hmac_sha256_update(ctx, data, len);
}

/*
 * The interlink thread's wake-up: it sleeps in tcm_ha_link_wait() until
 * tcm_ha_link_kick() (data arrived on the link socket, the socket can take
 * more, or a command was queued for the peer) or a timeout. One interlink
 * thread per module, hence one wait queue.
 */
static DECLARE_WAIT_QUEUE_HEAD(tcm_ha_link_wq);
static atomic_t tcm_ha_link_kicked = ATOMIC_INIT(0);

void tcm_ha_link_kick(void)
{
	atomic_set(&tcm_ha_link_kicked, 1);
	wake_up(&tcm_ha_link_wq);
}

void tcm_ha_link_wait(unsigned int ms)
{
	wait_event_interruptible_timeout(tcm_ha_link_wq,
		atomic_xchg(&tcm_ha_link_kicked, 0) || kthread_should_stop(),
		msecs_to_jiffies(ms));
}

/* TCP's own callbacks, chained to (the same for every TCP socket). */
static void (*tcm_ha_tcp_data_ready)(struct sock *sk);
static void (*tcm_ha_tcp_write_space)(struct sock *sk);

static void tcm_ha_data_ready(struct sock *sk)
{
	tcm_ha_tcp_data_ready(sk);
	tcm_ha_link_kick();
}

static void tcm_ha_write_space(struct sock *sk)
{
	tcm_ha_tcp_write_space(sk);
	tcm_ha_link_kick();
}

/* Kicks the interlink thread when @sock has data or room to send. */
void tcm_ha_sock_watch(struct socket *sock)
{
	struct sock *sk = sock->sk;

	write_lock_bh(&sk->sk_callback_lock);
	if (sk->sk_data_ready != tcm_ha_data_ready) {
		tcm_ha_tcp_data_ready = sk->sk_data_ready;
		sk->sk_data_ready = tcm_ha_data_ready;
	}
	if (sk->sk_write_space != tcm_ha_write_space) {
		tcm_ha_tcp_write_space = sk->sk_write_space;
		sk->sk_write_space = tcm_ha_write_space;
	}
	write_unlock_bh(&sk->sk_callback_lock);
}

/*
 * Gives @sock its TCP callbacks back; before release, since a closed
 * socket may still see its peer's last segments after the module is gone.
 */
void tcm_ha_sock_unwatch(struct socket *sock)
{
	struct sock *sk = sock->sk;

	if (!sk)
		return;
	write_lock_bh(&sk->sk_callback_lock);
	if (sk->sk_data_ready == tcm_ha_data_ready)
		sk->sk_data_ready = tcm_ha_tcp_data_ready;
	if (sk->sk_write_space == tcm_ha_write_space)
		sk->sk_write_space = tcm_ha_tcp_write_space;
	write_unlock_bh(&sk->sk_callback_lock);
}
