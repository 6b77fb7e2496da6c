/* server: the shared services every protocol session uses. Built once by
 * cmd/posthornd and passed to the protocol modules; lives until exit. */
#ifndef POSTHORN_SERVER_H
#define POSTHORN_SERVER_H

#include <stdbool.h>

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
};

#endif
