/*
 * Exercises libuiommu_preload.so from C, the way real programs reach it.
 * Built and run under LD_PRELOAD by tests/shim.rs. Prints "FAIL ..." for every failed check
 * and "ALL OK" at the end if none failed (exit status 0).
 *
 * Checks marked ENGINE depend on the engine's command implementations. They accept the
 * "not implemented yet" answer (ENOTTY) unless compiled with -DSTRICT_ENGINE=1, which
 * tests/shim.rs passes once ENGINE_READY is set there.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dirent.h>
#include <linux/close_range.h>

#ifndef STRICT_ENGINE
#define STRICT_ENGINE 0
#endif

#define IOMMU_DESTROY 0x3b80
#define IOMMU_IOAS_ALLOC 0x3b81

struct iommu_ioas_alloc {
	uint32_t size;
	uint32_t flags;
	uint32_t out_ioas_id;
};

static int failures;

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			printf("FAIL line %d: %s (errno %d %s)\n", __LINE__, #cond,   \
			       errno, strerror(errno));                               \
			failures++;                                                   \
		}                                                                     \
	} while (0)

/* ENGINE: strict form once the engine implements the command, else also allow ENOTTY. */
#define ENGINE_CHECK(strict_cond, rc)                                                 \
	do {                                                                          \
		int e_ = errno;                                                       \
		if (STRICT_ENGINE)                                                    \
			CHECK(strict_cond);                                           \
		else                                                                  \
			CHECK((strict_cond) || ((rc) == -1 && e_ == ENOTTY));         \
		printf("ENGINE line %d: rc=%d errno=%d\n", __LINE__, (int)(rc), e_); \
	} while (0)

/* An engine iommufd answers write() with EINVAL; the socket standing for it would accept it. */
static int is_engine_fd(int fd)
{
	errno = 0;
	return write(fd, "x", 1) == -1 && errno == EINVAL;
}

static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n++;
	closedir(d);
	return n;
}

