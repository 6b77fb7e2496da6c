/* tls: the server's TLS context, from SSL_TYPE and TLS_LEVEL.
 *
 * SSL_TYPE=self-signed: a key and certificate for the hostname are
 * generated once into STATE_DIR/tls/ (cert.pem, key.pem, mode 0600 for the
 * key) and reused on every start. manual: SSL_CERT_PATH / SSL_KEY_PATH.
 * letsencrypt: /etc/letsencrypt/live/<hostname>/fullchain.pem and
 * privkey.pem. TLS 1.2 is the floor. TLS_LEVEL=modern: TLS 1.3 preferred,
 * TLS 1.2 only with ECDHE AEAD suites; intermediate: Mozilla's intermediate
 * list (adds DHE).
 *
 * tls_server_reload() builds a new SSL_CTX and swaps it in: connections
 * that are already up keep the context they started with (SSL objects hold
 * a reference), new ones get the new one. */
#ifndef POSTHORN_TLS_H
#define POSTHORN_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "settings.h"

struct tls_server;

/* Loads or generates the certificate and builds the context. When running
 * as root, generated files are chowned to owner_uid/owner_gid so the daemon
 * can reread them after dropping privileges. Returns NULL with a one-line
 * reason in err. */
struct tls_server *tls_server_new(const struct settings *s, uid_t owner_uid, gid_t owner_gid,
                                  char *err, size_t errlen);

/* The current context. Callers that keep it beyond the current call must
 * take a reference (SSL_new does). */
SSL_CTX *tls_server_ctx(struct tls_server *t);

/* Rebuilds from the same settings (SIGHUP). On failure the old context
 * stays in use and -1 is returned with a reason. */
int tls_server_reload(struct tls_server *t, char *err, size_t errlen);

void tls_server_free(struct tls_server *t);

#endif
