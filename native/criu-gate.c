/*
 * criu-gate: preloaded (LD_PRELOAD) into a staged dump's or restore's runc, it holds that runc's dump (or restore)
 * CRIU at the last moment before it touches the container (or reads the images), instead of before CRIU starts.
 *
 * Why: ferry starts a migration's runc before the freeze, and runc's CRIU waited at a gate, a script run in CRIU's
 * place, until the freeze began (src/runtime/criu-gate.ts). Everything CRIU does before its first look at the
 * container was then inside the freeze: its own start (about 6 ms here: it loads a dozen libraries), reading
 * runc's request, and for a cold dump connecting to the destination's page server with its TLS handshake. Held
 * here instead, CRIU has done all that when the freeze begins.
 *
 * Where it holds: a dump where CRIU sets its SIGALRM handler (CRIU 4.2 does it once, right before it arms its
 * timeout and freezes the tasks: everything after is its work on the container, everything before is not); a
 * restore at its first open of an image file (`*.img`), which must wait for the images to be in. Which CRIU: the environment names the gate's directory, the mark runc makes
 * right before the run's CRIU (the dump's `descriptors.json`, the restore's `criu-root`), CRIU's executable and the
 * agent's pid. A CRIU started before the mark exists (runc's version check) is not held, nor one started after a
 * CRIU passed (the gate's `open` file), nor any other program. The agent writes a word to the FIFO `go` in the
 * directory: `g` lets CRIU on, anything else ends it (exit 1, as a failed CRIU: runc fails); a gate whose agent is
 * gone ends it too (checked every 200 ms).
 *
 * Built by `scripts/setup.sh native` into /opt/ferry/lib/criu-gate.so; without it ferry holds CRIU with the script
 * (src/runtime/criu-gate.ts) and `ferry check` says so.
 */
#define _GNU_SOURCE
#include "preload.h"
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


enum point { NONE, DUMP, IMAGES };

/* armed in this CRIU: where it waits, and the gate's directory */
static enum point armed = NONE;
/* the gate's directory; its files' names are appended to it */
static char gate_dir[PATH_MAX - 16];
static pid_t agent;

__attribute__((constructor)) static void arm(void)
{
	const char *dir = getenv("FERRY_CRIU_GATE"), *at = getenv("FERRY_CRIU_GATE_AT"),
		   *pid = getenv("FERRY_CRIU_GATE_AGENT");

	/* set by the gate's script for the one CRIU it holds; gone for any program that CRIU runs */
	if (dir && at && pid && strlen(dir) < sizeof(gate_dir)) {
		strcpy(gate_dir, dir);
		agent = (pid_t)atoi(pid);
		armed = !strcmp(at, "restore") ? IMAGES : DUMP;
	}
	unsetenv("FERRY_CRIU_GATE");
	unsetenv("FERRY_CRIU_GATE_AT");
	unsetenv("FERRY_CRIU_GATE_AGENT");
}

/* Waits for the agent's word; returns when it is `g`, ends the process otherwise. */
static void wait_for_word(void)
{
	char path[PATH_MAX + 16];
	int fd;

	armed = NONE;
	snprintf(path, sizeof(path), "%s/go", gate_dir);
	/* read and write: the open does not wait for a writer, and a word written earlier is there */
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		_exit(1);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		char word;
		int r = poll(&p, 1, 200);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			_exit(1);
		if (r == 0) {
			if (agent > 0 && kill(agent, 0) && errno == ESRCH)
				_exit(1);
			continue;
		}
		if (read(fd, &word, 1) != 1 || word != 'g')
			_exit(1);
		break;
	}
	close(fd);
}

static int ends_with(const char *s, const char *tail)
{
	size_t a = strlen(s), b = strlen(tail);

	return a >= b && !strcmp(s + a - b, tail);
}

/* a restore's first image: wait for the word */
static void wait_at_image(const char **path, int *flags)
{
	(void)flags;
	if (armed == IMAGES && *path && ends_with(*path, ".img"))
		wait_for_word();
}

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	static sigaction_fn next;

	if (!next && !(next = (sigaction_fn)preload_next("sigaction")))
		return -1;
	if (armed == DUMP && sig == SIGALRM && act)
		wait_for_word();
	return next(sig, act, old);
}

PRELOAD_OPEN(open, wait_at_image)
PRELOAD_OPEN(open64, wait_at_image)
PRELOAD_OPENAT(openat, wait_at_image)
PRELOAD_OPENAT(openat64, wait_at_image)
