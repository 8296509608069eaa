/*
 * criu-uncork: preloaded (LD_PRELOAD) into the CRIUs at either end of a page-server connection -- a cold dump and
 * the destination's page server it sends its pages to, a lazy dump that serves them and post-copy's lazy-pages
 * daemon -- it makes TCP_CORK a no-op for that CRIU, and its TCP sockets TCP_NODELAY from the start.
 *
 * Why: CRIU (4.2) corks a page-server socket at both ends and never uncorks it before the last command and its
 * answer. Those are partial segments, and Linux holds a corked partial segment for up to 200 ms. A cold dump waits
 * for the page server's answer while the container is frozen, so every cold move paid 200 ms of freeze for nothing
 * (measured: an empty process dumped to a page server in 255 ms, 58 ms with this library); post-copy's daemon
 * closes after the last page and waits 200 ms for its request and 200 ms for the answer (a 64 MiB container's
 * window: 500 ms, 85 ms with this library). Without the cork the socket is an ordinary one with Nagle's algorithm
 * or CRIU's own TCP_NODELAY: CRIU writes its pages in large pieces, so nothing else changes.
 *
 * The same sockets also wait for Nagle's algorithm before they are uncorked: CRIU makes them TCP_NODELAY only after
 * its TLS handshake, and the handshake's flights are several small writes, the second of which waits for the
 * peer's delayed ACK (40 ms): a cold dump's handshake with the destination's page server took 44-50 ms inside the
 * freeze, of which the page server spent 10 ms on the CPU. So the library makes every TCP socket CRIU connects or
 * accepts TCP_NODELAY from the start (CRIU turns it on a moment later anyway; its writes are pages in large
 * pieces).
 *
 * Built by `scripts/setup.sh native` into /opt/ferry/lib/criu-uncork.so; ferry uses it when it is there
 * (src/runtime/criu-preload.ts) and `ferry check` says when it is not.
 */
#define _GNU_SOURCE
#include "preload.h"
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

typedef int (*setsockopt_fn)(int, int, int, const void *, socklen_t);
typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);

/* TCP_NODELAY on a TCP socket over IPv4 or IPv6; anything else is left alone. Keeps errno. */
static void nodelay(int fd)
{
	static setsockopt_fn real;
	int saved = errno, v = 0, on = 1;
	socklen_t len = sizeof(v);

	if (!real && !(real = (setsockopt_fn)preload_next("setsockopt")))
		goto out;
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) || (v != AF_INET && v != AF_INET6))
		goto out;
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &len) || v != IPPROTO_TCP)
		goto out;
	real(fd, SOL_TCP, TCP_NODELAY, &on, sizeof(on));
out:
	errno = saved;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	static connect_fn real;

	if (!real && !(real = (connect_fn)preload_next("connect")))
		return -1;
	nodelay(fd);
	return real(fd, addr, len);
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	static accept4_fn real;
	int sk;

	if (!real && !(real = (accept4_fn)preload_next("accept4")))
		return -1;
	sk = real(fd, addr, len, flags);
	if (sk >= 0)
		nodelay(sk);
	return sk;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	return accept4(fd, addr, len, 0);
}

int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
	static setsockopt_fn real;

	if (level == SOL_TCP && name == TCP_CORK)
		return 0;
	if (!real && !(real = (setsockopt_fn)preload_next("setsockopt")))
		return -1;
	return real(fd, level, name, value, len);
}
