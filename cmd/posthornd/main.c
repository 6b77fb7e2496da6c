/* posthornd: the daemon's main. Wiring only: settings, directories, TLS,
 * listeners, privilege drop, the shared services, signals, the loop. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "accounts.h"
#include "conn.h"
#include "listener.h"
#include "log.h"
#include "mailstore.h"
#include "pop3_server.h"
#include "privileges.h"
#include "server.h"
#include "settings.h"
#include "smtp_server.h"
#include "tls.h"
#include "workers.h"

#define DRAIN_SECONDS 30.0   /* SIGTERM: how long transactions in flight may take */

struct daemon {
    struct server srv;
    struct settings settings;
    struct listener *smtp;
    struct listener *pop3, *pop3s;
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

static void on_drain_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct daemon *d = w->data;
    if (smtp_session_count() == 0 && pop3_session_count() == 0 && conn_count() == 0 &&
        workers_pending(d->srv.workers) == 0) {
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    if (!d->aborted && ev_now(loop) >= d->drain_deadline) {
        log_warn("shutdown: %u sessions still open after %.0f s; closing them",
                 smtp_session_count() + pop3_session_count(), DRAIN_SECONDS);
        smtp_abort_all();
        pop3_abort_all();
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
             smtp_session_count() + pop3_session_count());
    listener_stop(d->smtp);
    if (d->pop3)
        listener_stop(d->pop3);
    if (d->pop3s)
        listener_stop(d->pop3s);
    smtp_shutdown(&d->srv);
    pop3_shutdown(&d->srv);
    d->drain_deadline = ev_now(loop) + DRAIN_SECONDS;
    ev_timer_init(&d->drain, on_drain_tick, 0., 0.05);
    d->drain.data = d;
    ev_timer_again(loop, &d->drain);
}

static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct daemon *d = w->data;
    char err[512];
    if (tls_server_reload(d->srv.tls, err, sizeof err) < 0)
        log_error("SIGHUP: TLS certificate not reloaded, keeping the old one: %s", err);
    else
        log_info("SIGHUP: TLS certificate reloaded");
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

/* Listeners whose protocols come with later work: say so instead of binding. */
static void note_unserved(const char *setting, const char *spec)
{
    if (spec && *spec)
        log_info("%s=%s: this protocol is not served yet; not listening", setting, spec);
}

static int start(struct daemon *d, char *err, size_t errlen)
{
    const struct settings *s = &d->settings;
    if (privileges_prepare_dirs(s, err, errlen) < 0)
        return -1;
    d->srv.tls = tls_server_new(s, s->vmail_uid, s->vmail_gid, err, errlen);
    if (!d->srv.tls)
        return -1;
    d->smtp = listener_open("SMTP_LISTEN", s->smtp_listen, err, errlen);
    if (!d->smtp)
        return -1;
    note_unserved("SUBMISSIONS_LISTEN", s->submissions_listen);
    note_unserved("SUBMISSION_LISTEN", s->submission_listen);
    note_unserved("IMAP_LISTEN", s->enable_imap ? s->imap_listen : NULL);
    note_unserved("IMAPS_LISTEN", s->enable_imap ? s->imaps_listen : NULL);
    if (s->enable_pop3) {
        d->pop3 = listener_open("POP3_LISTEN", s->pop3_listen, err, errlen);
        if (!d->pop3)
            return -1;
        d->pop3s = listener_open("POP3S_LISTEN", s->pop3s_listen, err, errlen);
        if (!d->pop3s)
            return -1;
    }

    if (privileges_drop(s->vmail_uid, s->vmail_gid, err, errlen) < 0)
        return -1;

    d->srv.accounts = accounts_open(s->state_dir, err, errlen);
    if (!d->srv.accounts)
        return -1;
    d->srv.store = mailstore_open(s->mail_dir, s->hostname, err, errlen);
    if (!d->srv.store)
        return -1;
    d->srv.workers = workers_create(d->srv.loop, s->worker_threads);
    if (!d->srv.workers) {
        snprintf(err, errlen, "cannot start %u worker threads: %s", s->worker_threads,
                 strerror(errno));
        return -1;
    }
    workers_submit(d->srv.workers, cleanup_work, NULL, &d->srv);

    listener_start(d->smtp, d->srv.loop, smtp_accept, &d->srv);
    if (d->pop3)
        listener_start(d->pop3, d->srv.loop, pop3_accept, &d->srv);
    if (d->pop3s)
        listener_start(d->pop3s, d->srv.loop, pop3s_accept, &d->srv);
    watch_signal(d, &d->sigterm, SIGTERM, on_stop_signal);
    watch_signal(d, &d->sigint, SIGINT, on_stop_signal);
    watch_signal(d, &d->sighup, SIGHUP, on_sighup);
    log_info("posthornd ready: %s, SMTP on %s (%zu sockets), POP3 on %zu+%zu sockets, uid %u",
             s->hostname, s->smtp_listen, listener_socket_count(d->smtp),
             d->pop3 ? listener_socket_count(d->pop3) : 0,
             d->pop3s ? listener_socket_count(d->pop3s) : 0, (unsigned)geteuid());
    return 0;
}

static void stop(struct daemon *d)
{
    if (d->srv.workers)
        workers_destroy(d->srv.workers);
    if (d->smtp)
        listener_free(d->smtp);
    if (d->pop3)
        listener_free(d->pop3);
    if (d->pop3s)
        listener_free(d->pop3s);
    if (d->srv.store)
        mailstore_close(d->srv.store);
    if (d->srv.accounts)
        accounts_close(d->srv.accounts);
    if (d->srv.tls)
        tls_server_free(d->srv.tls);
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
