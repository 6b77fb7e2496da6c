/* listener: the listening sockets of one *_LISTEN setting.
 *
 * Spec syntax: a comma-separated list of "IPv4:port", "[IPv6]:port",
 * "host:port" (resolved numerically only: no DNS at start) or ":port"
 * (every address: [::] dual-stack, or 0.0.0.0 when the machine has no
 * IPv6). Empty spec = no sockets. Sockets are bound (SO_REUSEADDR, IPV6_V6ONLY
 * on explicit IPv6 addresses) before privileges are dropped, and accept
 * only once listener_start is called. */
#ifndef POSTHORN_LISTENER_H
#define POSTHORN_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <ev.h>

struct listener;

/* Called on the loop thread for each accepted connection. The callee owns
 * fd. */
typedef void (*listener_accept_fn)(int fd, const struct sockaddr *peer, socklen_t peerlen,
                                   void *arg);

/* Binds every address of spec. `setting` names the setting for errors
 * ("SMTP_LISTEN: cannot bind 0.0.0.0:25: Address already in use").
 * Returns NULL with a reason in err. An empty spec gives a listener with no
 * sockets. */
struct listener *listener_open(const char *setting, const char *spec, char *err, size_t errlen);

/* Checks the syntax only (for settings validation); 0 or -1 with reason. */
int listener_spec_check(const char *setting, const char *spec, char *err, size_t errlen);

size_t listener_socket_count(const struct listener *l);

void listener_start(struct listener *l, struct ev_loop *loop, listener_accept_fn fn, void *arg);
/* Stops accepting and closes the sockets (SIGTERM). */
void listener_stop(struct listener *l);
void listener_free(struct listener *l);

/* Mail-loop detection: true when addr (IPv4 or IPv6; its port is
 * ignored) with `port` reaches one of l's sockets: it equals a bound
 * address with that port, or l has a wildcard socket on that port and
 * addr is one of this machine's interface addresses (getifaddrs). l may be
 * NULL (false). IPv4 and IPv4-mapped IPv6 compare equal. */
bool listener_is_local(const struct listener *l, const struct sockaddr *addr, unsigned port);

/* Connection accounting for limits. iplimit_acquire returns false when the
 * address already holds `max_per_ip` connections or the total is at
 * `max_total`; otherwise counts it. Loop-thread only. */
bool iplimit_acquire(const char *addr, unsigned max_per_ip, unsigned max_total);
void iplimit_release(const char *addr);

#endif
