/* posthornd: the daemon's main. Wiring only: settings, directories, TLS,
 * listeners, privilege drop, the shared services, signals, the loop. */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "accounts.h"
#include "bayes.h"
#include "conn.h"
#include "dns.h"
#include "imap_server.h"
#include "listener.h"
#include "log.h"
#include "mailnotify.h"
#include "mailstore.h"
#include "mta.h"
#include "netmatch.h"
#include "pipeline.h"
#include "pop3_server.h"
#include "privileges.h"
#include "queue.h"
#include "queue_runner.h"
#include "server.h"
#include "settings.h"
#include "smtp_server.h"
#include "tls.h"
#include "workers.h"

#define DRAIN_SECONDS 30.0   /* SIGTERM: how long transactions in flight may take */
#define DRAIN_GRACE   5.0    /* then, after closing sessions, how long until exit anyway */

/* One listening service: its setting, and who takes its connections. */
struct service {
    const char *setting;
    size_t spec_offset;            /* the char * in struct settings */
    listener_accept_fn accept;
    enum { ALWAYS, IF_POP3, IF_IMAP } gate;   /* ENABLE_POP3 / ENABLE_IMAP */
};

#define SPEC(field) offsetof(struct settings, field)

static const struct service services[] = {
    { "SMTP_LISTEN", SPEC(smtp_listen), smtp_accept, ALWAYS },
    { "SUBMISSIONS_LISTEN", SPEC(submissions_listen), smtp_accept_submissions, ALWAYS },
    { "SUBMISSION_LISTEN", SPEC(submission_listen), smtp_accept_submission, ALWAYS },
    { "POP3_LISTEN", SPEC(pop3_listen), pop3_accept, IF_POP3 },
    { "POP3S_LISTEN", SPEC(pop3s_listen), pop3s_accept, IF_POP3 },
    { "IMAP_LISTEN", SPEC(imap_listen), imap_accept, IF_IMAP },
    { "IMAPS_LISTEN", SPEC(imaps_listen), imaps_accept, IF_IMAP },
};
#define NSERVICES (sizeof services / sizeof *services)

struct daemon {
    struct server srv;
    struct settings settings;
    const char *config;
    struct listener *listeners[NSERVICES];
    struct netmatch permit;    /* PERMIT_NETWORKS, parsed once */
    ev_signal sigterm, sigint, sighup;
    ev_timer drain;
    ev_tstamp drain_deadline;
    bool aborted;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: posthornd [-c FILE] [-t]\n"
                 "  -c FILE  read settings (NAME=value lines) from FILE; the environment overrides\n"
                 "  -t       check the settings and exit\n");
}

static unsigned sessions_open(void)
{
    return smtp_session_count() + pop3_session_count() + imap_session_count();
}

static void on_drain_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct daemon *d = w->data;
    bool idle = sessions_open() == 0 && conn_count() == 0 &&
                workers_pending(d->srv.workers) == 0 && queue_runner_busy(d->srv.runner) == 0;
    if (idle || (d->aborted && ev_now(loop) >= d->drain_deadline + DRAIN_GRACE)) {
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    if (!d->aborted && ev_now(loop) >= d->drain_deadline) {
        log_warn("shutdown: %u sessions and %u deliveries still open after %.0f s; closing them",
                 sessions_open(), mta_active(), DRAIN_SECONDS);
        smtp_abort_all();
        pop3_abort_all();
        imap_abort_all();
        mta_abort_all();
        d->aborted = true;
    }
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct daemon *d = w->data;
    if (d->srv.stopping)
        return;
    log_info("shutdown: signal %d, no longer accepting; finishing %u sessions", w->signum,
             sessions_open());
    for (size_t i = 0; i < NSERVICES; i++)
        if (d->listeners[i])
            listener_stop(d->listeners[i]);
    queue_runner_stop(d->srv.runner);
    smtp_shutdown(&d->srv);
    pop3_shutdown(&d->srv);
    imap_shutdown(&d->srv);
    d->drain_deadline = ev_now(loop) + DRAIN_SECONDS;
    ev_timer_init(&d->drain, on_drain_tick, 0., 0.05);
    d->drain.data = d;
    ev_timer_again(loop, &d->drain);
}

/* SIGHUP: the TLS certificate, and LOG_LEVEL from the settings file. */
static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct daemon *d = w->data;
    char err[512];
    if (tls_server_reload(d->srv.tls, err, sizeof err) < 0)
        log_error("SIGHUP: TLS certificate not reloaded, keeping the old one: %s "
                  "(posthornd runs as uid %u now: the files must be readable by it)",
                  err, (unsigned)geteuid());
    else
        log_info("SIGHUP: TLS certificate reloaded");
    struct settings fresh;
    if (settings_load(d->config, &fresh, err, sizeof err) < 0) {
        log_error("SIGHUP: settings not reread: %s", err);
        return;
    }
    if (fresh.log_level != log_get_level()) {
        log_set_level(fresh.log_level);
        log_info("SIGHUP: LOG_LEVEL changed");
    }
    settings_free(&fresh);
}

static void cleanup_work(void *arg)
{
    struct server *srv = arg;
    long removed = mailstore_cleanup_tmp(srv->store);
    if (removed > 0)
        log_info("startup: removed %ld leftover files of interrupted deliveries", removed);
}

static void watch_signal(struct daemon *d, ev_signal *w, int signum,
                         void (*cb)(struct ev_loop *, ev_signal *, int))
{
    ev_signal_init(w, cb, signum);
    w->data = d;
    ev_signal_start(d->srv.loop, w);
}

static const char *service_spec(const struct daemon *d, const struct service *svc)
{
    if ((svc->gate == IF_POP3 && !d->settings.enable_pop3) ||
        (svc->gate == IF_IMAP && !d->settings.enable_imap))
        return NULL;
    return *(char *const *)((const char *)&d->settings + svc->spec_offset);
}

