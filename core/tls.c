/* tls: builds the server SSL_CTX from SSL_TYPE and TLS_LEVEL, generating
 * the self-signed pair on first start. */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "log.h"

#define TLS_PATH_MAX 4096
#define SELF_SIGNED_DAYS 3650
#define SESSION_CACHE_SIZE 1024
#define LETSENCRYPT_LIVE "/etc/letsencrypt/live"

static const char ciphers_modern[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char ciphers_dhe[] =
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";

/* A copy of the settings it was built from, so that reload does not depend
 * on the settings struct staying alive. */
struct tls_server {
    SSL_CTX *ctx;
    enum ssl_type type;
    enum tls_level level;
    char *hostname;
    char *state_dir;
    char *cert_path;
    char *key_path;
    uid_t owner_uid;
    gid_t owner_gid;
};

/* Where the certificate and key of one build come from; labels name the
 * setting in errors. */
struct pair_source {
    char cert[TLS_PATH_MAX];
    char key[TLS_PATH_MAX];
    const char *cert_label;
    const char *key_label;
};

/* Appends OpenSSL's most recent reason and clears the thread's error queue
 * so it cannot confuse a later SSL_get_error on this thread. */
static void ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown error");
    ERR_clear_error();
}

static int join_path(char *dst, size_t dstlen, const char *dir, const char *name)
{
    int n = snprintf(dst, dstlen, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= dstlen ? -1 : 0;
}

/* ---- self-signed generation ---- */

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* Built from a GENERAL_NAME rather than a config string, so no character
 * of the hostname can be read as config syntax. */
static int add_san(X509 *x, const char *hostname)
{
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
    int rc = -1;
    if (!names || !gn || !ia5 || !ASN1_STRING_set(ia5, hostname, (int)strlen(hostname)))
        goto out;
    GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
    ia5 = NULL;
    if (!sk_GENERAL_NAME_push(names, gn))
        goto out;
    gn = NULL;
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1)
        rc = 0;
out:
    ASN1_IA5STRING_free(ia5);
    GENERAL_NAME_free(gn);
    GENERAL_NAMES_free(names);
    return rc;
}

static int set_random_serial(X509 *x)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return -1;
    raw[0] &= 0x7f; /* DER INTEGER: keep it positive */
    raw[0] |= 0x40; /* and a full 128-bit-ish length, never zero */
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    if (!bn)
        return -1;
    int rc = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ? 0 : -1;
    BN_free(bn);
    return rc;
}

