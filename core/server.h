/* server: the shared services every protocol session uses. Built once by
 * cmd/posthornd and passed to the protocol modules; lives until exit. */
#ifndef POSTHORN_SERVER_H
#define POSTHORN_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "accounts.h"
#include "dns.h"
#include "listener.h"
#include "mailstore.h"
#include "netmatch.h"
#include "queue.h"
#include "settings.h"
#include "tls.h"
#include "workers.h"

struct server {
    struct ev_loop *loop;
    const struct settings *settings;
    struct tls_server *tls;
    struct workers *workers;
    struct accounts *accounts;
    struct mailstore *store;
    struct dns *dns;
    struct queue *queue;                    /* the outbound queue's storage */
    struct queue_runner *runner;            /* its scheduler */
    const struct listener *smtp_listener;   /* port 25, for mail-loop detection */
    const struct netmatch *permit_networks; /* PERMIT_NETWORKS: may relay on port 25 */
    bool stopping;             /* SIGTERM received: finish what is in flight */
    /* Called by IMAP on the loop thread after a user moved or copied
     * messages uids[0..n), now in `folder`, into Junk (spam) or out of it:
     * the spam classifier learns from that. Set by the daemon; NULL:
     * nothing learns. */
    void (*junk_moved)(struct server *srv, const char *address, const char *folder,
                       const uint32_t *uids, size_t n, bool spam);
};

#endif
