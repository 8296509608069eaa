/*
 * criu-conntrack: preloaded (LD_PRELOAD) into the CRIU of every dump, it answers CRIU's request for the tracked
 * connections (conntrack entries) of a network namespace that tracks none, without asking the kernel.
 *
 * Why: CRIU (4.2) asks the kernel for the dumped network namespace's tracked connections twice in every dump,
 * inside the freeze (once for the connections, once meant for "expectations" but sent as the same request). The
 * kernel answers a dump request by walking the host's whole conntrack hash table, every bucket of every namespace,
 * to find this namespace's entries: 9 ms a walk at the 262144 buckets of the test machine, whatever the count. A
 * namespace keeps its own count of entries (net.netfilter.nf_conntrack_count, read in CRIU's current namespace:
 * CRIU enters the dumped one before it asks). When that count is zero the walk can find nothing, and the library
 * gives CRIU what the kernel would have after it: an empty answer (one NLMSG_DONE with the request's sequence
 * number). With any entry, or when the count cannot be read, the request goes to the kernel as before. The
 * container is frozen and its link held while CRIU dumps, so no entry appears between the count and the answer.
 *
 * Built by `scripts/setup.sh native` into /opt/ferry/lib/criu-conntrack.so; ferry uses it when it is there
 * (src/runtime/criu-preload.ts) and `ferry check` says when it is not.
 */
#define _GNU_SOURCE
#include "preload.h"
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* linux/netfilter/nfnetlink_conntrack.h: IPCTNL_MSG_CT_GET and IPCTNL_MSG_EXP_GET are both 1 */
#define CT_GET 1

typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);
typedef ssize_t (*recvmsg_fn)(int, struct msghdr *, int);

/* Sockets whose request was answered here, with the sequence number the answer must carry. */
#define MAX_PENDING 8
static struct {
	int fd;
	__u32 seq;
} pending[MAX_PENDING];
static int npending;

static int take_pending(int fd, __u32 *seq)
{
	for (int i = 0; i < npending; i++)
		if (pending[i].fd == fd) {
			if (seq)
				*seq = pending[i].seq;
			pending[i] = pending[--npending];
			return 1;
		}
	return 0;
}

/* The current network namespace's count of conntrack entries, or -1 when it cannot be read. */
static long conntrack_count(void)
{
	char buf[32];
	ssize_t n;
	int fd = open("/proc/sys/net/netfilter/nf_conntrack_count", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char *end;
	long v = strtol(buf, &end, 10);
	return end == buf ? -1 : v;
}

/* A conntrack (or expectation) dump request, alone in its message, on a netfilter netlink socket. */
static int is_conntrack_dump(int fd, const struct msghdr *msg)
{
	const struct nlmsghdr *h;
	int v;
	socklen_t len = sizeof(v);

	if (!msg || msg->msg_iovlen != 1 || !msg->msg_iov[0].iov_base ||
	    msg->msg_iov[0].iov_len != NLMSG_LENGTH(sizeof(struct nfgenmsg)))
		return 0;
	h = msg->msg_iov[0].iov_base;
	if (h->nlmsg_len != msg->msg_iov[0].iov_len || !(h->nlmsg_flags & NLM_F_DUMP) ||
	    ((h->nlmsg_type >> 8) != NFNL_SUBSYS_CTNETLINK && (h->nlmsg_type >> 8) != NFNL_SUBSYS_CTNETLINK_EXP) ||
	    (h->nlmsg_type & 0xff) != CT_GET)
		return 0;
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) || v != AF_NETLINK)
		return 0;
	len = sizeof(v);
	return !getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &len) && v == NETLINK_NETFILTER;
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	static sendmsg_fn next;
	int saved = errno;

	if (!next && !(next = (sendmsg_fn)preload_next("sendmsg")))
		return -1;
	take_pending(fd, NULL);
	if (npending < MAX_PENDING && is_conntrack_dump(fd, msg) && conntrack_count() == 0) {
		pending[npending].fd = fd;
		pending[npending].seq = ((const struct nlmsghdr *)msg->msg_iov[0].iov_base)->nlmsg_seq;
		npending++;
		errno = saved;
		return (ssize_t)msg->msg_iov[0].iov_len;
	}
	errno = saved;
	return next(fd, msg, flags);
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	static recvmsg_fn next;
	__u32 seq;

	if (!next && !(next = (recvmsg_fn)preload_next("recvmsg")))
		return -1;
	if (msg && msg->msg_iovlen >= 1 && msg->msg_iov[0].iov_len >= NLMSG_LENGTH(sizeof(int)) &&
	    take_pending(fd, &seq)) {
		/* what the kernel sends at the end of a dump that found nothing */
		struct nlmsghdr *h = msg->msg_iov[0].iov_base;

		memset(h, 0, NLMSG_LENGTH(sizeof(int)));
		h->nlmsg_len = NLMSG_LENGTH(sizeof(int));
		h->nlmsg_type = NLMSG_DONE;
		h->nlmsg_flags = NLM_F_MULTI;
		h->nlmsg_seq = seq;
		if (msg->msg_name && msg->msg_namelen >= sizeof(struct sockaddr_nl)) {
			struct sockaddr_nl *a = msg->msg_name;

			memset(a, 0, sizeof(*a));
			a->nl_family = AF_NETLINK;
			msg->msg_namelen = sizeof(*a);
		}
		msg->msg_controllen = 0;
		msg->msg_flags = 0;
		return NLMSG_LENGTH(sizeof(int));
	}
	return next(fd, msg, flags);
}