static X509 *make_cert(EVP_PKEY *key, const char *hostname)
{
    X509 *x = X509_new();
    if (!x)
        return NULL;
    X509_NAME *name = X509_get_subject_name(x);
    bool ok = X509_set_version(x, 2) && set_random_serial(x) == 0 &&
              X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
              X509_time_adj_ex(X509_getm_notAfter(x), SELF_SIGNED_DAYS, 0, NULL) &&
              X509_set_pubkey(x, key) &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                         (const unsigned char *)hostname, -1, -1, 0) &&
              X509_set_issuer_name(x, name) &&
              add_ext(x, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
              add_ext(x, NID_key_usage, "critical,digitalSignature,keyEncipherment") == 0 &&
              add_ext(x, NID_ext_key_usage, "serverAuth") == 0 &&
              add_ext(x, NID_subject_key_identifier, "hash") == 0 &&
              add_san(x, hostname) == 0 &&
              X509_sign(x, key, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* Writes data to dir/name through a temporary file: fsync, then rename, so
 * a crash leaves either the old file or the complete new one. */
static int write_file_atomic(const char *dir, const char *name, const char *data, size_t len,
                             mode_t mode, const struct tls_server *t, char *err, size_t errlen)
{
    char path[TLS_PATH_MAX], tmp[TLS_PATH_MAX + 32];
    if (join_path(path, sizeof path, dir, name) < 0) {
        snprintf(err, errlen, "STATE_DIR: path too long: %s", dir);
        return -1;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        snprintf(err, errlen, "STATE_DIR: cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            goto fail;
        off += (size_t)w;
    }
    if (fchmod(fd, mode) < 0 || fsync(fd) < 0)
        goto fail;
    if (geteuid() == 0 && fchown(fd, t->owner_uid, t->owner_gid) < 0)
        goto fail;
    if (close(fd) < 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0)
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "STATE_DIR: cannot write %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Serialises a PEM object through a memory BIO; *out points into bio. */
static BIO *pem_to_mem(EVP_PKEY *key, X509 *cert, const char **out, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio)
        return NULL;
    int ok = key ? PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_bio_X509(bio, cert);
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    if (!ok || n <= 0) {
        BIO_free(bio);
        return NULL;
    }
    *out = p;
    *len = (size_t)n;
    return bio;
}

static int write_pem(const char *dir, const char *name, EVP_PKEY *key, X509 *cert,
                     mode_t mode, const struct tls_server *t, char *err, size_t errlen)
{
    const char *data;
    size_t len;
    BIO *bio = pem_to_mem(key, cert, &data, &len);
    if (!bio) {
        char why[256];
        ssl_reason(why, sizeof why);
        snprintf(err, errlen, "self-signed certificate: cannot encode %s: %s", name, why);
        return -1;
    }
    int rc = write_file_atomic(dir, name, data, len, mode, t, err, errlen);
    OPENSSL_cleanse((void *)data, len);
    BIO_free(bio);
    return rc;
}

/* Generates and stores a new pair. The key goes first: if we crash in
 * between, the next start finds a lone key and regenerates. */
static int generate_self_signed(const struct tls_server *t, const char *dir, char *err,
                                size_t errlen)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = key ? make_cert(key, t->hostname) : NULL;
    int rc = -1;
    if (!cert) {
        char why[256];
        ssl_reason(why, sizeof why);
        snprintf(err, errlen, "self-signed certificate for %s: generation failed: %s",
                 t->hostname, why);
        goto out;
    }
    if (write_pem(dir, "key.pem", key, NULL, 0600, t, err, errlen) < 0 ||
        write_pem(dir, "cert.pem", NULL, cert, 0644, t, err, errlen) < 0)
        goto out;
    if (fsync_dir(dir) < 0) {
        snprintf(err, errlen, "STATE_DIR: cannot sync %s: %s", dir, strerror(errno));
        goto out;
    }
    log_info("tls: generated a self-signed certificate for %s in %s", t->hostname, dir);
    rc = 0;
out:
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

static X509 *read_cert_file(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    return x;
}

static EVP_PKEY *read_key_file(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    return k;
}

/* The stored pair is reused only when both load, match, still cover the
 * hostname and have not expired; otherwise the reason is logged. */
static bool self_signed_usable(const struct tls_server *t, const char *cert_path,
                               const char *key_path)
{
    bool have_cert = access(cert_path, F_OK) == 0;
    bool have_key = access(key_path, F_OK) == 0;
    if (!have_cert && !have_key)
        return false;
    if (have_cert != have_key) {
        log_warn("tls: %s exists without %s; generating a new self-signed pair",
                 have_cert ? cert_path : key_path, have_cert ? key_path : cert_path);
        return false;
    }
    X509 *cert = read_cert_file(cert_path);
    EVP_PKEY *key = read_key_file(key_path);
    const char *problem = NULL;
    if (!cert || !key)
        problem = "cannot be loaded";
    else if (X509_check_private_key(cert, key) != 1)
        problem = "do not match";
    else if (X509_check_host(cert, t->hostname, 0, 0, NULL) != 1)
        problem = "are for another hostname";
    else if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0)
        problem = "have expired";
    X509_free(cert);
    EVP_PKEY_free(key);
    ERR_clear_error();
    if (problem)
        log_warn("tls: the self-signed certificate and key in %s/tls %s; generating a new pair",
                 t->state_dir, problem);
    return problem == NULL;
}

static int prepare_tls_dir(const struct tls_server *t, char *dir, size_t dirlen, char *err,
                           size_t errlen)
{
    if (join_path(dir, dirlen, t->state_dir, "tls") < 0) {
        snprintf(err, errlen, "STATE_DIR: path too long: %s", t->state_dir);
        return -1;
    }
    if (mkdir(dir, 0700) == 0) {
        if (geteuid() == 0 && chown(dir, t->owner_uid, t->owner_gid) < 0) {
            snprintf(err, errlen, "STATE_DIR: cannot give %s to %u:%u: %s", dir,
                     (unsigned)t->owner_uid, (unsigned)t->owner_gid, strerror(errno));
            return -1;
        }
    } else if (errno != EEXIST) {
        snprintf(err, errlen, "STATE_DIR: cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int source_self_signed(const struct tls_server *t, struct pair_source *src, char *err,
                              size_t errlen)
{
    char dir[TLS_PATH_MAX];
    if (prepare_tls_dir(t, dir, sizeof dir, err, errlen) < 0)
        return -1;
    if (join_path(src->cert, sizeof src->cert, dir, "cert.pem") < 0 ||
        join_path(src->key, sizeof src->key, dir, "key.pem") < 0) {
        snprintf(err, errlen, "STATE_DIR: path too long: %s", t->state_dir);
        return -1;
    }
    src->cert_label = src->key_label = "STATE_DIR";
    if (!self_signed_usable(t, src->cert, src->key) &&
        generate_self_signed(t, dir, err, errlen) < 0)
        return -1;
    return 0;
}

/* docker-mailserver looks in live/<hostname>, then live/<parent domain>
 * (a certificate for example.com that also covers mail.example.com). */
static int source_letsencrypt(const struct tls_server *t, struct pair_source *src, char *err,
                              size_t errlen)
{
    src->cert_label = src->key_label = "SSL_TYPE=letsencrypt";
    const char *parent = strchr(t->hostname, '.');
    if (parent && !strchr(parent + 1, '.'))
        parent = NULL; /* never a bare top-level domain */
    const char *names[2] = { t->hostname, parent ? parent + 1 : NULL };
    for (size_t i = 0; i < 2 && names[i]; i++) {
        char dir[TLS_PATH_MAX];
        int n = snprintf(dir, sizeof dir, "%s/%s", LETSENCRYPT_LIVE, names[i]);
        if (n < 0 || (size_t)n >= sizeof dir ||
            join_path(src->cert, sizeof src->cert, dir, "fullchain.pem") < 0 ||
            join_path(src->key, sizeof src->key, dir, "privkey.pem") < 0)
            continue;
        if (access(src->cert, F_OK) == 0)
            return 0;
    }
    snprintf(err, errlen, "SSL_TYPE=letsencrypt: no certificate for %s: %s/%s/fullchain.pem%s%s%s "
             "not found", t->hostname, LETSENCRYPT_LIVE, t->hostname,
             parent ? " and " LETSENCRYPT_LIVE "/" : "", parent ? parent + 1 : "",
             parent ? "/fullchain.pem" : "");
    return -1;
}

static int source_manual(const struct tls_server *t, struct pair_source *src, char *err,
                         size_t errlen)
{
    if (!t->cert_path || !*t->cert_path || !t->key_path || !*t->key_path) {
        snprintf(err, errlen, "%s: required when SSL_TYPE=manual",
                 !t->cert_path || !*t->cert_path ? "SSL_CERT_PATH" : "SSL_KEY_PATH");
        return -1;
    }
    if (snprintf(src->cert, sizeof src->cert, "%s", t->cert_path) >= (int)sizeof src->cert ||
        snprintf(src->key, sizeof src->key, "%s", t->key_path) >= (int)sizeof src->key) {
        snprintf(err, errlen, "SSL_CERT_PATH/SSL_KEY_PATH: path too long");
        return -1;
    }
    src->cert_label = "SSL_CERT_PATH";
    src->key_label = "SSL_KEY_PATH";
    return 0;
}

/* ---- context ---- */

static int check_readable(const char *label, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot read %s: %s", label, path, strerror(errno));
        return -1;
    }
    close(fd);
    return 0;
}

static int load_pair(SSL_CTX *ctx, const struct pair_source *src, char *err, size_t errlen)
{
    char why[256];
    if (check_readable(src->cert_label, src->cert, err, errlen) < 0 ||
        check_readable(src->key_label, src->key, err, errlen) < 0)
        return -1;
    if (SSL_CTX_use_certificate_chain_file(ctx, src->cert) != 1) {
        ssl_reason(why, sizeof why);
        snprintf(err, errlen, "%s: %s: not a PEM certificate chain: %s", src->cert_label,
                 src->cert, why);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, src->key, SSL_FILETYPE_PEM) != 1) {
        ssl_reason(why, sizeof why);
        snprintf(err, errlen, "%s: %s: not a PEM private key matching %s: %s", src->key_label,
                 src->key, src->cert, why);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_reason(why, sizeof why);
        snprintf(err, errlen, "%s: %s does not match the certificate %s", src->key_label,
                 src->key, src->cert);
        return -1;
    }
    return 0;
}

static int configure_ctx(SSL_CTX *ctx, enum tls_level level, char *err, size_t errlen)
{
    char ciphers[sizeof ciphers_modern + sizeof ciphers_dhe + 1];
    snprintf(ciphers, sizeof ciphers, "%s%s%s", ciphers_modern,
             level == TLS_LEVEL_INTERMEDIATE ? ":" : "",
             level == TLS_LEVEL_INTERMEDIATE ? ciphers_dhe : "");
    static const unsigned char sid_ctx[] = "posthorn";
    bool ok = SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) &&
              SSL_CTX_set_cipher_list(ctx, ciphers) &&
              SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    if (ok && level == TLS_LEVEL_INTERMEDIATE)
        ok = SSL_CTX_set_dh_auto(ctx, 1);
    if (!ok) {
        char why[256];
        ssl_reason(why, sizeof why);
        snprintf(err, errlen, "TLS_LEVEL: cannot configure the TLS context: %s", why);
        return -1;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                             SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
    /* Idle connections (IMAP IDLE) would otherwise hold ~34 KB of buffers each. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_ENABLE_PARTIAL_WRITE);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, SESSION_CACHE_SIZE);
    return 0;
}

static SSL_CTX *build_ctx(const struct tls_server *t, char *err, size_t errlen)
{
    struct pair_source src;
    memset(&src, 0, sizeof src);
    int rc;
    switch (t->type) {
    case SSL_TYPE_MANUAL: rc = source_manual(t, &src, err, errlen); break;
    case SSL_TYPE_LETSENCRYPT: rc = source_letsencrypt(t, &src, err, errlen); break;
    default: rc = source_self_signed(t, &src, err, errlen); break;
    }
    if (rc < 0)
        return NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        char why[256];
        ssl_reason(why, sizeof why);
        snprintf(err, errlen, "cannot create a TLS context: %s", why);
        return NULL;
    }
    if (configure_ctx(ctx, t->level, err, errlen) < 0 || load_pair(ctx, &src, err, errlen) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* ---- public ---- */

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

void tls_server_free(struct tls_server *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t->hostname);
    free(t->state_dir);
    free(t->cert_path);
    free(t->key_path);
    free(t);
}

struct tls_server *tls_server_new(const struct settings *s, uid_t owner_uid, gid_t owner_gid,
                                  char *err, size_t errlen)
{
    struct tls_server *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "tls: out of memory");
        return NULL;
    }
    t->type = s->ssl_type;
    t->level = s->tls_level;
    t->owner_uid = owner_uid;
    t->owner_gid = owner_gid;
    t->hostname = dup_or_empty(s->hostname && *s->hostname ? s->hostname : "localhost");
    t->state_dir = dup_or_empty(s->state_dir);
    t->cert_path = dup_or_empty(s->ssl_cert_path);
    t->key_path = dup_or_empty(s->ssl_key_path);
    if (!t->hostname || !t->state_dir || !t->cert_path || !t->key_path) {
        snprintf(err, errlen, "tls: out of memory");
        tls_server_free(t);
        return NULL;
    }
    t->ctx = build_ctx(t, err, errlen);
    if (!t->ctx) {
        tls_server_free(t);
        return NULL;
    }
    return t;
}

SSL_CTX *tls_server_ctx(struct tls_server *t)
{
    return t->ctx;
}

int tls_server_reload(struct tls_server *t, char *err, size_t errlen)
{
    SSL_CTX *ctx = build_ctx(t, err, errlen);
    if (!ctx)
        return -1;
    /* Sessions already up hold their own reference to the old context. */
    SSL_CTX_free(t->ctx);
    t->ctx = ctx;
    return 0;
}
