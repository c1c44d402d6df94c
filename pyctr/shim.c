/*
 * pyctr-shim: the long-lived half of a detached container's monitor.
 *
 * pyctr/shim.py sets a container up: it makes the pipes (or gets the pty
 * master), has a child create and start the container, and becomes PID 1's
 * parent (a child subreaper).  Then it execve()s this program, which keeps
 * the same pid, the same children and the open fds, and sheds Python's
 * memory: a Python process costs about 3 MB per container, this about 0.2 MB.
 * conmon (podman's monitor) is C for the same reason.
 *
 * What is left to do for the container's whole life is small:
 *   - copy PID 1's stdout and stderr (or the pty) into the json-file log,
 *     one {"log","stream","time"} record per line, as docker's driver and
 *     pyctr.shim.LogWriter write them;
 *   - with -it, copy what `pyctr attach` types (the stdin FIFO) to the pty;
 *   - reap PID 1 and turn its wait status into docker's exit code;
 *   - execve() the finisher (python -m pyctr.shim finish ... CODE), which
 *     records the exit, the OOM verdict, and releases what the container held.
 *
 * usage: pyctr-shim [--id ID] --pid PID --log-fd FD [--stdout FD] [--stderr FD]
 *                   [--console FD] [--stdin FD] -- FINISHER ARGV...
 * The finisher gets the exit code as one more argument.
 *
 * Build: cc -O2 -o pyctr-shim pyctr/shim.c (scripts/setup.sh does it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536
#define LINE_MAX_BYTES (16 * 1024) /* docker splits longer lines into 16 KiB records */
#define DRAIN_MS 200               /* after PID 1's exit: wait this long for more output */

struct stream {
    int fd;
    const char *name;          /* "stdout", "stderr" or "stdin" (the FIFO, with a pty) */
    char line[LINE_MAX_BYTES]; /* the partial line, kept until its newline */
    size_t len;
};

static int log_fd = -1;

static void die(const char *what)
{
    /* stderr is /dev/null in a detached shim; this shows under a debugger or by hand */
    fprintf(stderr, "pyctr-shim: %s: %s\n", what, strerror(errno));
    exit(125);
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* a full disk or a closed pty: lose this record, keep the container */
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* A growing output buffer for one JSON record. */
struct out {
    char *buf;
    size_t len, cap;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n)
            cap *= 2;
        char *b = realloc(o->buf, cap);
        if (!b)
            die("out of memory");
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void puts_(struct out *o, const char *s) { put(o, s, strlen(s)); }

/*
 * The length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one;
 * *bad is then how many bytes make the "maximal subpart" that one U+FFFD
 * replaces (Unicode's rule, which Python's errors="replace" follows).
 */
static size_t utf8_len(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0];
    size_t want;
    unsigned char lo = 0x80, hi = 0xBF; /* the range of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        want = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        want = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlong forms */
        if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        want = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i < want; i++) {
        unsigned char lo_i = i == 1 ? lo : 0x80, hi_i = i == 1 ? hi : 0xBF;
        if (i >= n || s[i] < lo_i || s[i] > hi_i) {
            *bad = i;
            return 0;
        }
    }
    return want;
}

/* One json-file record: {"log": LINE, "stream": NAME, "time": RFC 3339 with ns}. */
static void record(const char *name, const char *line, size_t len)
{
    static struct out o;
    const unsigned char *s = (const unsigned char *)line;
    char tmp[64];

    o.len = 0;
    puts_(&o, "{\"log\": \"");
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t bad = 0, n = utf8_len(s + i, len - i, &bad);
        if (n == 0) {
            puts_(&o, "\xEF\xBF\xBD"); /* U+FFFD REPLACEMENT CHARACTER */
            i += bad;
            continue;
        }
        if (n > 1) {
            put(&o, line + i, n);
        } else if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            put(&o, tmp, 2);
        } else if (c == '\n') {
            puts_(&o, "\\n");
        } else if (c == '\r') {
            puts_(&o, "\\r");
        } else if (c == '\t') {
            puts_(&o, "\\t");
        } else if (c == '\b') {
            puts_(&o, "\\b");
        } else if (c == '\f') {
            puts_(&o, "\\f");
        } else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            puts_(&o, tmp);
        } else {
            put(&o, line + i, 1);
        }
        i += n;
    }
    puts_(&o, "\", \"stream\": \"");
    puts_(&o, name);
    puts_(&o, "\", \"time\": \"");
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(tmp, sizeof tmp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tmp + k, sizeof tmp - k, ".%09ldZ\"}\n", ts.tv_nsec);
    puts_(&o, tmp);
    write_all(log_fd, o.buf, o.len);
}

/* Output of one stream: a record per complete line, or per 16 KiB of a long one. */
static void take(struct stream *st, const char *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        st->line[st->len++] = data[i];
        if (data[i] == '\n' || st->len == LINE_MAX_BYTES) {
            record(st->name, st->line, st->len);
            st->len = 0;
        }
    }
}

