/* greylist: postgrey's greylisting (ENABLE_POSTGREY) at RCPT on port 25.
 *
 * A triplet is (client network, sender, recipient); the network is the
 * client's IPv4 /24 or IPv6 /64, so that a sender's pool of outbound
 * servers retrying from a neighbouring address counts as the same client.
 * State lives in SQLite, STATE_DIR/greylist.db:
 *   - first sight of a triplet: deferred (450 4.2.0 POSTGREY_TEXT);
 *   - seen again after POSTGREY_DELAY seconds: passed, and from then on
 *     passed at once;
 *   - triplets (and clients) not seen for POSTGREY_MAX_AGE days expire;
 *   - a client network whose triplets passed greylisting
 *     POSTGREY_AUTO_WHITELIST_CLIENTS times (distinct triplets that waited
 *     and came back) is whitelisted: its new triplets pass at once, until
 *     it has not been seen for POSTGREY_MAX_AGE days. 0 disables this.
 *
 * The state machine takes the time as an argument, so tests drive it with
 * their own clock. All calls block (SQLite): worker threads only; one
 * handle may be used from several threads (calls are serialised). */
#ifndef POSTHORN_GREYLIST_H
#define POSTHORN_GREYLIST_H

#include <stddef.h>
#include <time.h>

#include "filter.h"

struct greylist;

struct greylist_params {
    unsigned delay;               /* seconds a new triplet must wait */
    unsigned max_age_days;        /* unseen entries expire after this */
    unsigned auto_whitelist;      /* passes that whitelist a client network; 0 = never */
};

enum greylist_verdict {
    GREYLIST_PASS,                /* known and old enough, or whitelisted */
    GREYLIST_DEFER,               /* new, or retried too early */
    GREYLIST_ERROR,               /* database error (logged) */
};

/* Opens (creating and migrating) the database at path. NULL with a reason. */
struct greylist *greylist_open(const char *path, char *err, size_t errlen);
void greylist_close(struct greylist *g);

/* The client network of an address in text form: "192.0.2.0/24",
 * "2001:db8:1:2::/64". Returns 0, or -1 for something that is not an IP
 * address (or does not fit). */
int greylist_network(const char *ip, char *out, size_t outlen);

/* Checks and records one triplet at time `now`. sender is "" for <>;
 * sender and recipient are compared case-insensitively. On DEFER,
 * *wait_left (may be NULL) is the number of seconds until a retry passes. */
enum greylist_verdict greylist_check(struct greylist *g, const char *client_ip,
                                     const char *sender, const char *rcpt, time_t now,
                                     const struct greylist_params *p, unsigned *wait_left);

/* The filter (filters/filters.c lists it). */
extern const struct filter_ops greylist_filter;

#endif
