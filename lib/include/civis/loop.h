/* loop.h: the one-thread event loop everything runs on.
 *
 * File descriptors (the command's pipes, a signalfd, inotify), timers and
 * libcurl's multi handle are all waited on in one call (curl_multi_poll), so
 * HTTP transfers make progress while pipes drain and the other way round.
 * Shape after Redis' ae: add a file event, add a timer, run. */
#ifndef CIVIS_LOOP_H
#define CIVIS_LOOP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct civis_loop civis_loop;

/* revents are poll(2) bits (POLLIN, POLLOUT, POLLHUP, POLLERR). */
typedef void (*civis_io_fn)(civis_loop *loop, int fd, int revents, void *ud);
typedef void (*civis_timer_fn)(civis_loop *loop, void *ud);
typedef uint64_t civis_timer_id;   /* 0 is never a valid id */

#define CIVIS_LOOP_MAX_IO 16

/* Monotonic clock in nanoseconds. */
uint64_t civis_now_ns(void);

int  civis_loop_new(civis_loop **out);
void civis_loop_free(civis_loop *loop);

/* Watch fd for events (POLLIN and/or POLLOUT). At most CIVIS_LOOP_MAX_IO fds.
 * The loop never closes fd. */
int  civis_loop_add_io(civis_loop *loop, int fd, int events, civis_io_fn fn, void *ud);
/* Change the events watched on fd; 0 pauses it without forgetting it. */
int  civis_loop_set_io(civis_loop *loop, int fd, int events);
int  civis_loop_del_io(civis_loop *loop, int fd);

/* Run fn once at monotonic time due_ns (civis_now_ns() based). */
int  civis_loop_add_timer(civis_loop *loop, uint64_t due_ns, civis_timer_fn fn,
                          void *ud, civis_timer_id *out);
/* Cancelling an id that already ran or was cancelled is harmless. */
void civis_loop_cancel_timer(civis_loop *loop, civis_timer_id id);

/* Wait at most max_wait_ns (or until the next timer) for events, then
 * dispatch io callbacks, progress libcurl transfers (completion callbacks
 * run from here), and run due timers. Returns CIVIS_OK or an error. */
int  civis_loop_run_once(civis_loop *loop, uint64_t max_wait_ns);

/* Make a run_once that is waiting return early. It uses libcurl's wakeup
 * pipe: on a loop that has made no HTTP request yet (libcurl not set up) the
 * waiting run_once just runs to its timeout. */
void civis_loop_wakeup(civis_loop *loop);

#ifdef __cplusplus
}
#endif
#endif
