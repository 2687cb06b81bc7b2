/* Fault injection for tests/faults.rs: an LD_PRELOAD library that counts every call by which a
 * process changes files — writes to regular files, creates, renames and links, deletes,
 * truncates, syncs — in one counter for all its threads, and at the Nth either kills the
 * process (SIGKILL: a crash, a power cut for everything not yet synced) or fails that call
 * with an errno (a full disk, an I/O error).
 *
 *   SLABFLOW_FAULT_AT=N          the call to act on (unset: count only)
 *   SLABFLOW_FAULT_ERRNO=E       fail it with errno E instead of killing
 *   SLABFLOW_FAULT_CLASSES=wcrdtsf which calls count: w write, c create (open O_CREAT/O_TRUNC,
 *                                mkdir), r rename/link, d delete (unlink, rmdir), t truncate,
 *                                s sync (fsync, fdatasync, syncfs), f writeback hint
 *                                (sync_file_range); default all
 *   SLABFLOW_FAULT_COUNT=PATH    at exit, write the number of counted calls there
 *   SLABFLOW_FAULT_SIGNAL=S      the signal to send instead of SIGKILL (SIGSTOP: hold a run
 *                                mid-way, alive, for a test to look at)
 *   SLABFLOW_FAULT_FLOCK=E       every flock(2) fails with errno E (a filesystem without OS
 *                                locks: Lustre `noflock`, NFS `nolock`)
 *   SLABFLOW_OPEN_LOG=PATH       append the path of every file opened to PATH, one per line
 *                                (what a run read, e.g. that it opened no input file)
 *
 * Writes to descriptors 0-2 and to anything but regular files (pipes, terminals) are not
 * counted: logs are not output. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static atomic_long counter;
static long fault_at = -1;
static int fault_errno = 0;
static const char *classes = "wcrdtsf";
static const char *count_file = NULL;
static int fault_signal = SIGKILL;
static int flock_errno = 0;
static int open_log = -1;

__attribute__((constructor)) static void init(void) {
    const char *v;
    if ((v = getenv("SLABFLOW_FAULT_AT"))) fault_at = atol(v);
    if ((v = getenv("SLABFLOW_FAULT_ERRNO"))) fault_errno = atoi(v);
    if ((v = getenv("SLABFLOW_FAULT_CLASSES"))) classes = v;
    count_file = getenv("SLABFLOW_FAULT_COUNT");
    if ((v = getenv("SLABFLOW_FAULT_SIGNAL"))) fault_signal = atoi(v);
    if ((v = getenv("SLABFLOW_FAULT_FLOCK"))) flock_errno = atoi(v);
    if ((v = getenv("SLABFLOW_OPEN_LOG")))
        open_log = syscall(SYS_openat, AT_FDCWD, v, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* One line per open, written with the raw syscall (not counted, never failed). */
static void log_open(const char *p) {
    if (open_log < 0 || !p) return;
    char buf[4096];
    size_t n = strlen(p);
    if (n > sizeof buf - 1) n = sizeof buf - 1;
    memcpy(buf, p, n);
    buf[n] = '\n';
    syscall(SYS_write, open_log, buf, n + 1);
}

__attribute__((destructor)) static void fini(void) {
    if (!count_file) return;
    FILE *f = fopen(count_file, "w");
    if (f) {
        fprintf(f, "%ld\n", atomic_load(&counter));
        fclose(f);
    }
}

/* 0: go on with the real call; otherwise the errno to fail it with. */
static int hit(char class) {
    if (!strchr(classes, class)) return 0;
    long n = atomic_fetch_add(&counter, 1) + 1;
    if (n != fault_at) return 0;
    if (fault_errno) return fault_errno;
    kill(getpid(), fault_signal);
    if (fault_signal != SIGKILL) return 0;
    for (;;) pause();
}

static int regular(int fd) {
    struct stat st;
    return fd > 2 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

#define REAL(name) static __typeof__(name) *real; if (!real) real = dlsym(RTLD_NEXT, #name)
#define FAIL(class) do { int e_ = hit(class); if (e_) { errno = e_; return -1; } } while (0)

ssize_t write(int fd, const void *b, size_t n) { REAL(write); if (regular(fd)) FAIL('w'); return real(fd, b, n); }
ssize_t pwrite64(int fd, const void *b, size_t n, off_t o) { REAL(pwrite64); if (regular(fd)) FAIL('w'); return real(fd, b, n, o); }
ssize_t writev(int fd, const struct iovec *v, int c) { REAL(writev); if (regular(fd)) FAIL('w'); return real(fd, v, c); }

static int creates(int flags) { return flags & (O_CREAT | O_TRUNC); }
int open(const char *p, int flags, ...) {
    REAL(open); mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) { va_list a; va_start(a, flags); mode = va_arg(a, int); va_end(a); }
    if (creates(flags)) FAIL('c');
    log_open(p);
    return real(p, flags, mode);
}
int open64(const char *p, int flags, ...) {
    REAL(open64); mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) { va_list a; va_start(a, flags); mode = va_arg(a, int); va_end(a); }
    if (creates(flags)) FAIL('c');
    log_open(p);
    return real(p, flags, mode);
}
int openat(int d, const char *p, int flags, ...) {
    REAL(openat); mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) { va_list a; va_start(a, flags); mode = va_arg(a, int); va_end(a); }
    if (creates(flags)) FAIL('c');
    log_open(p);
    return real(d, p, flags, mode);
}
int openat64(int d, const char *p, int flags, ...) {
    REAL(openat64); mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) { va_list a; va_start(a, flags); mode = va_arg(a, int); va_end(a); }
    if (creates(flags)) FAIL('c');
    log_open(p);
    return real(d, p, flags, mode);
}
int mkdir(const char *p, mode_t m) { REAL(mkdir); FAIL('c'); return real(p, m); }
int mkdirat(int d, const char *p, mode_t m) { REAL(mkdirat); FAIL('c'); return real(d, p, m); }

int rename(const char *a, const char *b) { REAL(rename); FAIL('r'); return real(a, b); }
int renameat(int da, const char *a, int db, const char *b) { REAL(renameat); FAIL('r'); return real(da, a, db, b); }
int renameat2(int da, const char *a, int db, const char *b, unsigned f) { REAL(renameat2); FAIL('r'); return real(da, a, db, b, f); }
int link(const char *a, const char *b) { REAL(link); FAIL('r'); return real(a, b); }
int linkat(int da, const char *a, int db, const char *b, int f) { REAL(linkat); FAIL('r'); return real(da, a, db, b, f); }

int unlink(const char *p) { REAL(unlink); FAIL('d'); return real(p); }
int unlinkat(int d, const char *p, int f) { REAL(unlinkat); FAIL('d'); return real(d, p, f); }
int rmdir(const char *p) { REAL(rmdir); FAIL('d'); return real(p); }

int ftruncate(int fd, off_t n) { REAL(ftruncate); FAIL('t'); return real(fd, n); }
int ftruncate64(int fd, off_t n) { REAL(ftruncate64); FAIL('t'); return real(fd, n); }

int fsync(int fd) { REAL(fsync); FAIL('s'); return real(fd); }
int fdatasync(int fd) { REAL(fdatasync); FAIL('s'); return real(fd); }
int syncfs(int fd) { REAL(syncfs); FAIL('s'); return real(fd); }
int sync_file_range(int fd, off_t o, off_t n, unsigned f) { REAL(sync_file_range); FAIL('f'); return real(fd, o, n, f); }

int flock(int fd, int op) {
    REAL(flock);
    if (flock_errno) { errno = flock_errno; return -1; }
    return real(fd, op);
}
