/*
 * criu-uncork: preloaded (LD_PRELOAD) into the CRIUs that talk to a page server -- a cold dump that sends its pages
 * to one, a lazy dump that serves them, post-copy's lazy-pages daemon -- it makes TCP_CORK a no-op for that CRIU.
 *
 * Why: CRIU (4.2) corks a page-server socket at both ends and never uncorks it before the last command and its
 * answer. Those are partial segments, and Linux holds a corked partial segment for up to 200 ms. A cold dump waits
 * for the page server's answer while the container is frozen, so every cold move paid 200 ms of freeze for nothing
 * (measured: an empty process dumped to a page server in 255 ms, 58 ms with this library); post-copy's daemon
 * closes after the last page and waits 200 ms for its request and 200 ms for the answer (a 64 MiB container's
 * window: 500 ms, 85 ms with this library). Without the cork the socket is an ordinary one with Nagle's algorithm
 * or CRIU's own TCP_NODELAY: CRIU writes its pages in large pieces, so nothing else changes.
 *
 * Built by `scripts/setup.sh native` into /opt/ferry/lib/criu-uncork.so; ferry uses it when it is there
 * (src/runtime/criu-preload.ts) and `ferry check` says when it is not.
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
