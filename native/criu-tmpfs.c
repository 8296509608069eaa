/*
 * criu-tmpfs: preloaded (LD_PRELOAD) into the CRIU of every dump and restore, it archives and restores an EMPTY
 * tmpfs itself instead of starting `tar` and `gzip` for it.
 *
 * Why: CRIU (4.2) saves the content of every tmpfs mount of a container with `tar --create --gzip` (tar starts a
 * gzip of its own) and restores it with `tar --extract --gzip`, inside the freeze. A container as runc makes it has
 * five: /dev, /dev/shm, /tmp and the read-only mounts that mask /proc/acpi and /sys/firmware; all but /dev are
 * usually empty. Each archive costs two program starts, about 5 ms to dump and 4 ms to restore on the test machine,
 * some 35 ms of an empty container's freeze in all, for archives holding one entry: the directory itself.
 *
 * What it does: CRIU runs tar in a child it forked (execvp). When the arguments are exactly CRIU's and the mount is
 * empty, the child writes the archive GNU tar would write (a GNU-format header for "./" with the directory's mode,
 * owners and mtime, the end-of-archive blocks, padded to tar's 10240-byte record), compressed as gzip with stored
 * (uncompressed) deflate blocks, and exits. Any tar or gzip reads it. On a restore it reads the image; when it is a
 * gzip of stored blocks holding only a "./" directory entry it does to the mount's root what GNU tar does to "."
 * (owner, then mode, then mtime to the second, atime now) and exits. Anything else -- a mount with any file, an
 * archive GNU tar compressed, other arguments, a value that does not fit the header -- runs the real tar, as if the
 * library were not there (it reads the image with pread, so the real tar finds it untouched).
 *
 * Built by `scripts/setup.sh native` into /opt/ferry/lib/criu-tmpfs.so; ferry uses it when it is there
 * (src/runtime/criu-preload.ts) and `ferry check` says when it is not.
 */
#define _GNU_SOURCE
#include "preload.h"
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BLOCK 512
/* GNU tar's default record: 20 blocks; an archive is padded to a whole record */
#define RECORD (20 * BLOCK)
/* the largest value a 7- or 11-digit octal header field holds */
#define MAX_OCT7 07777777UL
#define MAX_OCT11 077777777777ULL

typedef int (*execvp_fn)(const char *, char *const[]);

/* CRIU's own arguments, DIR standing for the directory's */
#define DIR ((const char *)1)
static const char *const CREATE_ARGS[] = { "tar",		"--create",	     "--gzip",
					   "--no-unquote",	"--no-wildcards",    "--one-file-system",
					   "--check-links",	"--preserve-permissions", "--sparse",
					   "--numeric-owner", "--directory",	     DIR,
					   ".",		NULL };
static const char *const EXTRACT_ARGS[] = { "tar",	   "--extract",	"--gzip", "--no-unquote",
					    "--no-wildcards", "--directory", DIR,	   NULL };

/* The directory when argv is exactly `want`, else NULL. */
static const char *match_args(char *const argv[], const char *const want[])
{
	const char *dir = NULL;
	int i;

	for (i = 0; want[i]; i++) {
		if (!argv[i])
			return NULL;
		if (want[i] == DIR)
			dir = argv[i];
		else if (strcmp(argv[i], want[i]))
			return NULL;
	}
	return argv[i] ? NULL : dir;
}

static uint32_t crc32(const unsigned char *p, size_t n)
{
	uint32_t c = 0xffffffffu;

	while (n--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & -(c & 1));
	}
	return ~c;
}

static int write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* 1 when the directory holds nothing but "." and "..", 0 when it holds more, -1 on error */
static int is_empty_dir(int fd)
{
	char buf[1024];
	long n;

	while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0)
		for (long off = 0; off < n;) {
			struct dirent64 *d = (struct dirent64 *)(buf + off);

			if (strcmp(d->d_name, ".") && strcmp(d->d_name, ".."))
				return 0;
			off += d->d_reclen;
		}
	return n < 0 ? -1 : 1;
}

/* `digits` octal digits of v, zero-padded, then a NUL (the caller checked that v fits) */
static void put_octal(unsigned char *f, int digits, unsigned long long v)
{
	f[digits] = 0;
	while (digits--) {
		f[digits] = (unsigned char)('0' + (v & 7));
		v >>= 3;
	}
}

static unsigned header_sum(const unsigned char *h)
{
	unsigned sum = 0;

	for (int i = 0; i < BLOCK; i++)
		sum += (i >= 148 && i < 156) ? ' ' : h[i];
	return sum;
}