int main(void)
{
	struct stat st;
	char c;
	int fd, fd2, d, d2, p[2], n, i;

	alarm(60); /* never hang a test run */

	/* Plain files pass through. */
	fd = open("/dev/null", O_RDWR);
	CHECK(fd >= 0);
	CHECK(write(fd, "abc", 3) == 3);
	CHECK(!is_engine_fd(fd) || 0);
	CHECK(close(fd) == 0);
	errno = 0;
	{ const char *volatile nul = NULL; CHECK(open(nul, O_RDONLY) == -1 && errno == EFAULT); }
	CHECK(open("/dev/iommu/", O_RDONLY) == -1); /* not the exact path: kernel answers */

	/* open /dev/iommu: a real descriptor, close-on-exec as asked. */
	fd = open("/dev/iommu", O_RDWR);
	if (fd < 0) {
		printf("FAIL: cannot open /dev/iommu: %s\n", strerror(errno));
		return 2;
	}
	CHECK(fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode));
	CHECK(fcntl(fd, F_GETFD) == 0);
	CHECK(is_engine_fd(fd));
	errno = 0;
	CHECK(read(fd, &c, 1) == -1 && errno == EINVAL);
	fd2 = openat(AT_FDCWD, "/dev/iommu", O_RDWR | O_CLOEXEC);
	CHECK(fd2 >= 0 && fd2 != fd);
	CHECK(fcntl(fd2, F_GETFD) == FD_CLOEXEC);
	CHECK(is_engine_fd(fd2));
	CHECK(close(fd2) == 0);
	fd2 = open64("/dev/iommu", O_RDWR);
	CHECK(is_engine_fd(fd2));
	CHECK(close(fd2) == 0);

	/* VFS-level ioctls act on the descriptor. */
	CHECK(ioctl(fd, FIOCLEX) == 0 && fcntl(fd, F_GETFD) == FD_CLOEXEC);
	CHECK(ioctl(fd, FIONCLEX) == 0 && fcntl(fd, F_GETFD) == 0);

	/* ENGINE: IOAS_ALLOC returns a non-zero id. */
	{
		struct iommu_ioas_alloc a = { .size = sizeof(a) };
		int rc = ioctl(fd, IOMMU_IOAS_ALLOC, &a);
		ENGINE_CHECK(rc == 0 && a.out_ioas_id != 0, rc);
	}
	/* A NULL argument must not crash. ENGINE: the kernel reports EFAULT. */
	{
		int rc = ioctl(fd, IOMMU_DESTROY, NULL);
		CHECK(rc == -1);
		ENGINE_CHECK(rc == -1 && errno == EFAULT, rc);
		rc = ioctl(fd, IOMMU_DESTROY, (void *)1);
		CHECK(rc == -1);
	}

	/* dup and F_DUPFD alias the same file; the file lives until the last one closes. */
	d = dup(fd);
	CHECK(d >= 0 && is_engine_fd(d));
	d2 = fcntl(fd, F_DUPFD_CLOEXEC, 100);
	CHECK(d2 >= 100 && is_engine_fd(d2) && fcntl(d2, F_GETFD) == FD_CLOEXEC);
	CHECK(close(fd) == 0);
	errno = 0;
	CHECK(close(fd) == -1 && errno == EBADF);
	CHECK(is_engine_fd(d));
	CHECK(close(d2) == 0);
	CHECK(is_engine_fd(d));

	/* dup2 over an engine fd makes it a plain file. */
	CHECK(pipe(p) == 0);
	CHECK(dup2(p[1], d) == d);
	CHECK(write(d, "y", 1) == 1);
	CHECK(read(p[0], &c, 1) == 1 && c == 'y');
	CHECK(close(d) == 0);
	/* and dup3 of an engine fd onto a plain one makes it an engine fd. */
	fd = open("/dev/iommu", O_RDWR);
	CHECK(fd >= 0);
	d = dup(p[1]);
	CHECK(dup3(fd, d, O_CLOEXEC) == d && is_engine_fd(d));
	CHECK(close(d) == 0);

	/* Pass-through ioctl on a pipe. */
	CHECK(write(p[1], "zz", 2) == 2);
	n = -1;
	CHECK(ioctl(p[0], FIONREAD, &n) == 0 && n == 2);
	CHECK(read(p[0], &c, 1) == 1 && read(p[0], &c, 1) == 1);

	/* poll: engine fds answer at once, mixed with plain ones. */
	{
		struct pollfd pf[2] = { { .fd = fd, .events = POLLIN | POLLOUT }, { .fd = p[0], .events = POLLIN } };
		CHECK(poll(pf, 1, 5000) == 1 && (pf[0].revents & (POLLIN | POLLOUT)) == (POLLIN | POLLOUT));
		pf[0].revents = pf[1].revents = 0x7ff;
		CHECK(poll(pf, 2, 5000) == 1 && pf[1].revents == 0 && pf[0].fd == fd);
		CHECK(write(p[1], "w", 1) == 1);
		CHECK(poll(pf, 2, 5000) == 2 && (pf[1].revents & POLLIN));
		CHECK(read(p[0], &c, 1) == 1);
		pf[0].events = 0;
		CHECK(poll(pf, 2, 0) == 0 && pf[0].revents == 0);
		struct timespec ts = { 0, 0 };
		pf[0].events = POLLIN;
		CHECK(ppoll(pf, 2, &ts, NULL) == 1 && (pf[0].revents & POLLIN));
		CHECK(poll(&pf[1], 1, 0) == 0);
	}

	/* mmap of the iommufd: refused (no region published), no crash. */
	{
		void *m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
		CHECK(m == MAP_FAILED);
		printf("ENGINE line %d: mmap errno=%d\n", __LINE__, errno);
		m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		CHECK(m != MAP_FAILED);
		CHECK(munmap(m, 4096) == 0);
	}

	/* fork: the child inherits the file. */
	{
		pid_t pid = fork();
		int status = -1;

		if (pid == 0)
			_exit(is_engine_fd(fd) && close(fd) == 0 ? 0 : 1);
		CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
		      WEXITSTATUS(status) == 0);
		CHECK(is_engine_fd(fd));
	}

	/* close_range drops engine fds too. */
	d = dup(fd);
	CHECK(close_range(fd, fd, 0) == 0);
	errno = 0;
	CHECK(write(fd, "x", 1) == -1 && errno == EBADF);
	CHECK(is_engine_fd(d));
	CHECK(close(d) == 0);

	/* Fds above the flag array (if the limit allows). */
	fd = open("/dev/iommu", O_RDWR);
	if (dup2(fd, 70000) == 70000) {
		CHECK(is_engine_fd(70000));
		CHECK(close(70000) == 0);
	}
	CHECK(close(fd) == 0);

	/* No descriptor leaks over many open/close cycles. */
	n = count_fds();
	for (i = 0; i < 2000; i++) {
		fd = open("/dev/iommu", O_RDWR);
		if (fd < 0 || close(fd) != 0) {
			CHECK(0);
			break;
		}
	}
	CHECK(count_fds() == n);

	close(p[0]);
	close(p[1]);
	if (failures) {
		printf("%d FAILED\n", failures);
		return 1;
	}
	printf("ALL OK\n");
	return 0;
}
