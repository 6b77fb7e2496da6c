/* auth: password logins for protocol sessions (POP3 now; IMAP and SMTP
 * submission next). The password check runs on the worker pool; a failure
 * is answered only after a delay that grows with the failures recorded for
 * the client's address, and an address with too many recent failures is
 * refused without checking (throttling; banning comes with later work).
 * Successes reset nothing for other addresses and are never delayed.
 *
 * The callback runs on the loop thread. The caller keeps `arg` alive until
 * it runs (a session marks itself busy, as for any worker job). */
#ifndef POSTHORN_AUTH_H
#define POSTHORN_AUTH_H

#include <stdbool.h>

#include "server.h"

enum auth_result {
    AUTH_OK,
    AUTH_FAILED,        /* wrong user or password (after the delay) */
    AUTH_THROTTLED,     /* too many failures from this address: not checked */
    AUTH_TEMPFAIL,      /* the accounts database failed */
};

/* `user` is the login name as given (lowercased here; it must be a full
 * address). On AUTH_OK, `address` is the canonical user address. */
typedef void (*auth_done_fn)(void *arg, enum auth_result result, const char *address);

/* Starts a check. Returns 0, or -1 when out of memory (done not called). */
int auth_login(struct server *srv, const char *client_addr, const char *user,
               const char *password, auth_done_fn done, void *arg);

/* The same, naming the protocol in the log line ("auth: pop3 login ok
 * user=... client=..."); proto is a static string or NULL. */
int auth_login_proto(struct server *srv, const char *proto, const char *client_addr,
                     const char *user, const char *password, auth_done_fn done, void *arg);

/* Failures recorded for an address (tests, logging). */
unsigned auth_failures(const char *client_addr);

/* Tests: the unit of the failure delays in seconds (1.0 by default: 1 s,
 * 2 s, 4 s, 8 s); a unit test uses a small one to run the throttle quickly. */
void auth_set_delay_unit(double seconds);

#endif
