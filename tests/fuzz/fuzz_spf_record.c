/* libFuzzer target: the strict SPF record parser and the rewriter for
 * libspf2 on arbitrary records. Beyond not crashing: a record the parser
 * accepts is rewritten for both address families into a record that the
 * parser accepts again, that libspf2 compiles (it refuses "/0", so none
 * is left), and whose rewrite is a fixed point. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <spf2/spf.h>

#include "spf.h"
#include "spf_record.h"

static SPF_server_t *server;

static void check_rewrite(const char *rec, size_t len, int family)
{
    size_t cap = SPF_REWRITE_MAX(len);
    char *out = malloc(cap), *again = malloc(cap);
    if (!out || !again)
        abort();
    long n = spf_record_rewrite(rec, len, family, out, cap);
    if (n < 0 || (size_t)n != strlen(out))
        abort();
    char why[160];
    /* Rewriting may grow a record past the limit on fetched records. */
    if (n <= SPF_RECORD_MAX) {
        if (spf_record_check(out, (size_t)n, why, sizeof why) != 0) {
            fprintf(stderr, "rewrite of \"%.*s\" is invalid: \"%s\": %s\n", (int)len, rec,
                    out, why);
            abort();
        }
        long m = spf_record_rewrite(out, (size_t)n, family, again, cap);
        if (m != n || strcmp(out, again) != 0)
            abort();
    }
    SPF_response_t *resp = SPF_response_new(NULL);
    SPF_record_t *compiled = NULL;
    SPF_errcode_t err = SPF_record_compile(server, resp, &compiled, out);
    /* Known gaps, permerror in spf_check: far too many terms, and the
     * macro delimiters "/" and "," (valid in RFC 7208 7.1), which libspf2
     * refuses. */
    if (err != SPF_E_SUCCESS && err != SPF_E_BIG_MECH && err != SPF_E_BIG_MOD
        && err != SPF_E_BIG_STRING && err != SPF_E_INVALID_DELIM) {
        fprintf(stderr, "libspf2 refuses \"%s\": %s\n", out, SPF_strerror(err));
        abort();
    }
    if (compiled)
        SPF_record_free(compiled);
    SPF_response_free(resp);
    free(out);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!server) {
        spf_init();
        server = SPF_server_new(SPF_DNS_ZONE, 0);
    }
    char *rec = malloc(size + 1);
    if (!rec)
        return 0;
    memcpy(rec, data, size);
    rec[size] = '\0';
    char why[160];
    if (memchr(data, '\0', size) == NULL && spf_record_check(rec, size, why, sizeof why) == 0) {
        check_rewrite(rec, size, AF_INET);
        check_rewrite(rec, size, AF_INET6);
    }
    free(rec);
    return 0;
}
