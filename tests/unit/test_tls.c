/* Unit tests for tls: self-signed generation (files, modes, reuse,
 * regeneration), the certificate's contents, handshakes in memory (TLS 1.2
 * and 1.3 accepted, TLS 1.1 refused), manual certificates and their
 * errors, TLS_LEVEL ciphers and reload. */
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "test.h"
#include "tls.h"

#define HOST "mail.example.test"

static char tmpdir[] = "/tmp/test_tls.XXXXXX";
static char state_dir[256], tls_dir[300], cert_path[320], key_path[320];

static void init_settings(struct settings *s)
{
    memset(s, 0, sizeof *s);
    s->state_dir = state_dir;
    s->hostname = HOST;
    s->ssl_type = SSL_TYPE_SELF_SIGNED;
    s->tls_level = TLS_LEVEL_MODERN;
}

static int fingerprint(const char *path, unsigned char md[EVP_MAX_MD_SIZE])
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    unsigned len = 0;
    int ok = x && X509_digest(x, EVP_sha256(), md, &len);
    X509_free(x);
    return ok ? (int)len : -1;
}

/* Drives both ends over a BIO pair until both finish or one fails.
 * Returns 0 on success; *server_reason gets the server's OpenSSL reason. */
static int handshake(SSL_CTX *sctx, SSL_CTX *cctx, const char *verify_host, int *version,
                     int *server_reason)
{
    SSL *srv = SSL_new(sctx), *cli = SSL_new(cctx);
    BIO *b1 = NULL, *b2 = NULL;
    int rc = -1;
    *server_reason = 0;
    if (!srv || !cli || !BIO_new_bio_pair(&b1, 0, &b2, 0))
        goto out;
    SSL_set_bio(srv, b1, b1);
    SSL_set_bio(cli, b2, b2);
    if (verify_host)
        SSL_set1_host(cli, verify_host);
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cli);
    bool cdone = false, sdone = false;
    for (int i = 0; i < 50 && !(cdone && sdone); i++) {
        if (!cdone) {
            int r = SSL_do_handshake(cli);
            int e = SSL_get_error(cli, r);
            if (r == 1)
                cdone = true;
            else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                ERR_clear_error();
                goto out;
            }
        }
        if (!sdone) {
            int r = SSL_do_handshake(srv);
            int e = SSL_get_error(srv, r);
            if (r == 1)
                sdone = true;
            else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                *server_reason = ERR_GET_REASON(ERR_peek_last_error());
                ERR_clear_error();
                goto out;
            }
        }
    }
    if (cdone && sdone) {
        *version = SSL_version(srv);
        rc = 0;
    }
out:
    SSL_free(srv);
    SSL_free(cli);
    return rc;
}

static SSL_CTX *client_ctx(int min, int max, bool verify)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(c, min);
    SSL_CTX_set_max_proto_version(c, max);
    if (max < TLS1_2_VERSION) {
        /* OpenSSL 3 refuses TLS 1.1 itself at the default security level. */
        SSL_CTX_set_security_level(c, 0);
        SSL_CTX_set_cipher_list(c, "DEFAULT:@SECLEVEL=0");
    }
    if (verify) {
        SSL_CTX_load_verify_locations(c, cert_path, NULL);
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    }
    return c;
}

