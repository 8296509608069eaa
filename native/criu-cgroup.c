/*
 * criu-cgroup: preloaded (LD_PRELOAD) into the CRIU of every restore, it skips CRIU's move of a restored task into
 * a cgroup the task is already in.
 *
 * Why: a restored task starts in the container's cgroups already: runc places its CRIU there before the restore
 * (on every hierarchy), and the task is CRIU's child. CRIU moves it there all the same, writing to each hierarchy's
 * `cgroup.procs`, and the kernel serializes every cgroup move behind a lock whose first taking waits for an RCU
 * grace period (cgroup_threadgroup_rwsem): 8-20 ms inside the freeze on the test machine, for moves that change
 * nothing. (The kernel's `favordynmods` option of the cgroup v2 mount removes that wait host-wide, at a cost to every
 * fork and exit; this removes it for CRIU's no-op moves only.)
 *
 * What it does: CRIU opens `<yard dir>/<path>/cgroup.procs` relative to its cgroup yard, where the yard dir is named
 * after the hierarchy ("unified" for v2, a named one by its name, else its controllers) and <path> is the cgroup. When
 * that names the cgroup /proc/self/cgroup lists for the same hierarchy -- the opening task is already there -- the
 * library opens /dev/null instead: CRIU's write of "0" (move myself) then changes nothing, as the kernel's move would
 * have, without the lock. Any other cgroup (a nested one the container made, a thread's cgroup.threads) is opened
 * as before.
 *
 * Built by `scripts/setup.sh native` into /opt/ferry/lib/criu-cgroup.so; ferry uses it when it is there
 * (src/runtime/criu-preload.ts) and `ferry check` says when it is not.
 */
#define _GNU_SOURCE
#include "preload.h"
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROCS "/cgroup.procs"


/* `in` with runs of '/' made one and no trailing '/', into out; 0, or -1 when it does not fit */
static int squeeze(const char *in, size_t len, char *out, size_t size)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		if (in[i] == '/' && o && out[o - 1] == '/')
			continue;
		if (o + 1 >= size)
			return -1;
		out[o++] = in[i];
	}
	while (o > 1 && out[o - 1] == '/')
		o--;
	out[o] = 0;
	return 0;
}

/* Whether `rel` (CRIU's yard-relative path, without "/cgroup.procs") is a cgroup this task is in. */
static int in_this_cgroup(const char *rel, size_t len)
{
	char want[4096], line[4096], have[4096 + 64];
	FILE *f;
	int found = 0;

	if (squeeze(rel, len, want, sizeof(want)))
		return 0;
	f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return 0;
	/* ID:CONTROLLERS:PATH */
	while (!found && fgets(line, sizeof(line), f)) {
		char *ctl = strchr(line, ':'), *path;
		const char *dir;

		if (!ctl || !(path = strchr(ctl + 1, ':')))
			continue;
		*path++ = 0;
		ctl++;
		path[strcspn(path, "\n")] = 0;
		if (!*ctl)
			dir = "unified";
		else if (!strncmp(ctl, "name=", 5))
			dir = ctl + 5;
		else
			dir = ctl;
		snprintf(have, sizeof(have), "%s/%s", dir, path);
		char norm[sizeof(have)];
		found = !squeeze(have, strlen(have), norm, sizeof(norm)) && !strcmp(norm, want);
	}
	fclose(f);
	return found;
}

/* CRIU's move: a relative path to a cgroup.procs, opened to write, naming a cgroup this task is in */
static int noop_move(const char *path, int flags)
{
	size_t len;

	return path && path[0] != '/' && (flags & O_ACCMODE) == O_WRONLY && (len = strlen(path)) > strlen(PROCS) &&
	       !strcmp(path + len - strlen(PROCS), PROCS) && in_this_cgroup(path, len - strlen(PROCS));
}

/* a move into the cgroup this task is in already opens /dev/null instead */
static void skip_noop_move(const char **path, int *flags)
{
	if (noop_move(*path, *flags)) {
		*path = "/dev/null";
		*flags = O_WRONLY | (*flags & O_CLOEXEC);
	}
}

PRELOAD_OPENAT(openat, skip_noop_move)
PRELOAD_OPENAT(openat64, skip_noop_move)
