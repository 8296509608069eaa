/*
 * criu-uncork: preloaded into the CRIU of a cold dump that sends its pages to a page server (LD_PRELOAD), it makes
 * TCP_CORK a no-op for that CRIU.
 *
 * Why: CRIU (4.2) corks its page-server socket when it connects and never uncorks it before its last command.
 * Its closing request and the tail of the last pages are partial segments, and Linux holds a corked partial segment
 * for up to 200 ms. The dump waits for the page server's answer to that request while the container is frozen, so
 * every cold move paid 200 ms of freeze for nothing (measured: an empty process dumped to a page server in 255 ms,
 * 58 ms with this library). Without the cork the socket is an ordinary one with Nagle's algorithm: CRIU writes its
 * pages in large pieces, so nothing else changes.
 *
 * Built by `scripts/setup.sh uncork` into /opt/ferry/lib/criu-uncork.so; ferry uses it when it is there
 * (src/runtime/criu-uncork.ts) and `ferry check` says when it is not.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

typedef int (*setsockopt_fn)(int, int, int, const void *, socklen_t);

int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
	static setsockopt_fn real;

	if (level == SOL_TCP && name == TCP_CORK)
		return 0;
	if (!real)
		real = (setsockopt_fn)dlsym(RTLD_NEXT, "setsockopt");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	return real(fd, level, name, value, len);
}