TEST(self_signed_generated)
{
    struct settings s;
    init_settings(&s);
    char err[512] = "";
    struct tls_server *t = tls_server_new(&s, getuid(), getgid(), err, sizeof err);
    CHECK(t != NULL);
    if (!t) {
        fprintf(stderr, "err: %s\n", err);
        return;
    }
    struct stat st;
    CHECK_INT(stat(tls_dir, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0700);
    CHECK_INT(stat(key_path, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0600);
    CHECK_INT(stat(cert_path, &st), 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK(tls_server_ctx(t) != NULL);

    /* No temporary files left behind. */
    DIR *d = opendir(tls_dir);
    int entries = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        entries += e->d_name[0] != '.';
    if (d)
        closedir(d);
    CHECK_INT(entries, 2);
    tls_server_free(t);
}

TEST(certificate_contents)
{
    FILE *f = fopen(cert_path, "r");
    CHECK(f != NULL);
    if (!f)
        return;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    CHECK(x != NULL);
    if (!x)
        return;
    CHECK_INT(X509_get_version(x), 2);
    CHECK_INT(X509_check_host(x, HOST, 0, 0, NULL), 1);
    CHECK_INT(X509_check_host(x, "other.example.test", 0, 0, NULL), 0);
    char cn[128] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    CHECK_STR(cn, HOST);
    CHECK_INT(X509_check_ca(x), 0);
    CHECK(X509_get_extension_flags(x) & EXFLAG_XKUSAGE);
    CHECK(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
    CHECK(X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE);
    CHECK_INT(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
    int days = 0, secs = 0;
    CHECK_INT(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
    CHECK(days >= 3649 && days <= 3651);
    const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
    CHECK(serial->length >= 15 && serial->length <= 17);
    X509_free(x);
}

TEST(self_signed_reused)
{
    unsigned char before[EVP_MAX_MD_SIZE], after[EVP_MAX_MD_SIZE];
    int n = fingerprint(cert_path, before);
    CHECK(n > 0);
    struct settings s;
    init_settings(&s);
    char err[512] = "";
    struct tls_server *t = tls_server_new(&s, getuid(), getgid(), err, sizeof err);
    CHECK(t != NULL);
    CHECK_INT(fingerprint(cert_path, after), n);
    CHECK(n > 0 && memcmp(before, after, (size_t)n) == 0);
    tls_server_free(t);
}

TEST(self_signed_lone_cert_regenerated)
{
    unsigned char before[EVP_MAX_MD_SIZE], after[EVP_MAX_MD_SIZE];
    int n = fingerprint(cert_path, before);
    CHECK_INT(unlink(key_path), 0);
    struct settings s;
    init_settings(&s);
    char err[512] = "";
    struct tls_server *t = tls_server_new(&s, getuid(), getgid(), err, sizeof err);
    CHECK(t != NULL);
    CHECK(access(key_path, R_OK) == 0);
    CHECK_INT(fingerprint(cert_path, after), n);
    CHECK(n > 0 && memcmp(before, after, (size_t)n) != 0);
    tls_server_free(t);
}

TEST(self_signed_new_hostname_regenerated)
{
    struct settings s;
    init_settings(&s);
    s.hostname = "mx2.example.test";
    char err[512] = "";
    struct tls_server *t = tls_server_new(&s, getuid(), getgid(), err, sizeof err);
    CHECK(t != NULL);
    FILE *f = fopen(cert_path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    CHECK(x && X509_check_host(x, "mx2.example.test", 0, 0, NULL) == 1);
    X509_free(x);
    tls_server_free(t);
    /* Back to HOST for the following tests. */
    init_settings(&s);
    t = tls_server_new(&s, getuid(), getgid(), err, sizeof err);
    CHECK(t != NULL);
    tls_server_free(t);
}

TEST(handshake_versions)
{
    struct settings s;
    init_settings(&s);
    char err[512] = "";
    struct tls_server *t = tls_server_new(&s, getuid(), getgid(), err, sizeof err);
    CHECK(t != NULL);
    if (!t)
        return;
    int version = 0, reason = 0;

    SSL_CTX *c13 = client_ctx(TLS1_VERSION, TLS1_3_VERSION, true);
    CHECK_INT(handshake(tls_server_ctx(t), c13, HOST, &version, &reason), 0);
    CHECK_INT(version, TLS1_3_VERSION);
    /* Verification against the hostname must fail for another name. */
    CHECK_INT(handshake(tls_server_ctx(t), c13, "wrong.example.test", &version, &reason), -1);
    SSL_CTX_free(c13);

    SSL_CTX *c12 = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION, true);
    CHECK_INT(handshake(tls_server_ctx(t), c12, HOST, &version, &reason), 0);
    CHECK_INT(version, TLS1_2_VERSION);
    SSL_CTX_free(c12);

    SSL_CTX *c11 = client_ctx(TLS1_1_VERSION, TLS1_1_VERSION, false);
    CHECK_INT(handshake(tls_server_ctx(t), c11, NULL, &version, &reason), -1);
    CHECK_INT(reason, SSL_R_UNSUPPORTED_PROTOCOL);
    SSL_CTX_free(c11);

    SSL_CTX_up_ref(tls_server_ctx(t));
    SSL_CTX *cctx = tls_server_ctx(t);
    CHECK(SSL_CTX_get_options(cctx) & SSL_OP_NO_COMPRESSION);
    CHECK(SSL_CTX_get_options(cctx) & SSL_OP_NO_RENEGOTIATION);
    CHECK(SSL_CTX_get_options(cctx) & SSL_OP_CIPHER_SERVER_PREFERENCE);
    CHECK(!(SSL_CTX_get_options(cctx) & SSL_OP_NO_TICKET));
    CHECK(SSL_CTX_get_mode(cctx) & SSL_MODE_RELEASE_BUFFERS);
    CHECK(SSL_CTX_get_mode(cctx) & SSL_MODE_ENABLE_PARTIAL_WRITE);
    CHECK_INT(SSL_CTX_get_min_proto_version(cctx), TLS1_2_VERSION);
    SSL_CTX_free(cctx);
    tls_server_free(t);
}

static bool has_cipher(SSL_CTX *ctx, const char *name)
{
    STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(ctx);
    for (int i = 0; i < sk_SSL_CIPHER_num(sk); i++)
        if (strcmp(SSL_CIPHER_get_name(sk_SSL_CIPHER_value(sk, i)), name) == 0)
            return true;
    return false;
}

TEST(tls_level_ciphers)
{
    struct settings s;
    init_settings(&s);
    char err[512] = "";
    struct tls_server *t = tls_server_new(&s, getuid(), getgid(), err, sizeof err);
    CHECK(t != NULL);
    if (t) {
        CHECK(has_cipher(tls_server_ctx(t), "ECDHE-ECDSA-AES128-GCM-SHA256"));
        CHECK(!has_cipher(tls_server_ctx(t), "DHE-RSA-AES128-GCM-SHA256"));
        CHECK(!has_cipher(tls_server_ctx(t), "ECDHE-ECDSA-AES128-SHA"));
        tls_server_free(t);
    }
    s.tls_level = TLS_LEVEL_INTERMEDIATE;
    t = tls_server_new(&s, getuid(), getgid(), err, sizeof err);
    CHECK(t != NULL);
    if (t) {
        CHECK(has_cipher(tls_server_ctx(t), "DHE-RSA-AES128-GCM-SHA256"));
        CHECK(has_cipher(tls_server_ctx(t), "ECDHE-RSA-CHACHA20-POLY1305"));
        tls_server_free(t);
    }
}

TEST(manual_ok_and_errors)
{
    struct settings s;
    init_settings(&s);
    s.ssl_type = SSL_TYPE_MANUAL;
    s.ssl_cert_path = cert_path;
    s.ssl_key_path = key_path;
    char err[512] = "";
    struct tls_server *t = tls_server_new(&s, getuid(), getgid(), err, sizeof err);
    CHECK(t != NULL);
    tls_server_free(t);

    s.ssl_cert_path = "/nonexistent/x.pem";
    CHECK(tls_server_new(&s, getuid(), getgid(), err, sizeof err) == NULL);
    CHECK_STR(err, "SSL_CERT_PATH: cannot read /nonexistent/x.pem: No such file or directory");

    s.ssl_cert_path = cert_path;
    s.ssl_key_path = "/nonexistent/k.pem";
    CHECK(tls_server_new(&s, getuid(), getgid(), err, sizeof err) == NULL);
    CHECK_STR(err, "SSL_KEY_PATH: cannot read /nonexistent/k.pem: No such file or directory");

    s.ssl_key_path = NULL;
    CHECK(tls_server_new(&s, getuid(), getgid(), err, sizeof err) == NULL);
    CHECK_STR(err, "SSL_KEY_PATH: required when SSL_TYPE=manual");

    /* A key that belongs to another certificate. */
    char other_key[400];
    snprintf(other_key, sizeof other_key, "%s/other-key.pem", tmpdir);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    FILE *f = fopen(other_key, "w");
    CHECK(k && f && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL));
    if (f)
        fclose(f);
    EVP_PKEY_free(k);
    s.ssl_key_path = other_key;
    CHECK(tls_server_new(&s, getuid(), getgid(), err, sizeof err) == NULL);
    CHECK(strncmp(err, "SSL_KEY_PATH: ", 14) == 0);
    CHECK(strstr(err, other_key) != NULL);

    /* Not a certificate at all. */
    s.ssl_cert_path = other_key;
    CHECK(tls_server_new(&s, getuid(), getgid(), err, sizeof err) == NULL);
    CHECK(strncmp(err, "SSL_CERT_PATH: ", 15) == 0);
    unlink(other_key);
}

TEST(reload_swaps)
{
    struct settings s;
    init_settings(&s);
    s.ssl_type = SSL_TYPE_MANUAL;
    s.ssl_cert_path = strdup(cert_path);
    s.ssl_key_path = strdup(key_path);
    char err[512] = "";
    struct tls_server *t = tls_server_new(&s, getuid(), getgid(), err, sizeof err);
    /* The settings may go away after tls_server_new. */
    free(s.ssl_cert_path);
    free(s.ssl_key_path);
    CHECK(t != NULL);
    if (!t)
        return;
    SSL_CTX *old = tls_server_ctx(t);
    SSL_CTX_up_ref(old); /* as an established connection would */
    CHECK_INT(tls_server_reload(t, err, sizeof err), 0);
    SSL_CTX *cur = tls_server_ctx(t);
    CHECK(cur != NULL && cur != old);
    int version = 0, reason = 0;
    SSL_CTX *c = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION, true);
    CHECK_INT(handshake(old, c, HOST, &version, &reason), 0);
    CHECK_INT(handshake(cur, c, HOST, &version, &reason), 0);
    SSL_CTX_free(old);

    /* A failed reload keeps the current context. */
    char moved[400];
    snprintf(moved, sizeof moved, "%s.moved", key_path);
    CHECK_INT(rename(key_path, moved), 0);
    CHECK_INT(tls_server_reload(t, err, sizeof err), -1);
    CHECK(strstr(err, "SSL_KEY_PATH: cannot read ") != NULL);
    CHECK(tls_server_ctx(t) == cur);
    CHECK_INT(handshake(tls_server_ctx(t), c, HOST, &version, &reason), 0);
    CHECK_INT(rename(moved, key_path), 0);
    SSL_CTX_free(c);
    tls_server_free(t);
}

TEST(letsencrypt_missing)
{
    struct settings s;
    init_settings(&s);
    s.ssl_type = SSL_TYPE_LETSENCRYPT;
    s.hostname = "mail.posthorn-test.invalid";
    char err[512] = "";
    CHECK(tls_server_new(&s, getuid(), getgid(), err, sizeof err) == NULL);
    CHECK_STR(err, "SSL_TYPE=letsencrypt: no certificate for mail.posthorn-test.invalid: "
                   "/etc/letsencrypt/live/mail.posthorn-test.invalid/fullchain.pem and "
                   "/etc/letsencrypt/live/posthorn-test.invalid/fullchain.pem not found");
    CHECK(strstr(err, "/etc/letsencrypt/live/posthorn-test.invalid/fullchain.pem") != NULL);
}

TEST(state_dir_missing)
{
    struct settings s;
    init_settings(&s);
    s.state_dir = "/nonexistent/state";
    char err[512] = "";
    CHECK(tls_server_new(&s, getuid(), getgid(), err, sizeof err) == NULL);
    CHECK_STR(err, "STATE_DIR: cannot create /nonexistent/state/tls: No such file or directory");
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(state_dir, sizeof state_dir, "%s/state", tmpdir);
    snprintf(tls_dir, sizeof tls_dir, "%s/tls", state_dir);
    snprintf(cert_path, sizeof cert_path, "%s/cert.pem", tls_dir);
    snprintf(key_path, sizeof key_path, "%s/key.pem", tls_dir);
    if (mkdir(state_dir, 0750) < 0) {
        perror("mkdir");
        return 1;
    }
    RUN(self_signed_generated);
    RUN(certificate_contents);
    RUN(self_signed_reused);
    RUN(self_signed_lone_cert_regenerated);
    RUN(self_signed_new_hostname_regenerated);
    RUN(handshake_versions);
    RUN(tls_level_ciphers);
    RUN(manual_ok_and_errors);
    RUN(reload_swaps);
    RUN(letsencrypt_missing);
    RUN(state_dir_missing);
    unlink(cert_path);
    unlink(key_path);
    rmdir(tls_dir);
    rmdir(state_dir);
    rmdir(tmpdir);
    return test_summary();
}
