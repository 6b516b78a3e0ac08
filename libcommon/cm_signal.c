#include "cm_signal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Lock-free atomics are what a signal handler may touch besides write(2). */
static atomic_int sig_fd = -1;
static atomic_bool sig_stop;
static atomic_int sig_num;

static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static bool sig_installed;
static struct sigaction old_term, old_int, old_pipe;

/* Sets the flag, then makes the fd readable. */
static void raise_stop(int signo)
{
    int saved = errno;
    uint64_t one = 1;
    int fd = atomic_load(&sig_fd);
    if (signo && !atomic_load(&sig_stop))
        atomic_store(&sig_num, signo);
    atomic_store(&sig_stop, true);
    if (fd >= 0) {
        /* eventfd: only fails when the counter would overflow, i.e. after
         * 2^64 stops; it is readable already then. */
        ssize_t w = write(fd, &one, sizeof(one));
        (void)w;
    }
    errno = saved;
}

static void on_signal(int signo) { raise_stop(signo); }

cm_err_t cm_signal_install(char *errstr, size_t errstr_size)
{
    struct sigaction sa;
    cm_err_t err = CM_OK;
    int fd;

    pthread_mutex_lock(&sig_lock);
    if (sig_installed)
        goto out;
    fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
        snprintf(errstr, errstr_size, "eventfd: %s", strerror(errno));
        err = CM_ERR_IO;
        goto out;
    }
    atomic_store(&sig_fd, fd);
    if (atomic_load(&sig_stop)) /* a stop requested before install */
        raise_stop(0);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGINT);
    /* SA_RESTART: other syscalls keep going; poll() is woken by the fd. */
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, &old_term) || sigaction(SIGINT, &sa, &old_int)) {
        snprintf(errstr, errstr_size, "sigaction: %s", strerror(errno));
        sigaction(SIGTERM, &old_term, NULL);
        atomic_store(&sig_fd, -1);
        close(fd);
        err = CM_ERR_IO;
        goto out;
    }
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGPIPE, &sa, &old_pipe);
    sig_installed = true;
out:
    pthread_mutex_unlock(&sig_lock);
    return err;
}

bool cm_signal_stop_requested(void) { return atomic_load(&sig_stop); }

int cm_signal_fd(void) { return atomic_load(&sig_fd); }

int cm_signal_received(void) { return atomic_load(&sig_num); }

void cm_signal_request_stop(void) { raise_stop(0); }

bool cm_signal_wait(int timeout_ms)
{
    struct pollfd p = {.fd = atomic_load(&sig_fd), .events = POLLIN};
    if (atomic_load(&sig_stop) || p.fd < 0)
        return atomic_load(&sig_stop);
    while (poll(&p, 1, timeout_ms) < 0 && errno == EINTR && !atomic_load(&sig_stop))
        ;
    return atomic_load(&sig_stop);
}

void cm_signal_uninstall(void)
{
    pthread_mutex_lock(&sig_lock);
    if (sig_installed) {
        int fd;
        sigaction(SIGTERM, &old_term, NULL);
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGPIPE, &old_pipe, NULL);
        fd = atomic_exchange(&sig_fd, -1);
        close(fd);
        sig_installed = false;
    }
    atomic_store(&sig_stop, false);
    atomic_store(&sig_num, 0);
    pthread_mutex_unlock(&sig_lock);
}