static int parse_fd(const char *opt, const char *arg)
{
    char *end;
    errno = 0;
    long v = strtol(arg ? arg : "", &end, 10);
    if (!arg || *end || errno || v < 0 || v > 1 << 20) {
        fprintf(stderr, "pyctr-shim: %s needs a number, not %s\n", opt, arg ? arg : "nothing");
        exit(125);
    }
    return (int)v;
}

static int parse_open_fd(const char *opt, const char *arg)
{
    int fd = parse_fd(opt, arg);
    if (fcntl(fd, F_GETFD) < 0) { /* not inherited: its O_CLOEXEC was left on, say */
        fprintf(stderr, "pyctr-shim: %s %d: not an open fd\n", opt, fd);
        exit(125);
    }
    return fd;
}

int main(int argc, char **argv)
{
    pid_t pid = 0;
    int out = -1, err = -1, console = -1, in = -1;
    char **finisher = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--")) {
            finisher = argv + i + 1;
            break;
        } else if (!strcmp(a, "--id"))
            i++; /* the container's id: only for ps to show whose shim this is */
        else if (!strcmp(a, "--pid"))
            pid = parse_fd(a, v), i++;
        else if (!strcmp(a, "--log-fd"))
            log_fd = parse_open_fd(a, v), i++;
        else if (!strcmp(a, "--stdout"))
            out = parse_open_fd(a, v), i++;
        else if (!strcmp(a, "--stderr"))
            err = parse_open_fd(a, v), i++;
        else if (!strcmp(a, "--console"))
            console = parse_open_fd(a, v), i++;
        else if (!strcmp(a, "--stdin"))
            in = parse_open_fd(a, v), i++;
        else {
            fprintf(stderr, "pyctr-shim: unknown option %s (it is started by pyctr/shim.py)\n", a);
            return 125;
        }
    }
    if (pid <= 0 || log_fd < 0 || !finisher || !finisher[0]) {
        fprintf(stderr, "usage: pyctr-shim --pid PID --log-fd FD [--stdout FD] [--stderr FD] "
                        "[--console FD] [--stdin FD] -- FINISHER...\n");
        return 125;
    }

    /* PID 1 is our child already: a pidfd tells us of its exit without a SIGCHLD handler */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0)
        die("pidfd_open");

    static struct stream streams[3];
    int nstreams = 0, outputs = 0;
    if (out >= 0)
        streams[nstreams++] = (struct stream){.fd = out, .name = "stdout"};
    if (err >= 0)
        streams[nstreams++] = (struct stream){.fd = err, .name = "stderr"};
    if (console >= 0)
        streams[nstreams++] = (struct stream){.fd = console, .name = "stdout"};
    outputs = nstreams;
    if (console >= 0 && in >= 0) /* -it: what attach types goes to the pty */
        streams[nstreams++] = (struct stream){.fd = in, .name = "stdin"};

    static char buf[CHUNK];
    int exited = 0;
    while (outputs > 0) {
        struct pollfd p[4];
        int np = 0;
        for (int i = 0; i < nstreams; i++)
            p[np++] = (struct pollfd){.fd = streams[i].fd, .events = POLLIN};
        p[np++] = (struct pollfd){.fd = exited ? -1 : pidfd, .events = POLLIN};
        int r = poll(p, (nfds_t)np, exited ? DRAIN_MS : -1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (r == 0)
            break; /* PID 1 is gone and nothing more came: a process outside kept a pipe */
        if (p[np - 1].revents)
            exited = 1;
        for (int i = 0; i < nstreams; i++) {
            struct stream *st = &streams[i];
            if (st->fd < 0 || !p[i].revents)
                continue;
            ssize_t n = read(st->fd, buf, sizeof buf);
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n > 0 && !strcmp(st->name, "stdin")) {
                write_all(console, buf, (size_t)n);
            } else if (n > 0) {
                take(st, buf, (size_t)n);
            } else if (strcmp(st->name, "stdin")) {
                /* EOF, or EIO: the pty's last holder closed it */
                if (st->len)
                    record(st->name, st->line, st->len);
                st->len = 0;
                close(st->fd);
                st->fd = -1;
                outputs--;
            } else if (n == 0) {
                st->fd = -1; /* nobody can write to the FIFO any more (we hold it open) */
            }
        }
        /* drop the closed streams from the poll set */
        int k = 0;
        for (int i = 0; i < nstreams; i++)
            if (streams[i].fd >= 0)
                streams[k++] = streams[i];
        nstreams = k;
    }
    for (int i = 0; i < nstreams; i++) {
        if (streams[i].len)
            record(streams[i].name, streams[i].line, streams[i].len);
        close(streams[i].fd);
    }
    close(pidfd);

    int status, code;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            die("waitpid");
    }
    code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    close(log_fd);

    /* the finisher: the same pid, so whoever watches this monitor sees it end once */
    int n = 0;
    while (finisher[n])
        n++;
    char **args = calloc((size_t)n + 2, sizeof *args);
    char codebuf[16];
    if (!args)
        die("out of memory");
    memcpy(args, finisher, (size_t)n * sizeof *args);
    snprintf(codebuf, sizeof codebuf, "%d", code);
    args[n] = codebuf;
    execv(args[0], args);
    die("execv of the finisher");
}
