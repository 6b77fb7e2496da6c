/* mailnotify: tells IMAP sessions that a folder they watch has changed,
 * so IDLE and the untagged updates of other sessions need no polling.
 *
 * Two sources feed it: explicit calls to mailnotify_changed() from any
 * thread of this process (after a delivery, an APPEND, a flag change, an
 * expunge: including keyword changes, which touch no file), and inotify
 * watches on the new/ and cur/ directories of every watched folder, which
 * catch what other programs do to the Maildir. Callbacks run on the event
 * loop thread, coalesced: many changes in a burst give one call per watch
 * (delivered within about 50 ms). A callback may be spurious (a session's
 * own change, a file that came and went); the session then finds nothing
 * new when it syncs.
 *
 * Watches are per (address, folder); folder NULL or "" is INBOX. The
 * directories of a folder that does not exist yet are watched once it is
 * created by someone in this process (mailnotify_changed is called then);
 * when inotify is unavailable or out of watches, only in-process changes
 * are seen (logged once). */
#ifndef POSTHORN_MAILNOTIFY_H
#define POSTHORN_MAILNOTIFY_H

#include <ev.h>

#include "mailstore.h"

struct mailnotify_watch;
typedef void (*mailnotify_cb)(void *arg);

/* Sets the loop and store once at start (loop thread). Returns 0 or -1
 * (the process then works without notifications: logged). */
int mailnotify_init(struct ev_loop *loop, struct mailstore *ms);
void mailnotify_shutdown(void);

/* Loop thread only. Returns NULL when out of memory. */
struct mailnotify_watch *mailnotify_watch(const char *address, const char *folder,
                                          mailnotify_cb cb, void *arg);
void mailnotify_unwatch(struct mailnotify_watch *w);

/* Any thread. Cheap when nobody watches the folder. */
void mailnotify_changed(const char *address, const char *folder);

#endif
