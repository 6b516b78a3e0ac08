/*
 * cm_signal.h: graceful shutdown (SPEC §8: on SIGTERM/SIGINT stop taking
 * input, close the open transaction, exit 0 within 10 s).
 *
 * cm_signal_install() catches SIGTERM and SIGINT: the handler sets a flag and
 * makes cm_signal_fd() readable. The fd is never drained by this module, so
 * once a stop is requested it stays readable for every thread that polls it:
 * a poll loop adds it to its set and ends when it fires. SIGPIPE is ignored
 * (a peer closing a socket is an error return, not a death).
 *
 *   cm_signal_install(errstr, sizeof(errstr));
 *   while (!cm_signal_stop_requested()) {
 *       ... poll(fds including cm_signal_fd(), ...) ...
 *   }
 */
#ifndef CM_SIGNAL_H
#define CM_SIGNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "cm_err.h"

/* Installs the handlers once per process; later calls return CM_OK. Fails
 * with CM_ERR_IO (and errstr) when the eventfd or sigaction fails. */
cm_err_t cm_signal_install(char *errstr, size_t errstr_size);

/* True once SIGTERM/SIGINT arrived or cm_signal_request_stop() was called.
 * Async-signal-safe and lock-free. */
bool cm_signal_stop_requested(void);

/* Readable from the first stop request on; -1 before cm_signal_install().
 * Owned by this module: do not read or close it. */
int cm_signal_fd(void);

/* The signal number that asked for the stop, 0 if none or if the stop came
 * from cm_signal_request_stop(). */
int cm_signal_received(void);

/* Asks for the same orderly stop from code, e.g. a worker thread that hit a
 * fatal error. Async-signal-safe. */
void cm_signal_request_stop(void);

/* Waits up to timeout_ms (-1: forever) for a stop; returns
 * cm_signal_stop_requested(). Handy for a main thread with nothing else to
 * wait on. */
bool cm_signal_wait(int timeout_ms);

/* Restores the previous handlers, closes the fd and clears the flag (tests,
 * or a process that re-installs). */
void cm_signal_uninstall(void);

#endif
