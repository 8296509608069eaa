/*
 * What the libraries under native/ share (each is still built from its one .c file, which includes this): the
 * next definition of a libc function they interpose, and wrappers of open/openat that call a hook on the path
 * first. CRIU calls the large-file names (open64, openat64: the same calls on 64-bit); a library wraps the plain
 * names too for other builds.
 */
#ifndef FERRY_PRELOAD_H
#define FERRY_PRELOAD_H

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>

/* The definition of `name` after this library's (libc's, or another preloaded library's); ENOSYS when none. */
static inline void *preload_next(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);

	if (!f)
		errno = ENOSYS;
	return f;
}

/* open's optional third argument, there only with O_CREAT or O_TMPFILE */
static inline mode_t preload_mode(int flags, va_list ap)
{
	return (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
}

typedef int (*preload_open_fn)(const char *, int, ...);
typedef int (*preload_openat_fn)(int, const char *, int, ...);

/*
 * `name` (open or open64) calling `hook(&path, &flags)` before it opens: the hook may wait, or name another file
 * (an absolute path) to open instead.
 */
#define PRELOAD_OPEN(name, hook)                                                      \
	int name(const char *path, int flags, ...)                                   \
	{                                                                             \
		static preload_open_fn next;                                         \
		va_list ap;                                                           \
		mode_t mode;                                                          \
                                                                                      \
		va_start(ap, flags);                                                  \
		mode = preload_mode(flags, ap);                                       \
		va_end(ap);                                                           \
		if (!next && !(next = (preload_open_fn)preload_next(#name)))         \
			return -1;                                                    \
		hook(&path, &flags);                                                  \
		return next(path, flags, mode);                                       \
	}

/* `name` (openat or openat64), the same; an absolute path the hook names is opened as it is */
#define PRELOAD_OPENAT(name, hook)                                                    \
	int name(int dirfd, const char *path, int flags, ...)                        \
	{                                                                             \
		static preload_openat_fn next;                                       \
		va_list ap;                                                           \
		mode_t mode;                                                          \
                                                                                      \
		va_start(ap, flags);                                                  \
		mode = preload_mode(flags, ap);                                       \
		va_end(ap);                                                           \
		if (!next && !(next = (preload_openat_fn)preload_next(#name)))       \
			return -1;                                                    \
		hook(&path, &flags);                                                  \
		return next(dirfd, path, flags, mode);                                \
	}

#endif