/* Binds every enabled listener; called while still root. */
static int open_listeners(struct daemon *d, char *err, size_t errlen)
{
    for (size_t i = 0; i < NSERVICES; i++) {
        const char *spec = service_spec(d, &services[i]);
        if (!spec || !*spec)
            continue;
        d->listeners[i] = listener_open(services[i].setting, spec, err, errlen);
        if (!d->listeners[i])
            return -1;
    }
    d->srv.smtp_listener = d->listeners[0];
    return 0;
}

static int open_services(struct daemon *d, char *err, size_t errlen)
{
    const struct settings *s = &d->settings;
    if (netmatch_parse(s->permit_networks, &d->permit) < 0) {
        snprintf(err, errlen, "PERMIT_NETWORKS: cannot parse '%s'", s->permit_networks);
        return -1;
    }
    d->srv.permit_networks = &d->permit;
    d->srv.accounts = accounts_open(s->state_dir, err, errlen);
    if (!d->srv.accounts)
        return -1;
    d->srv.store = mailstore_open(s->mail_dir, s->hostname, err, errlen);
    if (!d->srv.store)
        return -1;
    /* IMAP's IDLE and untagged updates; without it they only see changes
     * at the next command (logged by mailnotify). */
    mailnotify_init(d->srv.loop, d->srv.store);
    d->srv.queue = queue_open_daemon(s->state_dir, err, errlen);
    if (!d->srv.queue)
        return -1;
    d->srv.dns = dns_new(d->srv.loop, s->dns_resolver, err, errlen);
    if (!d->srv.dns)
        return -1;
    d->srv.workers = workers_create(d->srv.loop, s->worker_threads);
    if (!d->srv.workers) {
        snprintf(err, errlen, "cannot start %u worker threads: %s", s->worker_threads,
                 strerror(errno));
        return -1;
    }
    d->srv.runner = queue_runner_start(&d->srv);
    if (!d->srv.runner) {
        snprintf(err, errlen, "cannot start the outbound queue runner");
        return -1;
    }
    return 0;
}

static int start(struct daemon *d, char *err, size_t errlen)
{
    const struct settings *s = &d->settings;
    if (privileges_prepare_dirs(s, err, errlen) < 0)
        return -1;
    d->srv.tls = tls_server_new(s, s->vmail_uid, s->vmail_gid, err, errlen);
    if (!d->srv.tls || open_listeners(d, err, errlen) < 0)
        return -1;
    if (privileges_drop(s->vmail_uid, s->vmail_gid, err, errlen) < 0)
        return -1;
    if (open_services(d, err, errlen) < 0)
        return -1;
    d->srv.junk_moved = bayes_junk_moved;
    if (filters_start(&d->srv) < 0) {
        snprintf(err, errlen, "cannot start the inbound filters");
        return -1;
    }
    workers_submit(d->srv.workers, cleanup_work, NULL, &d->srv);

    struct buf ready = BUF_INIT;
    for (size_t i = 0; i < NSERVICES; i++) {
        if (!d->listeners[i])
            continue;
        listener_start(d->listeners[i], d->srv.loop, services[i].accept, &d->srv);
        buf_printf(&ready, " %s=%s", services[i].setting, service_spec(d, &services[i]));
    }
    watch_signal(d, &d->sigterm, SIGTERM, on_stop_signal);
    watch_signal(d, &d->sigint, SIGINT, on_stop_signal);
    watch_signal(d, &d->sighup, SIGHUP, on_sighup);
    const char *listening = buf_cstr(&ready);
    log_info("posthornd ready: %s, uid %u,%s", s->hostname, (unsigned)geteuid(),
             listening ? listening : "");
    buf_free(&ready);
    return 0;
}

static void stop(struct daemon *d)
{
    /* Jobs still queued complete first: their done functions may reach the
     * runner. */
    if (d->srv.workers)
        workers_destroy(d->srv.workers);
    filters_stop();
    mailnotify_shutdown();
    if (d->srv.runner)
        queue_runner_free(d->srv.runner);
    if (d->srv.dns)
        dns_free(d->srv.dns);
    for (size_t i = 0; i < NSERVICES; i++)
        if (d->listeners[i])
            listener_free(d->listeners[i]);
    if (d->srv.queue)
        queue_close(d->srv.queue);
    if (d->srv.store)
        mailstore_close(d->srv.store);
    if (d->srv.accounts)
        accounts_close(d->srv.accounts);
    if (d->srv.tls)
        tls_server_free(d->srv.tls);
    netmatch_free(&d->permit);
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    bool check_only = false;
    int opt;
    while ((opt = getopt(argc, argv, "c:th")) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 't': check_only = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    static struct daemon d;
    d.config = config;
    char err[1024];
    if (settings_load(config, &d.settings, err, sizeof err) < 0) {
        fprintf(stderr, "posthornd: %s\n", err);
        return 1;
    }
    if (check_only) {
        printf("posthornd: settings OK\n");
        settings_free(&d.settings);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    if (log_init(d.settings.log_level, d.settings.log_dir, err, sizeof err) < 0) {
        fprintf(stderr, "posthornd: LOG_DIR: %s\n", err);
        settings_free(&d.settings);
        return 1;
    }
    d.srv.loop = ev_default_loop(EVFLAG_AUTO);
    d.srv.settings = &d.settings;

    int status = 0;
    if (start(&d, err, sizeof err) < 0) {
        log_error("%s", err);
        status = 1;
    } else {
        ev_run(d.srv.loop, 0);
        log_info("posthornd stopped");
    }
    stop(&d);
    settings_free(&d.settings);
    log_close();
    return status;
}