/* The archive of an empty directory, as GNU tar writes it with CRIU's options; 0 when written, 1 when not ours. */
static int create_empty(const char *dir)
{
	static unsigned char tar[RECORD];
	unsigned char head[10] = { 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3 };
	unsigned char block[5] = { 1, RECORD & 0xff, RECORD >> 8, (unsigned char)~(RECORD & 0xff),
				   (unsigned char)~(RECORD >> 8) };
	unsigned char tail[8];
	struct stat st;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint32_t crc;

	if (fd < 0)
		return 1;
	if (fstat(fd, &st) || is_empty_dir(fd) != 1 || st.st_uid > MAX_OCT7 || st.st_gid > MAX_OCT7 ||
	    st.st_mtime < 0 || (unsigned long long)st.st_mtime > MAX_OCT11) {
		close(fd);
		return 1;
	}
	close(fd);
	memset(tar, 0, sizeof(tar));
	memcpy(tar, "./", 2);
	put_octal(tar + 100, 7, st.st_mode & 07777);
	put_octal(tar + 108, 7, st.st_uid);
	put_octal(tar + 116, 7, st.st_gid);
	put_octal(tar + 124, 11, 0);
	put_octal(tar + 136, 11, (unsigned long long)st.st_mtime);
	tar[156] = '5';
	memcpy(tar + 257, "ustar  ", 8); /* GNU format: "ustar " and version " \0" */
	put_octal(tar + 148, 6, header_sum(tar)); /* six digits, NUL, space */
	tar[155] = ' ';

	crc = crc32(tar, sizeof(tar));
	for (int i = 0; i < 4; i++) {
		tail[i] = (crc >> (8 * i)) & 0xff;
		tail[4 + i] = ((uint32_t)sizeof(tar) >> (8 * i)) & 0xff;
	}
	if (write_all(1, head, sizeof(head)) || write_all(1, block, sizeof(block)) || write_all(1, tar, sizeof(tar)) ||
	    write_all(1, tail, sizeof(tail)))
		_exit(1); /* part of an archive is out: as a failed tar, CRIU fails the dump */
	return 0;
}

/* An octal header field: digits, then NUL or spaces to its end; -1 when it is not that. */
static long long octal(const unsigned char *f, int len)
{
	long long v = 0;
	int i = 0;

	while (i < len && f[i] == ' ')
		i++;
	if (i == len || f[i] < '0' || f[i] > '7')
		return -1;
	for (; i < len && f[i] >= '0' && f[i] <= '7'; i++)
		v = v * 8 + (f[i] - '0');
	for (; i < len; i++)
		if (f[i] != 0 && f[i] != ' ')
			return -1;
	return v;
}

/* Restores an archive holding only "./" written with stored blocks; 0 when done, 1 when not ours. */
static int extract_empty(const char *dir)
{
	static unsigned char in[RECORD + 256], tar[RECORD];
	size_t got = 0, out = 0, p = 10;
	ssize_t n;
	long long mode, uid, gid, size, mtime;
	const unsigned char *h = tar;

	while ((n = pread(0, in + got, sizeof(in) - got, (off_t)got)) > 0)
		got += (size_t)n;
	/* not seekable, unreadable, or larger than ours: the real tar reads it */
	if (n < 0 || got == sizeof(in) || got < 10 + 5 + 8 || in[0] != 0x1f || in[1] != 0x8b || in[2] != 8 ||
	    in[3] != 0)
		return 1;
	for (;;) {
		unsigned len, nlen;
		int final;

		if (p + 5 > got || (in[p] & 0xfe) != 0) /* a stored block (type 00) only */
			return 1;
		final = in[p] & 1;
		len = in[p + 1] | in[p + 2] << 8;
		nlen = in[p + 3] | in[p + 4] << 8;
		if ((len ^ nlen) != 0xffff || p + 5 + len > got || out + len > sizeof(tar))
			return 1;
		memcpy(tar + out, in + p + 5, len);
		out += len;
		p += 5 + len;
		if (final)
			break;
	}
	if (p + 8 != got || out < 3 * BLOCK || out % BLOCK)
		return 1;
	uint32_t crc = crc32(tar, out), isize = (uint32_t)out;
	for (int i = 0; i < 4; i++)
		if (in[p + i] != ((crc >> (8 * i)) & 0xff) || in[p + 4 + i] != ((isize >> (8 * i)) & 0xff))
			return 1;
	/* one GNU header for "./", a directory of size 0, then nothing but zeros */
	if (memcmp(h, "./", 3) || h[156] != '5' || memcmp(h + 257, "ustar  ", 8) ||
	    octal(h + 148, 8) != (long long)header_sum(h))
		return 1;
	for (size_t i = 3; i < 100; i++)
		if (h[i])
			return 1;
	for (size_t i = 157; i < BLOCK; i++)
		if (h[i] && (i < 257 || i >= 265))
			return 1;
	for (size_t i = BLOCK; i < out; i++)
		if (tar[i])
			return 1;
	mode = octal(h + 100, 8);
	uid = octal(h + 108, 8);
	gid = octal(h + 116, 8);
	size = octal(h + 124, 12);
	mtime = octal(h + 136, 12);
	if (mode < 0 || mode > 07777 || uid < 0 || gid < 0 || size != 0 || mtime < 0)
		return 1;

	/* what GNU tar does to an existing "." as root: owner, then mode, then times (atime now, mtime to the second) */
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct timespec ts[2] = { { 0, UTIME_NOW }, { (time_t)mtime, 0 } };

	if (fd < 0 || fchown(fd, (uid_t)uid, (gid_t)gid) || fchmod(fd, (mode_t)mode) || futimens(fd, ts))
		_exit(1); /* as a failed tar: CRIU fails the restore */
	close(fd);
	return 0;
}

int execvp(const char *file, char *const argv[])
{
	static execvp_fn next;
	const char *dir;

	if (!strcmp(file, "tar")) {
		if ((dir = match_args(argv, CREATE_ARGS)) && create_empty(dir) == 0)
			_exit(0);
		if ((dir = match_args(argv, EXTRACT_ARGS)) && extract_empty(dir) == 0)
			_exit(0);
	}
	if (!next && !(next = (execvp_fn)preload_next("execvp")))
		return -1;
	return next(file, argv);
}
